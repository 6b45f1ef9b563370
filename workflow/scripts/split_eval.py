"""Split one `cppo eval` result over several benchmarks into `<dir>/<benchmark>.json` files.

Why: one evaluation process per run (model loaded once, one interpreter start) is much cheaper
than one per benchmark, while the run folder layout keeps one file per benchmark (docs/contracts.md §Runs).
Each file holds the shared top-level fields (model, backend, settings, provenance, mlflow) and
only its own benchmark under `benchmarks`.

    python split_eval.py RESULT.json OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def split(result_path: Path, out_dir: Path) -> list[Path]:
    result = json.loads(result_path.read_text())
    benches = result.get("benchmarks")
    if not isinstance(benches, dict) or not benches:
        raise SystemExit(f"split_eval: {result_path} has no `benchmarks` mapping")
    shared = {k: v for k, v in result.items() if k != "benchmarks"}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, res in benches.items():
        path = out_dir / f"{name}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**shared, "benchmarks": {name: res}}, indent=1, ensure_ascii=False))
        tmp.replace(path)  # atomic: the pipeline treats each file as a job output
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for p in split(Path(sys.argv[1]), Path(sys.argv[2])):
        print(p)
