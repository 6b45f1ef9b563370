"""Facts about a finished run folder, for shell rules: its MLflow run id and final step.

`python run_info.py RUN_DIR --mlflow-args` prints `--mlflow-run-id ID --step N` (or nothing when
the run was trained without MLflow), ready to splice into a `cppo eval` command line;
`--mlflow-id-args` prints only `--mlflow-run-id ID` (for `cppo eval --run`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def final_step(run_dir: Path) -> int:
    from cppo.train import checkpoint  # imports torch (~1 s): only when the step is asked for

    try:
        return checkpoint.final_step(run_dir)
    except ValueError as err:
        raise SystemExit(f"run_info: {err}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--mlflow-args", action="store_true")
    p.add_argument("--mlflow-id-args", action="store_true",
                   help="print only `--mlflow-run-id ID` (for `cppo eval --run`, which finds every step itself)")
    args = p.parse_args()
    id_file = args.run_dir / "mlflow_run_id"
    if args.mlflow_id_args:
        if id_file.is_file() and id_file.read_text().strip():
            print(f"--mlflow-run-id {id_file.read_text().strip()}")
    elif args.mlflow_args:
        if id_file.is_file() and id_file.read_text().strip():
            print(f"--mlflow-run-id {id_file.read_text().strip()} --step {final_step(args.run_dir)}")
    else:
        print(json.dumps({"final_step": final_step(args.run_dir),
                          "mlflow_run_id": id_file.read_text().strip() if id_file.is_file() else None}))


if __name__ == "__main__":
    main()
