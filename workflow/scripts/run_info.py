"""Facts about a finished run folder, for shell rules: its MLflow run id and final step.

`python run_info.py RUN_DIR --mlflow-args` prints `--mlflow-run-id ID --step N` (or nothing when
the run was trained without MLflow), ready to splice into a `cppo eval` command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def final_step(run_dir: Path) -> int:
    """The step of the final checkpoint: from the `done` marker (JSON with "step"), a `final/` state
    file, or else the last step of `metrics.jsonl`."""
    done = run_dir / "done"
    if done.is_file():
        try:
            state = json.loads(done.read_text() or "{}")
        except json.JSONDecodeError:
            state = {}
        if isinstance(state, dict) and isinstance(state.get("step"), int):
            return state["step"]
    for name in ("trainer_state.json", "train_state.json", "state.json"):
        f = run_dir / "final" / name
        if f.is_file():
            state = json.loads(f.read_text())
            for key in ("step", "global_step"):
                if isinstance(state.get(key), int):
                    return state[key]
    last = None
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a killed run
                if isinstance(row.get("step"), int):
                    last = row["step"]
    latest = run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"  # verl's checkpoints
    if last is None and latest.is_file() and latest.read_text().strip().isdigit():
        last = int(latest.read_text().strip())
    if last is None:
        raise SystemExit(f"run_info: cannot tell the final step of {run_dir}")
    return last


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--mlflow-args", action="store_true")
    args = p.parse_args()
    id_file = args.run_dir / "mlflow_run_id"
    if args.mlflow_args:
        if id_file.is_file() and id_file.read_text().strip():
            print(f"--mlflow-run-id {id_file.read_text().strip()} --step {final_step(args.run_dir)}")
    else:
        print(json.dumps({"final_step": final_step(args.run_dir),
                          "mlflow_run_id": id_file.read_text().strip() if id_file.is_file() else None}))


if __name__ == "__main__":
    main()
