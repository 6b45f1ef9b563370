"""cppo-bench: trust-region rules for RL on language models (CPPO and its baselines), a trainer,
an evaluation suite and a pipeline that reproduces the CPPO paper's comparisons.

The rule contract lives in :mod:`cppo.rules`; see the README and docs/.
"""

__version__ = "0.1.0"

# The pinned numeric path (cppo/numerics.py): set before torch, MKL or numpy initialise, which every
# `cppo` command imports only after this package. A bad CPPO_NUMERICS is reported by the CLI.
from cppo import numerics as _numerics

try:
    _numerics.pin()
except _numerics.NumericsError:
    pass
