"""cppo.tracking against a private SQLite store: layout, idempotence, resume, batching, races."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cppo import tracking as T


def test_tracking_uri_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setattr(T, "_results_dir", "results")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x/y.db")
    assert T.tracking_uri() == "sqlite:////x/y.db"
    T.use_results_dir("elsewhere")
    assert T.tracking_uri() == "sqlite:////x/y.db"  # the environment wins
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)  # the store follows the current directory, not the package's location
    assert T.tracking_uri() == f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    assert T.tracking_uri("other") == f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    T.use_results_dir(None)
    assert T.tracking_uri() == f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"


def test_commands_use_the_store_of_the_profiles_results_dir(monkeypatch, tmp_path):
    """`cppo mlflow-init` run from another folder writes `<cwd>/<results_dir>/mlflow.db`, beside the run
    folders, and nothing where the package lives."""
    import yaml

    from cppo.cli import main

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(T, "_results_dir", "results")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(T, "_CLIENTS", {})
    cfg = yaml.safe_load((repo / "config" / "tiny.yaml").read_text())
    cfg.update(profile="elsewhere", results_dir="res")
    cfg["grid"] = {"methods": cfg["grid"]["methods"][:1], "scales": cfg["grid"]["scales"], "seeds": [1],
                   "settings": cfg["grid"]["settings"][-1:]}  # one parent run: the store's place is the point
    (cfg.get("report") or {}).pop("comparisons", None)  # they name methods this grid drops
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    before = (repo / "results" / "mlflow.db").stat().st_mtime_ns if (repo / "results" / "mlflow.db").exists() else None
    monkeypatch.chdir(tmp_path)
    assert main(["mlflow-init", "p.yaml", "--out", "ids.json"]) == 0
    assert (tmp_path / "res" / "mlflow.db").is_file()
    assert T.client(f"sqlite:///{tmp_path / 'res' / 'mlflow.db'}").get_experiment_by_name("elsewhere") is not None
    after = (repo / "results" / "mlflow.db").stat().st_mtime_ns if (repo / "results" / "mlflow.db").exists() else None
    assert after == before


def test_flatten_and_sanitize():
    cfg = {"rl": {"lr": 1e-4, "steps": {"s": 150, "m": 60}, "grad_clip": None},
           "grid": {"seeds": [1, 2]}, "sft": {}, "profile": "tiny"}
    assert T.flatten(cfg) == {"rl/lr": "0.0001", "rl/steps/s": "150", "rl/steps/m": "60",
                              "rl/grad_clip": "null", "grid/seeds": "[1, 2]", "sft": "{}",
                              "profile": "tiny"}
    assert T.sanitize_key("eval/aime24/avg@16") == "eval/aime24/avg_at_16"
    assert T.sanitize_key("rule/k3_pi_mu") == "rule/k3_pi_mu"
    assert T.sanitize_key("a(b)") == "a_b_"


def test_provenance_has_commit_and_versions():
    p = T.provenance()
    assert len(p["git_commit"]) == 40 or p["git_commit"] == "unknown"
    assert p["git_dirty"] in ("true", "false", "unknown")
    assert p["version/mlflow"][0].isdigit() and p["version/torch"].startswith("2.")
    assert p["numerics"] in ("pinned", "native")  # the float kernels' path (cppo/numerics.py)


def test_parent_child_layout_resume_and_metrics(mlflow_uri, tmp_path):
    parent = T.ensure_parent("tiny", "fresh", "cppo", "s", "cppo")
    assert T.ensure_parent("tiny", "fresh", "cppo", "s", "cppo") == parent  # idempotent
    other = T.ensure_parent("tiny", "fresh", "grpo", "s", "ppo_clip")
    assert other != parent

    run_dir = tmp_path / "runs" / "seed~1"
    cfg = {"rl": {"lr": 1e-4, "steps": 20}, "methods": {"cppo": {"delta": 0.15}}}
    child = T.start_child("tiny", "fresh", "cppo", "s", 1, "cppo", cfg, run_dir)
    assert (run_dir / T.RUN_ID_FILE).read_text().strip() == child
    run = T.client().get_run(child)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert {tags[k] for k in ("method", "rule", "scale", "seed", "setting", "profile")} == \
        {"cppo", "s", "1", "fresh", "tiny"}
    assert tags["level"] == "child" and "git_commit" in tags and "version/torch" in tags
    assert run.data.params == {"rl/lr": "0.0001", "rl/steps": "20", "methods/cppo/delta": "0.15"}
    exp = T.client().get_experiment(run.info.experiment_id)
    assert exp.name == "tiny" and exp.artifact_location.endswith("mlartifacts")

    # First segment: steps 0..9, flushed at the "checkpoint".
    buf = T.MetricBuffer(child)
    for step in range(10):
        buf.add(step, {"train/loss": 0.5 * step, "rule/ess": math.nan, "skip": None, "name": "x"})
    assert len(buf) == 20 and buf.flush() == 20 and len(buf) == 0
    # Resume: the id file is found, the same run reopened, params untouched.
    again = T.start_child("tiny", "fresh", "cppo", "s", 1, "cppo", {"other": 1}, run_dir)
    assert again == child
    assert T.client().get_run(child).data.params == run.data.params
    buf = T.MetricBuffer(child)
    for step in range(10, 15):
        buf.add(step, {"train/loss": 0.5 * step})
    buf.flush()
    hist = T.metric_history(child, "train/loss")
    assert [s for s, _ in hist] == list(range(15))
    assert hist[7][1] == pytest.approx(3.5)
    raw = T.client().get_metric_history(child, "train/loss")
    assert len(raw) == 15  # no duplicated steps
    assert math.isnan(T.metric_history(child, "rule/ess")[0][1])

    T.log_eval(child, "chain_id", {"avg@4": 0.25, "greedy": 0.5, "n": 4, "name": "x"}, step=14)
    assert T.metric_history(child, "eval/chain_id/avg@4") == [(14, 0.25)]
    assert T.metric_history(child, "eval/chain_id/greedy") == [(14, 0.5)]

    f = tmp_path / "position_profile.json"
    f.write_text("{}")
    T.log_artifact(child, f)
    assert [a.path for a in T.client().list_artifacts(child)] == ["position_profile.json"]
    T.end_run(child)
    assert T.client().get_run(child).info.status == "FINISHED"
    with pytest.raises(ValueError, match="status"):
        T.end_run(child, "DONE")
    assert [r.info.run_id for r in T.child_runs("tiny")] == [child]


def test_fresh_restart_supersedes_old_child(mlflow_uri, tmp_path):
    first = T.start_child("tiny", "stale", "dppo", "m", 2, "dppo", {}, tmp_path / "a")
    # The run folder was wiped (rm -rf results/...); the same seed runs again from scratch.
    second = T.start_child("tiny", "stale", "dppo", "m", 2, "dppo", {}, tmp_path / "b")
    assert second != first
    assert [r.info.run_id for r in T.child_runs("tiny")] == [second]


def test_metric_buffer_chunks_over_1000(mlflow_uri, monkeypatch):
    run_id = T.ensure_parent("p", "x", "m", "s", "r")
    calls = []
    c = T.client()
    orig = c.log_batch
    monkeypatch.setattr(c, "log_batch", lambda *a, **k: (calls.append(len(k["metrics"])), orig(*a, **k)))
    buf = T.MetricBuffer(run_id)
    for step in range(250):
        buf.add(step, {f"m{i}": float(i) for i in range(10)})
    assert buf.flush() == 2500
    assert calls == [1000, 1000, 500]
    assert len(T.metric_history(run_id, "m3")) == 250


def test_cross_machine_race_is_deduplicated(mlflow_uri):
    """Two parents created by hosts that share no lock: the oldest wins, the other is deleted."""
    first = T.ensure_parent("tiny", "fresh", "grpo", "s", "ppo_clip")
    exp_id = T.client().get_run(first).info.experiment_id
    tags = {**T._cell_tags("tiny", "fresh", "grpo", "s", "ppo_clip"), "level": "parent"}
    dup = T.client().create_run(exp_id, tags=tags).info.run_id
    assert T.ensure_parent("tiny", "fresh", "grpo", "s", "ppo_clip") == first
    assert T.client().get_run(dup).info.lifecycle_stage == "deleted"


def test_retry_on_database_locked(monkeypatch):
    monkeypatch.setattr(T.time, "sleep", lambda s: None)
    n = {"calls": 0}

    def flaky():
        n["calls"] += 1
        if n["calls"] < 4:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert T._retry(flaky) == "ok" and n["calls"] == 4
    with pytest.raises(KeyError):
        T._retry(lambda: (_ for _ in ()).throw(KeyError("other")))  # not transient: no retry


_WRITER = textwrap.dedent("""
    import sys
    from cppo import tracking as T
    seed = int(sys.argv[1]); run_dir = sys.argv[2]
    T.ensure_parent("race", "fresh", "cppo", "s", "cppo")
    run = T.start_child("race", "fresh", "cppo", "s", seed, "cppo", {"seed": seed}, run_dir)
    buf = T.MetricBuffer(run)
    for step in range(200):
        buf.add(step, {"train/a": step, "train/b": seed, "rule/c": step * seed})
        if step % 20 == 19:
            buf.flush()  # many small transactions interleaved with the other writers
    T.end_run(run)
""")


def test_parallel_writers_lose_nothing(mlflow_uri, tmp_path):
    """Four processes on a brand-new store: one experiment, one parent, four complete children."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(seed), str(tmp_path / f"run{seed}")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed in (1, 2, 3, 4)]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out
    c = T.client()
    exp = c.get_experiment_by_name("race")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("level") == "parent"]
    children = [r for r in runs if r.data.tags.get("level") == "child"]
    assert len(parents) == 1 and len(children) == 4
    assert sorted(int(r.data.tags["seed"]) for r in children) == [1, 2, 3, 4]
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        seed = int(r.data.tags["seed"])
        for key in ("train/a", "train/b", "rule/c"):
            raw = c.get_metric_history(r.info.run_id, key)
            assert sorted(m.step for m in raw) == list(range(200)), key
        assert r.data.metrics["rule/c"] == 199 * seed
        assert r.info.status == "FINISHED"
