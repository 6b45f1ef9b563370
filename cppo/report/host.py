"""The host a report was made on: CPU, torch's CPU kernel level and the numeric stack's versions.

Why in summary.md: a grid re-run on another machine uses other float kernels (AVX2 against AVX-512,
another BLAS path), so its numbers differ in the last bits and, through sampling, in every run. The
line says which host and stack a committed summary comes from, and what may be expected elsewhere.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path


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
    info = {"host/cpu": cpu_model(), "host/torch_cpu_capability": capability}
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

    return (f"Host: {provenance.get('host/cpu', 'unknown CPU')}, torch CPU capability "
            f"{provenance.get('host/torch_cpu_capability', 'unknown')}; torch {v('torch')}, transformers "
            f"{v('transformers')}, numpy {v('numpy')}. Results are bit-for-bit reproducible on one host; across "
            "hosts (other float kernels) they agree statistically, not bit for bit.")
