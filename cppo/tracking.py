"""MLflow tracking for cppo-bench: one experiment per profile, parents per cell, children per seed.

What: the only module that talks to MLflow. The trainer, `cppo eval` and `cppo report` go through
it so that run layout, tags and metric names stay the same everywhere (docs/contracts.md §MLflow):

    experiment  <profile>                                   (e.g. "tiny")
    parent run  <setting>/<method>/<scale>                  tags: level=parent, profile, setting,
                                                            method, rule, scale
    child run   <setting>/<method>/<scale>/seed<k>          tags: the same + seed, level=child,
                                                            mlflow.parentRunId, provenance
    params      flatten(resolved config)  ("rl/lr", "methods/cppo/delta", ...)
    metrics     train/*, rule/*, rollout/* per step; eval/<benchmark>/<metric> at the checkpoint step

Why these choices:
- The client API (`MlflowClient`) everywhere, never the fluent `mlflow.start_run` global state: a
  trainer may hold several runs, and parallel processes must not share hidden state.
- SQLite is the default store (one file, `<results_dir>/mlflow.db`, no server). Like the run
  folders, it is found from the profile's `results_dir` relative to the current directory (a command
  that reads a profile calls `use_results_dir`), never from where this package is installed: with
  another checkout's environment, or a non-editable install, the store stays the current checkout's.
  SQLite serialises writers; a writer that finds the database locked gets "database is locked" once
  the driver's own wait is over. Every store call therefore goes through `_retry`, which backs off
  and tries again, so parallel Snakemake jobs lose neither runs nor metrics.
- Parents are created once by `cppo mlflow-init` before any job starts. `ensure_parent` is still
  idempotent and safe under races: get-or-create runs under an inter-process file lock, and if two
  processes on different machines (no shared lock) both create a parent, the earliest one wins and
  the later ones are deleted (`_dedupe`).
- Metrics are buffered (`MetricBuffer`) and written with one `log_batch` per flush (≤1000 per call,
  MLflow's limit). The trainer flushes only at checkpoint boundaries, so a resumed run re-logs
  nothing it already logged and MLflow never holds duplicated steps.
- MLflow metric names may only hold letters, digits, `_ - . / : ` and spaces; `sanitize_key` maps
  the rest ("avg@16" -> "avg_at_16") so evaluation names like pass@k can be logged as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

# where the running code lies (an editable install's checkout): git_commit describes that code. Only
# provenance looks here; the store is the current directory's (use_results_dir).
_CODE_ROOT = Path(__file__).resolve().parents[1]
_results_dir: str = "results"  # the default store's folder; see use_results_dir
RUN_ID_FILE = "mlflow_run_id"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit for metrics
MAX_PARAMS_PER_BATCH = 100  # ... and for params / tags
MAX_PARAM_LEN = 6000  # MLflow truncates (or rejects) longer param values
_T = TypeVar("_T")

# MLflow and alembic print INFO lines on every store creation; keep CLI output readable.
for _name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# ----------------------------------------------------------------------------- store and client
def use_results_dir(results_dir: str | Path | None) -> None:
    """Make `<results_dir>/mlflow.db` this process's default store (a profile's `results_dir`;
    None keeps `results`). Called once by each command that reads a profile, before any store call."""
    global _results_dir
    _results_dir = str(results_dir or "results")


def tracking_uri(results_dir: str | Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the SQLite store `<results_dir>/mlflow.db` under the current
    directory (default: the folder set by `use_results_dir`, else `results`), as an absolute path."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(results_dir or _results_dir) / 'mlflow.db').absolute()}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def artifact_root(uri: str | None = None) -> str:
    """Where a new experiment's artifacts go: `<db folder>/mlartifacts` beside a SQLite store.

    MLflow's own default (`./mlruns` relative to the working directory of whichever process
    happened to create the experiment) would scatter artifacts; beside the database they are
    found again from any working directory.
    """
    uri = uri or tracking_uri()
    db = _sqlite_path(uri)
    if db is not None:
        return (db.resolve().parent / "mlartifacts").as_uri()
    if uri.startswith("file:"):
        return uri.rstrip("/") + "/artifacts"
    return ""  # a tracking server decides (its --default-artifact-root)


@contextlib.contextmanager
def _store_lock(uri: str | None = None) -> Iterator[None]:
    """An exclusive inter-process lock tied to the tracking store (a lock file in the temp folder).

    Serialises get-or-create of experiments and runs among processes on one machine; it does not
    protect against other machines (see `_dedupe` for that).
    """
    uri = uri or tracking_uri()
    db = _sqlite_path(uri)
    key = str(db.resolve()) if db is not None else uri
    # In the temp folder (not beside the database): nothing to clean up or to keep out of git.
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"cppo-mlflow-{digest}.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_transient(err: BaseException) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("database is locked", "database table is locked", "disk i/o error",
                                   "unable to open database file", "busy"))


def _retry(fn: Callable[[], _T], *, tries: int = 30, what: str = "MLflow call") -> _T:
    """Run `fn`, retrying with jittered exponential backoff while SQLite reports a lock."""
    delay = 0.05
    for attempt in range(tries):
        try:
            return fn()
        except Exception as err:  # MlflowException wraps sqlalchemy.exc.OperationalError
            if not _is_transient(err) or attempt == tries - 1:
                raise
            time.sleep(delay * (1.0 + random.random()))
            delay = min(delay * 2.0, 2.0)
    raise AssertionError("unreachable")


_CLIENTS: dict[str, Any] = {}


def client(uri: str | None = None):
    """A cached `MlflowClient` for `uri`; the first one per process creates/migrates the store
    under the store lock so that two processes never initialise one SQLite file at once."""
    uri = uri or tracking_uri()
    if uri not in _CLIENTS:
        from mlflow.tracking import MlflowClient

        db = _sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        # Constructing the client creates (and migrates) the SQLite schema: do it under the lock.
        with _store_lock(uri):
            c = _retry(lambda: MlflowClient(tracking_uri=uri), what="store initialisation")
            _retry(lambda: c.search_experiments(max_results=1), what="store initialisation")
        _CLIENTS[uri] = c
    return _CLIENTS[uri]


# ----------------------------------------------------------------------------- provenance, params
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_CODE_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def provenance() -> dict[str, str]:
    """Where a run came from: git commit and dirtiness, Python and key package versions.

    Versions are read from package metadata, so this never imports torch or transformers.
    """
    commit = _git("rev-parse", "HEAD") or "unknown"
    # outputs under results/ (committed summaries being re-made) are not changes to the code or configs
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    info = {
        "git_commit": commit,
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "python": sys.version.split()[0],
    }
    from cppo import numerics

    info["numerics"] = numerics.requested()  # the float kernels' path (cppo/numerics.py)
    for dist in ("cppo-bench", "torch", "transformers", "mlflow", "numpy", "snakemake", "lm_eval",
                 "math-verify", "vllm", "verl"):
        v = _version(dist)
        if v != "absent" or dist in ("cppo-bench", "torch", "transformers", "mlflow"):
            info[f"version/{dist}"] = v
    return info


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat `{"a/b/c": "value"}` (MLflow params). Lists are JSON-encoded.

    >>> flatten({"rl": {"lr": 1e-4, "steps": {"s": 150}}, "grid": {"seeds": [1, 2]}})
    {'rl/lr': '0.0001', 'rl/steps/s': '150', 'grid/seeds': '[1, 2]'}
    """
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, name))
            else:
                out[name] = "{}"
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value), default=str)
        elif value is None:
            out[name] = "null"
        else:
            out[name] = str(value)
    return out


