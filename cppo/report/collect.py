"""Gather what the report needs for every run of a grid: metric histories, evaluations, profiles.

Sources, in order: the MLflow child run of the cell (found by its tags, docs/contracts.md §MLflow), then the run
folder (`metrics.jsonl`, `eval/<benchmark>.json`, `eval/steps/step_<n>.json`, `position_profile.json`) for whatever MLflow
lacks, e.g. runs trained with `--no-mlflow` or a deleted store. A cell with neither is reported
as missing rather than silently dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cppo.report.grid import Cell


@dataclass
class RunRecord:
    """Everything known about one grid cell's run."""

    cell: Cell
    run_dir: Path
    run_id: str | None = None
    """MLflow child run id (None when the run is only on disk)."""
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """metric key -> [(step, value)] sorted by step."""
    evals: dict[str, dict[str, float]] = field(default_factory=dict)
    """benchmark -> {metric: value} of the final evaluation (`cppo eval`)."""
    position_profile: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    """The trainer's `done` marker (final step, stop reason, counters); None if unfinished."""
    start_ms: int | None = None
    end_ms: int | None = None
    git_commit: str | None = None
    """The commit the run was trained at (its MLflow tag), when known."""
    source: str = "missing"
    """mlflow | files | missing"""

    @property
    def finished(self) -> bool:
        return self.done is not None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_metrics_jsonl(path: Path, keys: set[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl (one JSON object per step, with "step") -> {key: [(step, value)]}."""
    out: dict[str, dict[int, float]] = {}
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        step = row.get("step")
        if not isinstance(step, int):
            continue
        for k, v in row.items():
            if k == "step" or (keys is not None and k not in keys):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k, {})[step] = float(v)
    return {k: sorted(d.items()) for k, d in out.items()}


def read_step_evals(run_dir: Path, benchmarks: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
    """`cppo eval --run`'s per-step files (`<run>/eval/steps/step_<n>.json`) -> {eval/<b>/<metric>: [(n, v)]}."""
    out: dict[str, list[tuple[int, float]]] = {}
    folder = run_dir / "eval" / "steps"
    if not folder.is_dir():
        return out
    for p in folder.glob("step_*.json"):
        try:
            step = int(p.stem.split("_", 1)[1])
        except ValueError:
            continue
        result = _read_json(p)
        for b in benchmarks:
            v = eval_metric(result, b, metric)
            if v is not None:
                out.setdefault(f"eval/{b}/{metric}", []).append((step, v))
    return {k: sorted(h) for k, h in out.items()}


def eval_metric(result: Any, benchmark: str, metric: str) -> float | None:
    """Find `metric` of `benchmark` in an evaluation JSON of unknown nesting.

    Accepts {metric: v}, {"metrics": {metric: v}}, {benchmark: {metric: v}} and
    {"results"/"benchmarks": {benchmark: {...}}}.
    """
    if not isinstance(result, dict):
        return None
    for container in (result, result.get("metrics"), result.get(benchmark),
                      (result.get("results") or {}).get(benchmark) if isinstance(result.get("results"), dict) else None,
                      (result.get("benchmarks") or {}).get(benchmark) if isinstance(result.get("benchmarks"), dict) else None):
        if isinstance(container, dict):
            v = container.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            inner = container.get("metrics")
            if isinstance(inner, dict) and isinstance(inner.get(metric), (int, float)):
                return float(inner[metric])
    return None


def collect(cfg: dict, cells: list[Cell], metric_keys: set[str], root: Path | str = "results",
            use_mlflow: bool = True) -> list[RunRecord]:
    """A RunRecord per cell, histories restricted to `metric_keys` (plus eval metrics)."""
    from cppo import tracking

    profile = cfg["profile"]
    e = cfg.get("eval") or {}
    benchmarks = [str(b) for b in e.get("benchmarks") or []]
    metric = headline_metric(cfg)
    children: dict[tuple[str, str, str, str], Any] = {}
    if use_mlflow:
        try:
            for run in tracking.child_runs(profile):
                t = run.data.tags
                key = (t.get("setting"), t.get("method"), t.get("scale"), t.get("seed"))
                children.setdefault(key, run)  # oldest first; start_child deletes superseded ones
        except Exception as err:  # an unreadable store: fall back to files, say so
            print(f"cppo report: MLflow store unreadable ({err}); using run folders only")
            children = {}
    records = []
    for c in cells:
        rec = RunRecord(cell=c, run_dir=c.run_dir(profile, root))
        run = children.get((c.setting, c.method, c.scale, str(c.seed)))
        if run is not None:
            rec.run_id, rec.source = run.info.run_id, "mlflow"
            rec.start_ms, rec.end_ms = run.info.start_time, run.info.end_time
            rec.git_commit = run.data.tags.get("git_commit")
            for key in sorted(metric_keys):
                if tracking.sanitize_key(key) in run.data.metrics:
                    rec.histories[key] = tracking.metric_history(rec.run_id, key)
            for b in benchmarks:
                v = run.data.metrics.get(tracking.sanitize_key(f"eval/{b}/{metric}"))
                if v is not None:
                    rec.evals.setdefault(b, {})[metric] = float(v)
        # run folder: fills what MLflow lacks
        if rec.run_dir.is_dir():
            files = read_metrics_jsonl(rec.run_dir / "metrics.jsonl", metric_keys)
            for k, h in files.items():
                rec.histories.setdefault(k, h)
            if rec.source == "missing" and files:
                rec.source = "files"
            for b in benchmarks:
                if metric not in rec.evals.get(b, {}):
                    v = eval_metric(_read_json(rec.run_dir / "eval" / f"{b}.json"), b, metric)
                    if v is not None:
                        rec.evals.setdefault(b, {})[metric] = v
            for key, h in read_step_evals(rec.run_dir, benchmarks, metric).items():
                if key in metric_keys:
                    rec.histories.setdefault(key, h)
            rec.position_profile = _read_json(rec.run_dir / "position_profile.json")
            done = rec.run_dir / "done"
            if done.is_file():
                d = _read_json(done)
                rec.done = d if isinstance(d, dict) else {}
        elif run is not None and run.info.status == "FINISHED":
            rec.done = {"step": int(run.data.tags.get("final_step", -1)),
                        "stopped_reason": run.data.tags.get("stopped_reason")}
        records.append(rec)
    return records


def headline_metric(cfg: dict) -> str:
    """The evaluation metric of the table: `eval.metric`, else avg@<n> (n samples per problem)."""
    e = cfg.get("eval") or {}
    return str(e.get("metric") or f"avg@{int(e.get('n', 1))}")

