"""Split one `cppo eval` result over several benchmarks into `<dir>/<benchmark>.json` files.

Why: one evaluation process per run (model loaded once, one interpreter start) is much cheaper
than one per benchmark, while the run folder layout keeps one file per benchmark (docs/contracts.md §Runs).
Each file holds the shared top-level fields (model, backend, settings, provenance, mlflow) and
only its own benchmark under `benchmarks`. The split itself is `evals.cli.split_by_benchmark`, which
`cppo train --eval` (grouped runs, evaluated in the training process) calls too.

    python split_eval.py RESULT.json OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from evals.cli import split_by_benchmark


def split(result_path: Path, out_dir: Path) -> list[Path]:
    try:
        return split_by_benchmark(json.loads(result_path.read_text()), out_dir)
    except ValueError as err:
        raise SystemExit(f"split_eval: {result_path}: {err}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for p in split(Path(sys.argv[1]), Path(sys.argv[2])):
        print(p)