_BAD_CHARS = re.compile(r"[^/\w.\- :]")


def sanitize_key(name: str) -> str:
    """An MLflow-legal metric/param name: "@" -> "_at_", other illegal characters -> "_"."""
    return _BAD_CHARS.sub("_", name.replace("@", "_at_"))


# ----------------------------------------------------------------------------- experiment, runs
def _experiment_id(profile: str, uri: str | None = None) -> str:
    """Get or create the experiment named `profile` (under the store lock)."""
    c = client(uri)
    exp = _retry(lambda: c.get_experiment_by_name(profile))
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            _retry(lambda: c.restore_experiment(exp.experiment_id))
        return exp.experiment_id
    with _store_lock(uri):
        exp = _retry(lambda: c.get_experiment_by_name(profile))
        if exp is not None:
            return exp.experiment_id
        root = artifact_root(uri)
        return _retry(lambda: c.create_experiment(profile, artifact_location=root or None,
                                                  tags={"profile": profile}))


def _quote(v: Any) -> str:
    return "'" + str(v).replace("'", "\\'") + "'"


def _find_runs(exp_id: str, tags: Mapping[str, Any], uri: str | None = None) -> list:
    """Active runs of `exp_id` whose tags equal `tags`, oldest first (ties broken by run id)."""
    c = client(uri)
    flt = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    runs = _retry(lambda: c.search_runs([exp_id], filter_string=flt, max_results=1000))
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _dedupe(runs: list, uri: str | None = None):
    """Keep the oldest of runs that should be one (a cross-machine race); delete the others."""
    c = client(uri)
    keep, extra = runs[0], runs[1:]
    for r in extra:
        _retry(lambda r=r: c.delete_run(r.info.run_id))
    return keep


