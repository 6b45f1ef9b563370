"""Where benchmark and training data live (Contract 3 of ARCHITECTURE.md).

Resolution order, first hit wins:
  1. the environment variable ``CPPO_DATA_DIR``;
  2. the config's ``data_dir`` (a mapping with that key, or an object with that attribute);
  3. ``<repo>/../shared/data`` when that folder exists (the layout of a CI checkout);
  4. ``None``: callers fall back to the benchmark's Hugging Face dataset (needs a network).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir(cfg: Any = None) -> Path | None:
    """The folder of ``<benchmark>.jsonl`` files, or None when there is none (hub fallback)."""
    env = os.environ.get("CPPO_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cfg_dir = cfg.get("data_dir") if isinstance(cfg, dict) else getattr(cfg, "data_dir", None)
    if cfg_dir:
        return Path(cfg_dir).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict]:
    """Rows of a JSONL file (blank lines skipped); ``limit`` keeps the first rows."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def load_benchmark_file(name: str, cfg: Any = None, limit: int | None = None) -> list[dict] | None:
    """Rows of ``<data_dir>/<name>.jsonl``, or None when the file is absent (hub fallback)."""
    d = data_dir(cfg)
    if d is None or not (d / f"{name}.jsonl").is_file():
        return None
    rows = read_jsonl(d / f"{name}.jsonl", limit=limit)
    for i, row in enumerate(rows):
        missing = {"id", "problem", "answer"} - row.keys()
        if missing:
            raise ValueError(f"{d / (name + '.jsonl')} row {i}: missing field(s) {sorted(missing)}")
    return rows
