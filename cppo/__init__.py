"""cppo-bench: trust-region rules for RL on language models (CPPO and its baselines), a trainer,
an evaluation suite and a pipeline that reproduces the CPPO paper's comparisons.

The rule contract lives in :mod:`cppo.rules`; see the README and docs/.
"""

__version__ = "0.1.0"