def _cell_tags(profile: str, setting: str, method: str, scale: str, rule: str) -> dict[str, str]:
    return {"profile": str(profile), "setting": str(setting), "method": str(method),
            "scale": str(scale), "rule": str(rule)}


def ensure_parent(profile: str, setting: str, method: str, scale: str, rule: str) -> str:
    """Get or create the parent run of one grid cell; returns its run id. Idempotent."""
    uri = tracking_uri()
    exp_id = _experiment_id(profile, uri)
    key = {**_cell_tags(profile, setting, method, scale, rule), "level": "parent"}
    found = _find_runs(exp_id, key, uri)
    if found:
        return _dedupe(found, uri).info.run_id
    c = client(uri)
    with _store_lock(uri):
        found = _find_runs(exp_id, key, uri)
        if not found:
            tags = {**key, "mlflow.runName": f"{setting}/{method}/{scale}"}
            run = _retry(lambda: c.create_run(exp_id, tags=tags))
            # Parents hold no steps of their own; FINISHED keeps the MLflow UI uncluttered.
            _retry(lambda: c.set_terminated(run.info.run_id, "FINISHED"))
        found = _find_runs(exp_id, key, uri)
    return _dedupe(found, uri).info.run_id


def _run_exists(run_id: str, uri: str | None = None) -> bool:
    c = client(uri)
    try:
        run = _retry(lambda: c.get_run(run_id))
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower():
            return False
        raise
    return run.info.lifecycle_stage == "active"


