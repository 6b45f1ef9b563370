"""Crash-safe files for the trainer: atomic writes, RNG state capture, step checkpoints.

A run may be SIGKILLed at any instruction. Every file the trainer leaves behind is therefore
written to a temporary name and renamed into place (``os.replace`` is atomic on POSIX), and a step
checkpoint is a folder renamed into place only once complete. Resuming picks the newest complete
``checkpoints/step_<n>/`` and restores model, optimizer, every random source and the counters, so
the resumed run continues bit-for-bit like an uninterrupted one (on CPU).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def rng_state(python_rngs: dict[str, random.Random], generators: dict[str, torch.Generator],
              cuda: bool = False) -> dict:
    """Capture the global torch/numpy/python RNGs (and CUDA's, when ``cuda``) plus the trainer's own generators."""
    st = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "python_rngs": {k: r.getstate() for k, r in python_rngs.items()},
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if cuda:
        st["cuda"] = torch.cuda.get_rng_state_all()  # one CPU ByteTensor per visible device
    return st


def set_rng_state(state: dict, python_rngs: dict[str, random.Random], generators: dict[str, torch.Generator],
                  cuda: bool = False) -> None:
    """Restore :func:`rng_state`. CUDA's RNGs are restored when ``cuda`` and the checkpoint has them (a
    CPU checkpoint resumed on a GPU keeps the freshly seeded CUDA RNG; a GPU one resumed on CPU ignores it)."""
    torch.set_rng_state(state["torch"])
    if cuda and "cuda" in state:
        saved = state["cuda"]
        for i in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(saved[i], i)
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for k, r in python_rngs.items():
        r.setstate(state["python_rngs"][k])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints, oldest first."""
    if not ckpt_root.is_dir():
        return []
    out = []
    for p in ckpt_root.iterdir():
        m = re.fullmatch(r"step_(\d+)", p.name)
        if m and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def save_step(ckpt_root: Path, step: int, model, tokenizer, state: dict, keep: int) -> Path:
    """Write ``checkpoints/step_<step>/`` (HF model + trainer state) atomically; prune old ones."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.tmp-", dir=ckpt_root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
        final = ckpt_root / f"step_{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for _, old in step_dirs(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in ckpt_root.glob(".step_*.tmp-*"):  # from a killed earlier attempt
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def load_state(step_dir: Path) -> dict:
    """The trainer state of a step checkpoint, on the CPU whichever device wrote it (the trainer places it)."""
    return torch.load(step_dir / STATE_FILE, weights_only=False, map_location="cpu")
