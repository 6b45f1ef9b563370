"""Evaluation suite: benchmark registry, math-verify scoring, avg@k / pass@k / maj@k, lm-eval tasks.

Entry points: ``evals.scoring.is_correct`` (one answer), ``evals.scoring.score_many`` (many, in
worker processes with a hard time limit), ``evals.registry.BENCHMARKS`` / ``get_benchmark`` and
``cppo eval`` (``evals/cli.py``).
"""
