"""Where benchmark and training data live, and the one error raised when a benchmark has none.

The data directory is a flat folder of ``<name>.jsonl`` files, one JSON object per line with at
least ``id``, ``problem``, ``answer`` (and ``source``; ``solution`` where the source has one); the
layout and the file names are in ``docs/contracts.md`` §Data. ``cppo data download DIR`` writes
such a folder from the Hugging Face hub.

Lookup order, first hit wins:
  1. the environment variable ``CPPO_DATA_DIR``;
  2. the config's ``data_dir`` (a mapping with that key, or an object with that attribute);
  3. ``None``: callers load the benchmark's Hugging Face dataset instead (needs the network), and
     raise ``DataNotFound`` (one line: the file looked for, ``CPPO_DATA_DIR``, the hub dataset)
     when that fails too.

There is deliberately no fallback to a folder beside the checkout: a run reads exactly the data
it was pointed at, or says that it has none.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DATA_ENV = "CPPO_DATA_DIR"
"""environment variable naming the data directory (wins over a profile's ``data_dir``)"""
REQUIRED_FIELDS = ("id", "problem", "answer")
"""fields every row of a data file must have"""


class DataNotFound(FileNotFoundError):
    """A benchmark has no local file and its hub dataset cannot be loaded; the message is one line."""


def data_dir(cfg: Any = None) -> Path | None:
    """The folder of ``<benchmark>.jsonl`` files, or None when there is none (hub fallback)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    cfg_dir = cfg.get("data_dir") if isinstance(cfg, dict) else getattr(cfg, "data_dir", None)
    if cfg_dir:
        return Path(cfg_dir).expanduser()
    return None


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


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write rows as JSONL, atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def load_benchmark_file(name: str, cfg: Any = None, limit: int | None = None) -> list[dict] | None:
    """Rows of ``<data_dir>/<name>.jsonl``, or None when the file is absent (hub fallback)."""
    d = data_dir(cfg)
    if d is None or not (d / f"{name}.jsonl").is_file():
        return None
    rows = read_jsonl(d / f"{name}.jsonl", limit=limit)
    for i, row in enumerate(rows):
        missing = set(REQUIRED_FIELDS) - row.keys()
        if missing:
            raise ValueError(f"{d / (name + '.jsonl')} row {i}: missing field(s) {sorted(missing)}")
    return rows


def hub_offline() -> bool:
    """True when the environment forbids Hugging Face downloads (then nothing may wait on the network)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def missing_message(stem: str, directory: Path | None, hub_id: str | None, reason: str) -> str:
    """The one-line explanation of a benchmark file that is neither local nor loadable from the hub."""
    where = (f"{directory / (stem + '.jsonl')} does not exist" if directory is not None
             else f"no data directory ({DATA_ENV} unset, no data_dir in the profile) to look for {stem}.jsonl in")
    hub = f"the hub dataset {hub_id} {reason}" if hub_id else f"{stem} has no hub source"
    return (f"{stem}: {where}, and {hub}; set {DATA_ENV} to a folder holding {stem}.jsonl "
            f"(`cppo data download DIR` writes one)")
