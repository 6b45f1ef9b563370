"""The evaluation protocol's defaults, in one place.

Every consumer reads them from here: ``cppo eval`` (through ``evals.harness.EvalSettings``), the
profile's typed ``eval`` section (``cppo.config.EvalConfig``, which also feeds verl's validation
settings), and the pipeline, which passes only the keys a profile sets and so falls back to these.
They are the paper's protocol: avg@16 at temperature 0.7, top-p 0.95. The generation budget has no
global default: each benchmark carries its own (``evals.registry.Benchmark.max_tokens``).

Kept free of imports so that ``cppo.config`` can read it without loading the evaluation stack.
"""

N = 16
"""responses sampled per problem"""
TEMPERATURE = 0.7
"""sampling temperature (0 = greedy)"""
TOP_P = 0.95
"""nucleus mass"""
