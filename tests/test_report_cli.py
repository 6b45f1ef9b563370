"""`cppo report` on hand-made run folders (no training): table, figures, summary, MLflow vs files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from cppo.cli import main

CFG = {
    "profile": "rep",
    "task": {"name": "chain", "K": 6},
    "scales": {"s": {"hidden_size": 32}},
    "rl": {"steps": 4},
    "settings": {"fresh": {}},
    "methods": {"pg_is": {"rule": "pg_is"}, "cppo": {"rule": "cppo"}},
    "grid": {"methods": ["pg_is", "cppo"], "scales": ["s"], "seeds": [1, 2, 3], "settings": ["fresh"]},
    "eval": {"benchmarks": ["chain_id", "chain_ood"], "n": 4},
}


def _write_run(root: Path, method: str, seed: int, final_acc: float, scores: tuple[float, float], done=True):
    d = root / "rep" / "runs" / "setting~fresh" / f"method~{method}" / "scale~s" / f"seed~{seed}"
    (d / "eval").mkdir(parents=True)
    rows = []
    for step in range(5):
        row = {"step": step}
        if step:
            row.update({"rollout/reward_mean": 0.3 + 0.01 * step, "rule/masked_frac": 0.01 * seed,
                        "rule/div_mean": 0.005, "rule/ratio_max": 2.0, "train/grad_norm": 0.5 + step,
                        "rule/entropy": 1.0})
        if step in (0, 4):
            row["eval/chain_id/greedy_acc"] = 0.8 if step == 0 else final_acc
        rows.append(json.dumps(row))
    (d / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    for b, v in zip(("chain_id", "chain_ood"), scores):
        (d / "eval" / f"{b}.json").write_text(json.dumps({"model": "x", "benchmarks": {b: {"metrics": {"avg@4": v}}}}))
    (d / "position_profile.json").write_text(json.dumps({"div_mean": [0.01, 0.02, 0.03, 0.04],
                                                         "masked_frac": [0.0, 0.01, 0.0, 0.02]}))
    if done:
        (d / "done").write_text(json.dumps({"step": 4, "stopped_reason": None}))


def test_report_from_run_folders(tmp_path, mlflow_uri):
    root = tmp_path / "results"
    cfg = tmp_path / "rep.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    for seed, acc in ((1, 0.1), (2, 0.2), (3, 0.7)):  # pg_is: seeds 1 and 2 collapse (< 0.4)
        _write_run(root, "pg_is", seed, acc, (acc, acc / 2))
    for seed in (1, 2, 3):
        _write_run(root, "cppo", seed, 0.8, (0.3 + 0.1 * seed, 0.3), done=seed != 3)
    out = tmp_path / "out"
    assert main(["report", str(cfg), "--out", str(out), "--results-root", str(root), "--bootstrap", "2000"]) == 0

    rows = {(r["method"], r["benchmark"]): r for r in csv.DictReader(open(out / "table.csv"))}
    assert set(rows) == {(m, b) for m in ("pg_is", "cppo") for b in ("chain_id", "chain_ood", "mean")}
    pg = rows[("pg_is", "mean")]
    assert math.isclose(float(pg["mean"]), (0.075 + 0.15 + 0.525) / 3, rel_tol=1e-6)  # per seed: mean of (a, a/2)
    assert (pg["collapsed"], pg["collapse_decided"], pg["n_seeds"]) == ("2", "3", "3")
    assert float(pg["ci95_lo"]) < float(pg["mean"]) < float(pg["ci95_hi"])
    cp = rows[("cppo", "chain_id")]
    assert math.isclose(float(cp["mean"]), 0.5, rel_tol=1e-6) and cp["collapsed"] == "0"
    assert json.loads(cp["seed_values"]) == {"1": 0.4, "2": 0.5, "3": 0.6}

    md = (out / "table.md").read_text()
    assert "| pg_is | 25.0 [" in md and "| 2/3 |" in md
    figs = {p.name: p.stat().st_size for p in (out / "figures").iterdir()}
    assert set(figs) == {"curves_scale-s_setting-fresh.png", "curves_scale-s_setting-fresh.svg",
                         "position_scale-s_setting-fresh.png", "position_scale-s_setting-fresh.svg",
                         "comparisons.png", "comparisons.svg"}
    assert min(figs.values()) > 10_000
    summary = (out / "summary.md").read_text()
    assert "6 runs; 5 finished, 6 evaluated" in summary
    import torch  # the host and stack the numbers come from
    from importlib.metadata import version

    assert (f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; torch {version('torch')}, "
            f"transformers {version('transformers')}, numpy {version('numpy')}.") in summary
    from cppo.numerics import effective

    assert "\nHost: " in summary and f"Numeric path: {effective()['numerics/path']}" in summary
    assert "Unfinished runs (1)**: fresh/cppo/s/seed3" in summary
    assert "Collapsed seeds: pg_is 2/3." in summary
    # the declared default: cppo against pg_is on AUC; 3 + 3 seeds cannot reach p <= 0.05, so no verdict
    assert "## Declared comparisons: the verdicts" in summary and "separat" not in summary
    row = next(line for line in summary.splitlines() if line.startswith("| fresh | s | cppo − pg_is | 3 + 3 |"))
    assert "**undecided (n = 3 + 3; no difference is detectable: the smallest attainable p, 0.1, is above 0.05)**" in row
    comp = {(r["measure"], r["other"]): r for r in csv.DictReader(open(out / "comparisons.csv"))}
    auc = comp[("auc", "pg_is")]
    assert auc["role"] == "primary" and auc["verdict"] == "undecided" and auc["mdd80"] == "inf"
    # AUC over [0, 4] (the trainer's evaluations at steps 0 and 4): cppo 0.8 per seed, pg_is (0.8 + a) / 2
    assert math.isclose(float(auc["diff"]), 0.8 - (0.45 + 0.5 + 0.75) / 3, rel_tol=1e-5)
    assert comp[("score", "pg_is")]["role"] == "descriptive"
    assert yaml.safe_load((out / "config.yaml").read_text())["profile"] == "rep"


def test_report_prefers_mlflow_and_fills_gaps_from_files(tmp_path, mlflow_uri, capsys):
    from cppo import tracking

    root = tmp_path / "results"
    cfg = dict(CFG, grid=dict(CFG["grid"], methods=["cppo"], seeds=[1]))
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _write_run(root, "cppo", 1, 0.8, (0.5, 0.25))
    run_dir = root / "rep" / "runs" / "setting~fresh" / "method~cppo" / "scale~s" / "seed~1"
    run_id = tracking.start_child("rep", "fresh", "cppo", "s", 1, "cppo", cfg, run_dir)
    buf = tracking.MetricBuffer(run_id)
    buf.add(4, {"rollout/reward_mean": 0.99})  # MLflow disagrees with the file on purpose
    buf.flush()
    tracking.log_eval(run_id, "chain_id", {"avg@4": 0.75}, step=4)  # only chain_id in MLflow
    assert main(["report", str(path), "--out", str(tmp_path / "o"), "--results-root", str(root)]) == 0
    rows = {r["benchmark"]: r for r in csv.DictReader(open(tmp_path / "o" / "table.csv"))}
    assert float(rows["chain_id"]["mean"]) == 0.75  # from MLflow
    assert float(rows["chain_ood"]["mean"]) == 0.25  # from the run folder
    assert "1 runs (1 from MLflow, 0 from run folders, 0 missing)" in capsys.readouterr().out


def test_report_without_runs_writes_nothing_unless_forced(tmp_path, mlflow_uri, capsys):
    """A fresh clone (no runs anywhere) must not overwrite the committed results/<profile>/ with empty tables."""
    cfg = tmp_path / "rep.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "out"
    out.mkdir()
    (out / "table.md").write_text("committed\n")
    rc = main(["report", str(cfg), "--out", str(out), "--results-root", str(tmp_path / "results"),
               "--bootstrap", "100"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "no runs" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["table.md"] and (out / "table.md").read_text() == "committed\n"

    fresh = tmp_path / "fresh"  # nor is an output folder created
    assert main(["report", str(cfg), "--out", str(fresh), "--results-root", str(tmp_path / "results")]) != 0
    assert not fresh.exists()

    assert main(["report", str(cfg), "--out", str(out), "--results-root", str(tmp_path / "results"),
                 "--bootstrap", "100", "--force"]) == 0
    assert (out / "table.md").read_text() != "committed\n" and (out / "table.csv").is_file()


def test_tiny_profile_best_in_window_is_the_max_over_evaluated_checkpoints(tmp_path):
    """On the tiny profile's grid and horizon, with intermediate checkpoints scored at the trainer's cadence
    (`eval.every = rl.eval_every`; the default itself scores the final checkpoint only): the best-in-window
    column is, per seed, the maximum over the evaluated checkpoints (steps 0, every, ..., T), averaged over
    seeds; the final column is the last checkpoint's value."""
    import numpy as np

    from cppo.config import read_profile
    from cppo.report.grid import cells
    from cppo.report.tables import horizon

    repo = Path(__file__).resolve().parents[1]
    every_set = ["eval.every=10"]
    raw = read_profile(repo / "config" / "tiny.yaml", every_set)
    every = raw["eval"]["every"]
    assert every == raw["rl"]["eval_every"]  # the trainer's cadence
    root, rng = tmp_path / "results", np.random.default_rng(0)
    want: dict[tuple[str, str], dict[str, list[float]]] = {}
    for c in cells(raw):
        T = horizon(raw, c.setting, c.scale)
        d = c.run_dir(raw["profile"], root)
        (d / "eval" / "steps").mkdir(parents=True)
        values = {n: float(rng.uniform(0.1, 0.9)) for n in range(0, T + 1, every)}
        for n, v in values.items():
            (d / "eval" / "steps" / f"step_{n}.json").write_text(
                json.dumps({"step": n, "benchmarks": {"chain_id": {"metrics": {"avg@4": v}}}}))
        (d / "eval" / "chain_id.json").write_text(json.dumps({"benchmarks": {"chain_id": {"metrics": {"avg@4": values[T]}}}}))
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": n, "eval/chain_id/greedy_acc": 0.5}) + "\n"
                                                 for n in values))
        (d / "done").write_text(json.dumps({"step": T, "stopped_reason": None}))
        w = want.setdefault((c.setting, c.method), {"best": [], "final": []})
        w["best"].append(max(values.values()))
        w["final"].append(values[T])
    out = tmp_path / "out"
    assert main(["report", str(repo / "config" / "tiny.yaml"), "--out", str(out), "--results-root", str(root),
                 "--no-mlflow", "--bootstrap", "200", "--set", every_set[0]]) == 0
    rows = [r for r in csv.DictReader(open(out / "table.csv")) if r["benchmark"] == "mean"]
    assert len(rows) == 2 * len(want)
    differs = 0
    for r in rows:
        vals = want[(r["setting"], r["method"])][r["checkpoint"]]
        assert float(r["mean"]) == pytest.approx(float(np.mean(vals)), abs=1e-5), r
        assert json.loads(r["seed_values"]) == {str(k): pytest.approx(v, abs=1e-6)
                                                for k, v in zip(raw["grid"]["seeds"], vals)}
        differs += r["checkpoint"] == "best" and not math.isclose(np.mean(vals), np.mean(want[(r["setting"], r["method"])]["final"]))
    assert differs > 0  # the two columns are not the same numbers
    md = (out / "table.md").read_text()
    assert md.index("## Score of the best checkpoint within [0, T_stop]") < md.index("## Score of the final checkpoint")
    assert "optimistically biased" in (out / "summary.md").read_text()


