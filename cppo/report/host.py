"""The host a report was made on: CPU, torch's CPU kernel level and the numeric stack's versions.

Why in summary.md: on the native numeric path a grid re-run on another machine uses other float
kernels (AVX2 against AVX-512, another BLAS path), so its numbers differ in the last bits and, through
sampling, in every run. The pinned path (cppo/numerics.py, the default) fixes the kernels. The line
says which host, stack and numeric path a committed summary comes from, and what may be expected
elsewhere.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from cppo.numerics import describe


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_provenance() -> dict[str, str]:
    """``host/cpu``, ``host/torch_cpu_capability`` and ``version/{torch,transformers,numpy}``."""
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    except ImportError:
        capability = "unknown"
    from cppo import numerics

    info = {"host/cpu": cpu_model(), "host/torch_cpu_capability": capability,
            "host/numerics": numerics.effective()["numerics/path"]}
    for dist in ("torch", "transformers", "numpy"):
        try:
            info[f"version/{dist}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[f"version/{dist}"] = "absent"
    return info


def host_line(provenance: dict) -> str:
    """One paragraph of summary.md: the host, the stack, and what reproduces where."""
    def v(dist):
        return provenance.get(f"version/{dist}", "unknown")

    path = provenance.get("host/numerics", "unknown")
    if path == "pinned":
        where = (f"Numeric path: {describe('pinned')}: any x86-64 host with AVX2, Intel or AMD, "
                 "gets these numbers bit for bit with the same locked stack and thread counts.")
    else:
        where = (f"Numeric path: {path}. Results are bit-for-bit reproducible on one host; across hosts "
                 "(other float kernels) they agree statistically, not bit for bit.")
    return (f"Host: {provenance.get('host/cpu', 'unknown CPU')}, torch CPU capability "
            f"{provenance.get('host/torch_cpu_capability', 'unknown')}; torch {v('torch')}, transformers "
            f"{v('transformers')}, numpy {v('numpy')}. {where}")