def start_child(profile: str, setting: str, method: str, scale: str, seed: int, rule: str,
                config: Mapping[str, Any], run_dir: Path | str) -> str:
    """Create (or, on resume, reopen) the child run of one seed; returns its run id.

    The id is stored in `run_dir/mlflow_run_id`. When that file names a live run of the current
    store, the run is reopened (status RUNNING) and nothing else changes: its params and earlier
    metrics stay as they were. Otherwise a fresh child is created; any older active child with the
    same (profile, setting, method, scale, seed) is deleted first, because a run that restarts
    from scratch supersedes it (keeping both would count the seed twice in the report).
    """
    uri = tracking_uri()
    run_dir = Path(run_dir)
    id_file = run_dir / RUN_ID_FILE
    c = client(uri)
    if id_file.exists():
        run_id = id_file.read_text().strip()
        if run_id and _run_exists(run_id, uri):
            _retry(lambda: c.update_run(run_id, status="RUNNING"))
            return run_id
    parent_id = ensure_parent(profile, setting, method, scale, rule)
    exp_id = _experiment_id(profile, uri)
    key = {**_cell_tags(profile, setting, method, scale, rule), "seed": str(seed), "level": "child"}
    for old in _find_runs(exp_id, {k: v for k, v in key.items() if k != "rule"}, uri):
        _retry(lambda old=old: c.delete_run(old.info.run_id))
    tags = {**key, **provenance(), "mlflow.parentRunId": parent_id,
            "mlflow.runName": f"{setting}/{method}/{scale}/seed{seed}",
            "run_dir": str(run_dir.resolve())}
    commit = tags.get("git_commit")
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    run = _retry(lambda: c.create_run(exp_id, tags=tags))
    run_id = run.info.run_id
    log_params(run_id, flatten(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = id_file.with_suffix(".tmp")
    tmp.write_text(run_id + "\n")
    tmp.replace(id_file)  # atomic: a killed process never leaves half an id behind
    return run_id


def log_params(run_id: str, params: Mapping[str, str]) -> None:
    """Log params in chunks of ≤100 (MLflow's batch limit), values cut to MLflow's 6000 chars."""
    from mlflow.entities import Param

    c = client()
    items = [Param(sanitize_key(k), str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        chunk = items[i:i + MAX_PARAMS_PER_BATCH]
        _retry(lambda chunk=chunk: c.log_batch(run_id, params=chunk, synchronous=True))


def set_tags(run_id: str, tags: Mapping[str, Any]) -> None:
    """Set several tags on a run (e.g. `stopped_reason` at the end of training)."""
    from mlflow.entities import RunTag

    c = client()
    items = [RunTag(str(k), str(v)) for k, v in tags.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        chunk = items[i:i + MAX_PARAMS_PER_BATCH]
        _retry(lambda chunk=chunk: c.log_batch(run_id, tags=chunk, synchronous=True))


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark a run FINISHED / FAILED / KILLED (the trainer calls this when it stops)."""
    if status not in ("FINISHED", "FAILED", "KILLED", "RUNNING"):
        raise ValueError(f"end_run: status must be FINISHED, FAILED, KILLED or RUNNING, got {status!r}")
    c = client()
    _retry(lambda: c.set_terminated(run_id, status))


# ----------------------------------------------------------------------------- metrics, artifacts
class MetricBuffer:
    """Collects per-step metrics in memory; `flush()` writes them with one `log_batch` per ≤1000.

    Non-finite values are kept (MLflow stores NaN/±inf); None and non-numeric values are skipped,
    so callers can pass a metrics dict as it is.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._pending: list = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, step: int, metrics: Mapping[str, Any], timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        for name, value in metrics.items():
            if value is None or isinstance(value, (str, bytes)):
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            self._pending.append(Metric(sanitize_key(name), v, ts, int(step)))

    def flush(self) -> int:
        """Write everything pending; returns how many values were written."""
        if not self._pending:
            return 0
        c = client()
        n = 0
        while self._pending:
            chunk = self._pending[:MAX_METRICS_PER_BATCH]
            _retry(lambda: c.log_batch(self.run_id, metrics=chunk, synchronous=True))
            del self._pending[:len(chunk)]  # only after the write succeeded
            n += len(chunk)
        return n


def log_artifact(run_id: str, path: Path | str, artifact_path: str | None = None) -> None:
    """Copy a file (or a whole folder) into the run's artifacts."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"log_artifact: {path} does not exist")
    c = client()
    if path.is_dir():
        _retry(lambda: c.log_artifacts(run_id, str(path), artifact_path))
    else:
        _retry(lambda: c.log_artifact(run_id, str(path), artifact_path))


def log_eval(run_id: str, benchmark: str, metrics: Mapping[str, Any], step: int) -> None:
    """Log evaluation results as `eval/<benchmark>/<metric>` at the checkpoint's step."""
    buf = MetricBuffer(run_id)
    numeric = {f"eval/{benchmark}/{k}": v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))}
    buf.add(step, numeric)
    buf.flush()


# ----------------------------------------------------------------------------- reading back
def child_runs(profile: str, uri: str | None = None) -> list:
    """All active child runs of a profile's experiment (for the report)."""
    c = client(uri)
    exp = _retry(lambda: c.get_experiment_by_name(profile))
    if exp is None:
        return []
    return _find_runs(exp.experiment_id, {"level": "child"}, uri)


def metric_history(run_id: str, key: str, uri: str | None = None) -> list[tuple[int, float]]:
    """`[(step, value), ...]` of one metric, sorted by step (last value wins on a repeated step)."""
    c = client(uri)
    hist = _retry(lambda: c.get_metric_history(run_id, sanitize_key(key)))
    by_step: dict[int, tuple[int, float]] = {}
    for m in sorted(hist, key=lambda m: (m.step, m.timestamp)):
        by_step[m.step] = (m.step, m.value)
    return [by_step[s] for s in sorted(by_step)]