def test_retest_from_committed_values_reproduces_the_claims(tmp_path):
    """`cppo report --retest` needs no runs: from claims.csv it re-makes the same claims table, and
    from stability.csv alone everything but the D_t growth claim (whose per-seed values it lacks)."""
    root = tmp_path / "results"
    cfg = dict(CFG, methods={"dppo": {"rule": "dppo"}, "cppo": {"rule": "cppo"}},
               grid=dict(CFG["grid"], methods=["dppo", "cppo"]), report={"claims": True})
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for seed, acc in ((1, 0.1), (2, 0.2), (3, 0.7)):
        _write_run(root, "dppo", seed, acc, (acc, acc / 2))
        _write_run(root, "cppo", seed, 0.8, (0.4, 0.3))
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out), "--results-root", str(root), "--no-mlflow"]) == 0
    first = (out / "summary.md").read_text()
    table = [line for line in first.splitlines() if line.startswith("| CPPO") or line.startswith("| Per-token")]
    assert len(table) == 5 and all("undecided (n = 3 pairs" in line for line in table)
    import shutil

    shutil.rmtree(root)  # no runs from here on
    assert main(["report", str(path), "--out", str(out), "--retest"]) == 0
    again = (out / "summary.md").read_text()
    assert [line for line in again.splitlines() if line.startswith("| CPPO") or line.startswith("| Per-token")] == table
    assert "*Re-tested at commit" in again and again.count("## The paper's claims on this grid") == 1
    assert "## Grid and cost" in again and "## Trust-region diagnostics" in again  # the rest kept
    (out / "claims.csv").unlink()
    assert main(["report", str(path), "--out", str(out), "--retest"]) == 0
    third = (out / "summary.md").read_text()
    assert "| no per-seed D_t profiles (not in the inputs) | – | – | **not tested** |" in third
    rows = [line for line in third.splitlines() if line.startswith("| CPPO")]
    # the same estimates and p-values; the family is 4 claims now, so each row's level is 0.05 / 4
    assert [r.split(" | ")[:5] for r in rows] == [r.split(" | ")[:5] for r in table[1:]]
    assert all("is above 0.0125)" in r for r in rows) and all("is above 0.01)" in r for r in table[1:])
    (out / "stability.csv").unlink()
    assert main(["report", str(path), "--out", str(out), "--retest"]) == 2  # nothing to re-test from
