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


def _step_folders(root: Path, marker: str) -> list[tuple[int, Path]]:
    """(n, root/step_<n>) of the folders holding `marker` (written inside before the folder is renamed
    into place, so its presence means complete), oldest first."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = re.fullmatch(r"step_(\d+)", p.name)
        if m and (p / marker).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def step_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints, oldest first."""
    return _step_folders(ckpt_root, STATE_FILE)


def _write_step_dir(root: Path, step: int, model, tokenizer, state: dict | None) -> Path:
    """``root/step_<step>/`` (HF model + tokenizer, + trainer state when given), renamed into place complete."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.tmp-", dir=root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
        final = root / f"step_{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for leftover in root.glob(".step_*.tmp-*"):  # from a killed earlier attempt
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def save_step(ckpt_root: Path, step: int, model, tokenizer, state: dict, keep: int) -> Path:
    """Write ``checkpoints/step_<step>/`` (HF model + trainer state) atomically; prune old ones."""
    final = _write_step_dir(ckpt_root, step, model, tokenizer, state)
    for _, old in step_dirs(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_weights(root: Path, step: int, model, tokenizer) -> Path:
    """Write ``steps/step_<step>/`` (HF model + tokenizer only, never pruned): the weights of an evaluated
    step (``eval.every``), kept so the pipeline can score every checkpoint in [0, T_stop]."""
    return _write_step_dir(root, step, model, tokenizer, None)


def weight_steps(root: Path) -> list[tuple[int, Path]]:
    """Complete ``steps/step_<n>/`` folders of :func:`save_weights` (or verl's harvested ones), oldest first."""
    return _step_folders(root, "config.json")


def load_state(step_dir: Path) -> dict:
    """The trainer state of a step checkpoint, on the CPU whichever device wrote it (the trainer places it)."""
    return torch.load(step_dir / STATE_FILE, weights_only=False, map_location="cpu")


def final_step(run_dir: Path) -> int:
    """The training step of a run folder's final checkpoint: from the `done` marker (JSON with "step"),
    else the last step of `metrics.jsonl`, else verl's checkpoint tracker. ValueError when none tells."""
    run_dir = Path(run_dir)
    done = run_dir / "done"
    if done.is_file():
        try:
            state = json.loads(done.read_text() or "{}")
        except json.JSONDecodeError:
            state = {}
        if isinstance(state, dict) and isinstance(state.get("step"), int):
            return state["step"]
    last = None
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                last = row["step"]
    latest = run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"  # verl's checkpoints
    if last is None and latest.is_file() and latest.read_text().strip().isdigit():
        last = int(latest.read_text().strip())
    if last is None:
        raise ValueError(f"cannot tell the final step of {run_dir} (no done marker, metrics.jsonl or verl tracker)")
    return last
