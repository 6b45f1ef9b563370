"""Where a run's model and tensors live: a ``device`` setting resolved to a usable ``torch.device``.

Why apart from ``cppo.config``: the config checks only the setting's syntax (``cpu``, ``cuda``,
``cuda:N``, ``auto``; :func:`cppo.config.check_device`), so that validating a profile needs neither
torch nor a GPU. Whether that device exists is asked here, by the trainers and their commands, before
any work (model loading, run folder), so a CPU-only machine fails fast and clearly.
"""

from __future__ import annotations

import torch

from cppo.config import ConfigError, check_device


def resolve_device(spec: str, where: str = "rl.device") -> torch.device:
    """The ``torch.device`` of a device setting; raises ConfigError when it names CUDA and none is usable."""
    check_device(spec, where)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}={spec!r} but CUDA is not available here (torch {torch.__version__}, "
                              f"CUDA build: {torch.version.cuda or 'none'}); use cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{where}={spec!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(spec)
