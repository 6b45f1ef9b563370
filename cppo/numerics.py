"""The pinned numeric path: the same float kernels, hence the same bits, on every x86-64 host with AVX2.

Why: torch, MKL and numpy pick their float kernels at run time from the CPU they find. An AVX-512
host sums in another order than an AVX2 host, the last bits of a matmul differ, and through sampling
and early stopping every run of a grid differs: the same command gave another SFT length, another
collapse rate and another verdict on two hosts (docs/pipeline.md#the-numeric-path). Each library has
a switch that fixes its kernels; :data:`PINNED_ENV` sets all of them, before torch, MKL or numpy
initialise, in every process the CLI and the pipeline start (``import cppo`` calls :func:`pin`, and
every ``cppo`` command imports the package before it imports torch).

Each setting, and why it is needed:

- ``ATEN_CPU_CAPABILITY=avx2``: torch's own kernels (elementwise math through sleef, reductions,
  softmax, norms, attention) use their AVX2 build, never the AVX-512 one; the default build
  (``default``) would be a third path.
- ``MKL_CBWR=COMPATIBLE,STRICT``: MKL's matmuls take its conditional-numerical-reproducibility
  branch that Intel and AMD CPUs both honour. On an AMD host MKL reports ``CNR:AUTO`` for
  ``MKL_CBWR=AVX2`` (and AVX, SSE4_2): only ``COMPATIBLE`` is a pin there. ``STRICT``: results do
  not depend on the alignment of the arrays in memory.
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN (bf16 matmuls, mkldnn ops) JITs no AVX-512 or AMX kernels.
- ``NPY_DISABLE_CPU_FEATURES``: numpy's float loops (the report's statistics) skip their AVX-512
  variants; on a host without them this is a no-op.

What no setting reaches: a CPU without AVX2 (torch then falls back to its default kernels), another
architecture (ARM's NEON/SVE kernels), another build or version of torch, MKL or numpy (the lock pins
them), and a different thread count (the profiles fix it: one thread per job). A GPU is another path.

Opt-out: ``CPPO_NUMERICS=native`` leaves every library to pick its fastest kernels (and keeps any of
these variables the caller set). Results are then bit-for-bit reproducible on one host only.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

#: The variable that chooses the path: ``pinned`` (the default) or ``native``.
SWITCH = "CPPO_NUMERICS"
PATHS = ("pinned", "native")

#: What the pinned path sets; one line each in the module docstring and in docs/pipeline.md.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}

#: The name the provenance gives the pinned path (summary.md, MLflow params).
PINNED_NAME = "pinned (ATen AVX2, MKL CNR COMPATIBLE+STRICT, oneDNN AVX2, numpy without AVX-512)"


class NumericsError(ValueError):
    """A bad ``CPPO_NUMERICS`` value (one line for the user)."""


def requested(environ: MutableMapping[str, str] = os.environ) -> str:
    """The path ``CPPO_NUMERICS`` asks for (``pinned`` when unset)."""
    value = environ.get(SWITCH, "").strip().lower() or "pinned"
    if value not in PATHS:
        raise NumericsError(f"{SWITCH}={environ.get(SWITCH)!r}: choose one of {', '.join(PATHS)}")
    return value


def pin(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set :data:`PINNED_ENV` in ``environ`` unless ``CPPO_NUMERICS=native``; returns the path.

    The pinned values override whatever the caller set: a pinned run is the same on every host. The
    variables are read when torch, MKL and numpy initialise, so this must run before they are
    imported; :func:`effective` says afterwards whether it did.
    """
    path = requested(environ)
    if path == "pinned":
        environ.update(PINNED_ENV)
    return path


def effective() -> dict[str, str]:
    """What this process actually runs on: the requested path, torch's kernel level, and whether
    the pin took effect (it cannot when torch or numpy were imported before :func:`pin`)."""
    path = requested()
    info = {"numerics/path": path}
    if "torch" in sys.modules:
        import torch

        cap = str(torch.backends.cpu.get_cpu_capability())
        info["numerics/torch_cpu_capability"] = cap
        if path == "pinned" and cap != "AVX2":
            info["numerics/path"] = f"pinned requested, not in effect (torch kernels {cap})"
    for var in PINNED_ENV:
        info[f"numerics/{var}"] = os.environ.get(var, "")
    return info


def describe(path: str) -> str:
    """One phrase for summary.md and the docs."""
    return PINNED_NAME if path == "pinned" else "native (each library's fastest kernels for this CPU)"
