"""`cppo mlflow-init CONFIG`: create a profile's MLflow experiment and every parent run of its grid.

Why a separate step: SQLite serialises writers, and get-or-create from many jobs at once is where
runs get duplicated. The pipeline runs this once before any training job starts, so jobs only
look their parent up (`cppo.tracking.ensure_parent` stays idempotent if one is missing).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="profile YAML (e.g. config/tiny.yaml)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted, value parsed as YAML; quote a part that contains a dot: "
                        "'scales.\"1.7b\".rl.steps=5'); repeatable")
    parser.add_argument("--out", default=None,
                        help="write the parent run ids as JSON here (the pipeline's marker file)")


def main(args) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from cppo import tracking
    from cppo.report.grid import load_config, parents

    started_at = time.time()  # the pipeline's first job: the report measures wall time from here
    try:
        cfg = load_config(args.config, args.sets)
        profile = cfg.get("profile")
        if not profile:
            raise ValueError(f"{args.config}: missing `profile:`")
        cells = parents(cfg)
    except ValueError as err:
        print(f"cppo mlflow-init: {err}", file=sys.stderr)
        return 2
    tracking.use_results_dir(cfg.get("results_dir"))
    ids = {}
    for setting, method, scale, rule in cells:
        ids[f"{setting}/{method}/{scale}"] = tracking.ensure_parent(profile, setting, method, scale, rule)
    print(f"MLflow {tracking.tracking_uri()}: experiment {profile!r}, {len(ids)} parent runs")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"tracking_uri": tracking.tracking_uri(), "profile": profile,
                                   "started_at": started_at, "parents": ids}, indent=1) + "\n")
    return 0
