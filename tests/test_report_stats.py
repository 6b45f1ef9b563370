"""Report statistics on hand-made numbers and run histories: bootstrap CI, IQM, collapse, tables."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from cppo.report.collect import RunRecord, eval_metric, read_metrics_jsonl
from cppo.report.grid import Cell, apply_sets, cells, declared, parents
from cppo.report.stats import (auc, best_in_run, bootstrap_band, bootstrap_ci, collapsed, final_value,
                               iqm, time_to_collapse, wilson_interval)
from cppo.report.tables import (attach_published, best_step, cell_stats, load_published, markdown, step_means,
                                write_csv)


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_bounds_and_degenerate_cases():
    mean, lo, hi = bootstrap_ci([0.0, 1.0], n_boot=20_000, seed=1)
    # resampled means of {0, 1} with n=2 are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    assert mean == 0.5 and lo == 0.0 and hi == 1.0
    m, lo, hi = bootstrap_ci([0.3, 0.3, 0.3])
    assert (m, lo, hi) == pytest.approx((0.3, 0.3, 0.3))
    m, lo, hi = bootstrap_ci([0.42])
    assert m == 0.42 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, float("nan"), 3.0, None])[0] == 2.0  # non-finite seeds are ignored
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1, 2], alpha=1.5)


def test_bootstrap_ci_is_deterministic_and_covers_mean():
    x = np.random.default_rng(0).normal(0.5, 0.1, size=8)
    a, b = bootstrap_ci(x, seed=3), bootstrap_ci(x, seed=3)
    assert a == b
    m, lo, hi = a
    assert lo < m < hi
    # the percentile interval of a mean shrinks ~ 1/sqrt(n): 4x the data, about half the width
    m4, lo4, hi4 = bootstrap_ci(np.tile(x, 4), seed=3)
    assert 0.35 < (hi4 - lo4) / (hi - lo) < 0.65


def test_bootstrap_band_per_step_with_missing_seeds():
    mat = np.array([[1.0, 2.0, np.nan], [3.0, 2.0, 5.0]])
    mean, lo, hi = bootstrap_band(mat, n_boot=4000)
    assert mean.tolist() == [2.0, 2.0, 5.0]
    assert lo[0] == 1.0 and hi[0] == 3.0  # resamples of {1, 3}: 1, 2, 3
    assert lo[1] == hi[1] == 2.0
    assert math.isnan(lo[2]) and math.isnan(hi[2])  # one seed: no interval


# ----------------------------------------------------------------------------- IQM
def test_iqm_hand_computed():
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # middle two of four
    assert iqm([4, 1, 100, 2, 3, 3, 2, -50]) == pytest.approx(2.5)  # middle four of eight: 2, 2, 3, 3
    # n = 3: weights 1/6, 2/3, 1/6 on the sorted values
    assert iqm([0, 1, 10]) == pytest.approx(10 / 6 + 2 / 3)
    # n = 5: weights 0, .3, .4, .3, 0
    assert iqm([1, 2, 3, 4, 1000]) == pytest.approx(0.3 * 2 + 0.4 * 3 + 0.3 * 4)
    assert iqm([7.0]) == 7.0 and math.isnan(iqm([]))


def test_iqm_is_robust_to_one_outlier_unlike_mean():
    x = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.0, 0.51]
    assert abs(iqm(x) - 0.5) < 0.01 < abs(float(np.mean(x)) - 0.5)


# ----------------------------------------------------------------------------- collapse
def test_collapse_detection():
    assert collapsed([(0, 0.87), (25, 0.80), (150, 0.20)]) is True  # PG-IS-like fall
    assert collapsed([(0, 0.87), (150, 0.44)]) is False  # 0.44 >= 0.435: just not half
    assert collapsed([(0, 0.87), (150, 0.43)]) is True
    assert collapsed([(150, 0.2), (0, 0.87)]) is True  # order of the input does not matter
    assert collapsed([(0, 0.87), (25, 0.1), (150, 0.85)]) is True  # a dip counts, even when it recovers
    assert collapsed([(0, 0.87), (25, 0.1), (150, 0.85)], horizon=20) is False  # the dip is past the horizon
    assert collapsed([(0, 0.5), (10, float("nan"))]) is True  # ended on nan
    assert collapsed([(0, 0.0), (10, 0.0)]) is None  # nothing to lose: undecidable
    assert collapsed([]) is None
    assert collapsed([(0, 0.8), (10, 0.5)], frac=0.7) is True
    with pytest.raises(ValueError, match="frac"):
        collapsed([(0, 1.0), (1, 1.0)], frac=0.0)


def test_time_to_collapse_censoring_and_edge_cases():
    falls = [(0, 0.40), (10, 0.30), (20, 0.19), (30, 0.05), (40, 0.30)]
    assert time_to_collapse(falls) == (20, True)  # first step below 0.20, not the lowest one
    assert time_to_collapse(falls, horizon=15) == (15, False)  # censored at the horizon
    never = [(0, 0.40), (10, 0.35), (20, 0.45), (30, 0.21)]
    assert time_to_collapse(never, horizon=100) == (100, False)  # censored at H, not at the last eval
    assert time_to_collapse(never) == (30, False)  # no horizon given: the last evaluated step
    # a seed that collapses at step 0: its step-0 value is already below half the reference
    assert time_to_collapse([(0, 0.1), (10, 0.4)], reference=0.4) == (0, True)
    assert time_to_collapse([(0, float("nan")), (10, 0.4)], reference=0.4) == (0, True)
    assert time_to_collapse([(0, 0.0), (10, 0.0)]) is None and time_to_collapse([]) is None
    assert time_to_collapse([(0, 0.4)]) == (0, False)  # only the start: censored at once


def test_auc_best_final_hand_computed():
    h = [(0, 0.4), (10, 0.2), (20, 0.0)]
    # trapezoids: 10 * 0.3 + 10 * 0.1 = 4.0 over 20 steps; held at 0 to 40: 4.0 / 40
    assert auc(h) == pytest.approx(0.2)
    assert auc(h, horizon=40) == pytest.approx(0.1)
    assert auc([(0, 0.5), (10, 0.5)], horizon=100) == pytest.approx(0.5)  # a flat curve: its value
    assert auc([(0, 0.5), (10, float("nan"))]) == pytest.approx(0.25)  # nan counts as 0: (0.5 + 0) / 2
    assert math.isnan(auc([]))
    assert best_in_run(h) == 0.4 and best_in_run([(0, 0.1), (10, 0.3), (30, 0.9)], horizon=20) == 0.3
    assert final_value(h) == 0.0 and final_value(h, horizon=15) == 0.2


def test_wilson_interval():
    lo, hi = wilson_interval(3, 3)
    assert hi == 1.0 and lo == pytest.approx(0.4385, abs=1e-3)  # 3/3 is not certainty
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# ----------------------------------------------------------------------------- grid and tables
CFG = {
    "profile": "t",
    "scales": {"s": {}, "m": {}},
    "settings": {"fresh": {}, "stale": {}},
    "methods": {"grpo": {"rule": "ppo_clip"}, "cppo": {"rule": "cppo"}},
    "grid": {"methods": ["grpo", "cppo"], "scales": ["s"], "seeds": [1, 2, 3], "settings": ["fresh"]},
}


def test_grid_cells_paths_and_errors():
    cs = cells(CFG)
    assert len(cs) == 6 and cs[0] == Cell("fresh", "grpo", "ppo_clip", "s", 1)
    assert str(cs[4].run_dir("t")) == "results/t/runs/setting~fresh/method~cppo/scale~s/seed~2"
    assert parents(CFG) == [("fresh", "grpo", "s", "ppo_clip"), ("fresh", "cppo", "s", "cppo")]
    bad = apply_sets(CFG, ["grid.methods=[grpo, nope]"])
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        cells(bad)
    with pytest.raises(ValueError, match="unknown scale 'xl'"):
        cells(apply_sets(CFG, ["grid.scales=[xl]"]))
    # a misspelt declared comparison stops the plan, before any run
    with pytest.raises(ValueError, match=r"report.comparisons.against: \['dpo'\]"):
        cells(apply_sets(CFG, ["report.comparisons.against=[dpo]"]))
    with pytest.raises(ValueError, match="report.comparisons.settings"):
        cells(apply_sets(CFG, ["report.comparisons.settings=[stale]"]))
    with pytest.raises(ValueError, match="report.comparisons.focal"):
        cells(apply_sets(CFG, ["report.comparisons.focal=dppo"]))
    assert apply_sets(CFG, ["rl.lr=3e-4"])["rl"]["lr"] == 3e-4 and "rl" not in CFG


def test_claims_replace_the_default_family():
    """A claims profile (tiny-long) without report.comparisons tests its claims only; declaring
    comparisons next to the claims keeps them."""
    assert declared(CFG) is not None and declared(CFG).focal == "cppo"
    assert declared(apply_sets(CFG, ["report.claims=true"])) is None
    both = declared(apply_sets(CFG, ["report.claims=true", "report.comparisons.against=[grpo]"]))
    assert both is not None and both.against == ("grpo",)


def _rec(method, rule, seed, chain_id, chain_ood, acc_hist):
    r = RunRecord(cell=Cell("fresh", method, rule, "s", seed), run_dir=Path("/nonexistent"))
    r.evals = {"chain_id": {"avg@4": chain_id}, "chain_ood": {"avg@4": chain_ood}}
    r.histories["eval/chain_id/greedy_acc"] = acc_hist
    r.done = {"step": 150}
    return r


def _records():
    ok = [(0, 0.9), (150, 0.88)]
    return [
        _rec("grpo", "ppo_clip", 1, 0.6, 0.2, ok),
        _rec("grpo", "ppo_clip", 2, 0.8, 0.4, ok),
        _rec("grpo", "ppo_clip", 3, 0.7, 0.3, [(0, 0.9), (150, 0.1)]),  # collapsed
        _rec("cppo", "cppo", 1, 0.9, 0.5, ok),
        _rec("cppo", "cppo", 2, 0.9, 0.5, ok),
        _rec("cppo", "cppo", 3, 0.9, math.nan, ok),  # OOD eval missing: excluded from that column
    ]


def test_cell_stats_on_hand_made_runs(tmp_path):
    stats = cell_stats(_records(), ["chain_id", "chain_ood"], "avg@4", "eval/chain_id/greedy_acc", n_boot=2000)
    idx = {(s.method, s.benchmark): s for s in stats}
    g = idx[("grpo", "mean")]
    assert g.values == pytest.approx([0.4, 0.6, 0.5])  # per-seed mean over benchmarks first
    assert g.mean == pytest.approx(0.5) and g.iqm == pytest.approx(0.5)
    assert g.lo < 0.5 < g.hi
    assert (g.n_collapsed, g.n_decided, g.n_runs) == (1, 3, 3)
    c = idx[("cppo", "chain_ood")]
    assert c.values == [0.5, 0.5] and c.seeds == [1, 2]
    assert idx[("cppo", "mean")].values == pytest.approx([0.7, 0.7])
    assert idx[("cppo", "mean")].n_collapsed == 0

    md = markdown(stats, ["chain_id", "chain_ood"], "avg@4", ["grpo", "cppo"], ["s"], ["fresh"])
    grpo_row = next(line for line in md.splitlines() if line.startswith("| grpo"))
    assert "50.0 [" in grpo_row and "| 1/3 |" in grpo_row
    assert "| cppo | 70.0 (n=2)" not in md  # two identical seeds still give a (zero-width) interval
    assert "70.0 [70.0, 70.0]" in md

    write_csv(stats, tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == 2 * 3
    row = next(r for r in rows if r["method"] == "grpo" and r["benchmark"] == "mean")
    assert float(row["mean"]) == pytest.approx(0.5) and row["collapsed"] == "1" and row["n_seeds"] == "3"


def test_best_checkpoint_is_one_step_per_seed_chosen_on_the_mean():
    r = _rec("cppo", "cppo", 1, 0.1, 0.1, [(0, 1), (9, 1)])
    r.histories["eval/chain_id/avg@4"] = [(0, 0.2), (10, 0.6), (20, 0.3)]
    r.histories["eval/chain_ood/avg@4"] = [(0, 0.2), (10, 0.2), (20, 0.5)]
    assert step_means(r, ["chain_id", "chain_ood"], "avg@4") == pytest.approx({0: 0.2, 10: 0.4, 20: 0.4})
    assert best_step(r, ["chain_id", "chain_ood"], "avg@4") == 10  # 10 and 20 tie at 0.4: the earlier one
    stats = cell_stats([r], ["chain_id", "chain_ood"], "avg@4", "x", best=True, n_boot=10)
    idx = {s.benchmark: s for s in stats}
    assert {s.checkpoint for s in stats} == {"best"}
    # every benchmark at the chosen step, so the mean column is the mean of the benchmark columns
    assert idx["chain_id"].mean == pytest.approx(0.6) and idx["chain_ood"].mean == pytest.approx(0.2)
    assert idx["mean"].mean == pytest.approx(0.4)  # not the mean of per-benchmark maxima (0.55)
    # the window ends at the horizon: a step past it is not a candidate
    r.histories["eval/chain_id/avg@4"].append((30, 0.9))
    r.histories["eval/chain_ood/avg@4"].append((30, 0.9))
    assert best_step(r, ["chain_id", "chain_ood"], "avg@4", horizon=20) == 10
    assert best_step(r, ["chain_id", "chain_ood"], "avg@4") == 30
    # a seed without evaluated steps has no best score (it is not replaced by its final one)
    bare = _rec("cppo", "cppo", 2, 0.7, 0.7, [(0, 1)])
    stats = cell_stats([r, bare], ["chain_id", "chain_ood"], "avg@4", "x", best=True, n_boot=10,
                       horizons={("fresh", "s"): 20})
    m = next(s for s in stats if s.benchmark == "mean")
    assert m.seeds == [1] and m.values == pytest.approx([0.4])


def test_best_and_final_tables_say_which_checkpoint(tmp_path):
    recs = _records()
    for r in recs:  # the final evaluation is also the last evaluated step
        r.histories["eval/chain_id/avg@4"] = [(0, 0.95), (150, r.evals["chain_id"]["avg@4"])]
        r.histories["eval/chain_ood/avg@4"] = [(0, 0.05), (150, r.evals["chain_ood"]["avg@4"])]
    final = cell_stats(recs, ["chain_id", "chain_ood"], "avg@4", "eval/chain_id/greedy_acc", n_boot=100)
    best = cell_stats(recs, ["chain_id", "chain_ood"], "avg@4", "eval/chain_id/greedy_acc", n_boot=100, best=True)
    md = markdown(best, ["chain_id", "chain_ood"], "avg@4", ["grpo", "cppo"], ["s"], ["fresh"])
    assert "best checkpoint" in md.splitlines()[0]
    assert "final checkpoint" in markdown(final, ["chain_id"], "avg@4", ["grpo"], ["s"], ["fresh"]).splitlines()[0]
    write_csv(best + final, tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert {r["checkpoint"] for r in rows} == {"best", "final"} and len(rows) == 2 * 2 * 3
    g = {r["checkpoint"]: r for r in rows if r["method"] == "grpo" and r["benchmark"] == "mean"}
    # grpo seeds' step means: step 0 = 0.5 each; step 150 = 0.4, 0.6, 0.5 -> best 0.5, 0.6, 0.5
    assert float(g["final"]["mean"]) == pytest.approx(0.5)
    assert float(g["best"]["mean"]) == pytest.approx((0.5 + 0.6 + 0.5) / 3)


def test_published_numbers_attach_to_matching_cells():
    pub = load_published(Path(__file__).resolve().parents[1] / "results" / "paper" / "table1.csv")
    assert pub[("cppo", "qwen317b", "mean")] == 31.88
    assert pub[("trmavg", "qwen330ba3bbase", "aime26")] == 55.41
    assert math.isnan(pub[("cispo", "qwen330ba3bbase", "mean")])  # "collapse"
    recs = [_rec("cppo", "cppo", 1, 0.3, 0.3, []), _rec("trm_max", "trm_max", 1, 0.2, 0.2, [])]
    for r in recs:
        r.cell = Cell("default", r.cell.method, r.cell.rule, "1.7b", 1)
    stats = cell_stats(recs, ["chain_id"], "avg@4", "x", n_boot=10)
    attach_published(stats, pub, {"1.7b": "Qwen3-1.7B"})
    got = {(s.method, s.benchmark): s.published for s in stats}
    assert got[("cppo", "mean")] == 31.88 and got[("trm_max", "mean")] == 25.21
    assert got[("cppo", "chain_id")] is None


def test_read_metrics_jsonl_and_eval_json(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 0, "eval/chain_id/greedy_acc": 0.8}\n{"step": 1, "rollout/reward_mean": 0.3, '
                 '"note": "x"}\n{"step": 2, "rollout/reward_mean": 0.5}\n{"step": 3, "rollout/rew')
    h = read_metrics_jsonl(f)
    assert h == {"eval/chain_id/greedy_acc": [(0, 0.8)], "rollout/reward_mean": [(1, 0.3), (2, 0.5)]}
    assert eval_metric({"avg@4": 0.5}, "b", "avg@4") == 0.5
    assert eval_metric({"metrics": {"avg@4": 0.25}}, "b", "avg@4") == 0.25
    assert eval_metric({"results": {"b": {"avg@4": 0.75}}}, "b", "avg@4") == 0.75
    assert eval_metric({"benchmarks": {"b": {"metrics": {"avg@4": 0.1}}}}, "b", "avg@4") == 0.1
    assert eval_metric({"results": {"other": {"avg@4": 0.75}}}, "b", "avg@4") is None


# ----------------------------------------------------------------------------- the pressure ladder
LADDER = {
    "profile": "lad", "task": {"name": "chain"}, "scales": {"s": {}},
    "rl": {"steps": 40}, "settings": {"onpolicy": {"updates_per_rollout": 1}, "upd8": {"updates_per_rollout": 8}},
    "methods": {"pg_is": {"rule": "pg_is"}, "cppo": {"rule": "cppo"}},
    "grid": {"methods": ["pg_is", "cppo"], "scales": ["s"], "seeds": [1, 2, 3], "settings": ["onpolicy", "upd8"],
             "reference": {"setting": "onpolicy", "method": "pg_is"}},
}


def _lrec(setting, method, seed, hist):
    r = RunRecord(cell=Cell(setting, method, method, "s", seed), run_dir=Path("/nonexistent"))
    r.histories["eval/chain_id/greedy_acc"] = hist
    return r


def test_reference_rung_is_trained_with_one_method():
    from cppo.report.grid import reference

    cs = cells(LADDER)
    assert [(c.setting, c.method) for c in cs if c.setting == "onpolicy"] == [("onpolicy", "pg_is")] * 3
    assert len([c for c in cs if c.setting == "upd8"]) == 6 and reference(LADDER) == ("onpolicy", "pg_is")
    with pytest.raises(ValueError, match="grid.reference.setting"):
        cells(apply_sets(LADDER, ["grid.reference.setting=fresh"]))


def test_stability_stats_frontier_and_summary(tmp_path):
    from cppo.report.plots import frontier_figure
    from cppo.report.summary import ladder_section
    from cppo.report.tables import stability_markdown, stability_stats

    flat = [(0, 0.4), (10, 0.4), (20, 0.4), (30, 0.4), (40, 0.4)]
    recs = [_lrec("onpolicy", "pg_is", k, flat) for k in (1, 2, 3)]
    recs += [_lrec("upd8", "pg_is", 1, [(0, 0.4), (10, 0.1), (20, 0.1), (30, 0.1), (40, 0.1)]),  # at 10
             _lrec("upd8", "pg_is", 2, [(0, 0.4), (10, 0.3), (20, 0.1), (30, 0.1), (40, 0.1)]),  # at 20
             _lrec("upd8", "pg_is", 3, [(0, 0.4), (10, 0.3), (20, 0.3), (30, 0.3), (40, 0.3)])]  # never
    recs += [_lrec("upd8", "cppo", k, flat) for k in (1, 2, 3)]
    H = {("onpolicy", "s"): 40, ("upd8", "s"): 40}
    stab = stability_stats(recs, "eval/chain_id/greedy_acc", 0.5, n_boot=2000, horizons=H)
    idx = {(c.setting, c.method, c.benchmark): c for c in stab}
    t = idx[("upd8", "pg_is", "time_to_collapse")]
    assert t.values == [10.0, 20.0, 40.0] and t.mean == pytest.approx(70 / 3)  # the third seed censored at H
    assert (t.n_collapsed, t.n_decided) == (2, 3)
    assert idx[("upd8", "pg_is", "auc")].values[0] == pytest.approx((10 * 0.25 + 30 * 0.1) / 40)
    assert idx[("upd8", "cppo", "time_to_collapse")].values == [40.0] * 3
    assert idx[("upd8", "cppo", "best")].mean == pytest.approx(0.4)
    assert idx[("upd8", "pg_is", "final")].values == pytest.approx([0.1, 0.1, 0.3])
    assert idx[("onpolicy", "pg_is", "auc")].n_collapsed == 0 and ("onpolicy", "cppo", "auc") not in idx

    md = stability_markdown(stab, ["pg_is", "cppo"], ["s"], ["onpolicy", "upd8"], "eval/chain_id/greedy_acc",
                            ("onpolicy", "pg_is"))
    assert "| onpolicy | pg_is (on-policy reference) | 0/3 |" in md and "| upd8 | pg_is | 2/3 | 23 [" in md
    text = "\n".join(ladder_section(stab, ["pg_is", "cppo"], ["s"], ["onpolicy", "upd8"], ("onpolicy", "pg_is"),
                                    "eval/chain_id/greedy_acc", H))
    assert "collapsed seeds pg_is 2/3, cppo 0/3" in text
    assert "separat" not in text and "AUC: pg_is 21.2% [" in text  # (0.1375 + 0.1875 + 0.3125) / 3, described, not ranked
    paths = frontier_figure(stab, ["pg_is", "cppo"], ["onpolicy", "upd8"], "s", tmp_path, ("onpolicy", "pg_is"), 40)
    assert [p.name for p in paths] == ["frontier_scale-s.png", "frontier_scale-s.svg"]
    assert all(p.stat().st_size > 5000 for p in paths)


# ----------------------------------------------------------------------------- the paper's claims (tiny-long)
def test_claims_roles_verdicts_and_table():
    from cppo.report.claims import claim_methods, claims_table, log_growth, paired, verdict
    from cppo.report.compare import adjust

    cfg = {"methods": {"dppo": {"rule": "dppo", "divergence": "binary_tv"},
                       "cppo": {"rule": "cppo", "divergence": "binary_tv"},
                       "no_w": {"rule": "cppo", "ablation": "no_position_weight"},
                       "kl": {"rule": "cppo", "divergence": "binary_kl", "delta": 0.1, "delta_b": 0.002},
                       "hmax": {"rule": "cppo", "horizon": "max"}},
           "grid": {"methods": ["dppo", "cppo", "no_w", "kl", "hmax"]}}
    assert claim_methods(cfg) == {"dppo": "dppo", "cppo": "cppo", "no_position_weight": "no_w", "kl": "kl",
                                  "horizon_max": "hmax"}
    c = paired({1: 0.5, 2: 0.7, 3: 0.6}, {1: 0.4, 2: 0.5, 9: 0.0})
    assert c.n_focal == 2 and c.diff == pytest.approx(0.15)  # the common seeds only
    [up] = adjust([paired({k: 1.0 + k for k in range(1, 9)}, {k: 0.0 for k in range(1, 9)})])
    [down] = adjust([paired({k: 0.0 for k in range(1, 9)}, {k: 1.0 + k for k in range(1, 9)})])
    assert up.p == pytest.approx(2 / 256) and verdict(up) == "holds" and verdict(down) == "does not hold"
    assert verdict(up, claimed_positive=False) == "does not hold"
    [few] = adjust([paired({1: 1.0, 2: 2.0, 3: 3.0}, {1: 0.0, 2: 0.0, 3: 0.0})])
    assert verdict(few).startswith("undecided (n = 3 pairs; no difference is detectable")

    def rec(method, seed, hist, div):
        r = _lrec("upd4", method, seed, hist)
        r.position_profile = {"div_mean": div, "masked_frac": [0.0] * len(div)}
        return r

    grow = [0.01, 0.01, 0.02, 0.02, 0.03, 0.03, 0.04, 0.04]  # last quarter / first quarter = 4
    falls = [(0, 0.4), (10, 0.1), (20, 0.1)]
    holds = [(0, 0.4), (10, 0.45), (20, 0.4)]
    seeds = range(1, 10)  # 9 pairs: a sign-flip test can reach 2/512, below 0.05 / 6 (the 6 claims with runs)
    recs = [rec("dppo", k, falls, [v * k for v in grow]) for k in seeds]
    recs += [rec("cppo", k, holds, grow) for k in seeds]
    recs += [rec("no_w", k, [(0, 0.4), (10, 0.4 - 0.01 * k), (20, 0.3)], grow) for k in seeds]
    logs = log_growth(recs, "upd4", "s", "dppo")
    assert sorted(logs) == list(seeds) and all(v == pytest.approx(math.log(4.0)) for v in logs.values())
    table = "\n".join(claims_table(cfg, recs, "upd4", "s", "eval/chain_id/greedy_acc", 0.5, 20))
    assert "| Per-token divergence D_t grows with the position in the response (Figure 2) |" in table
    assert "4.00× [4.00×, 4.00×] (n=9) | 0.004 | 0.023 | **holds** |" in table  # 2/512 × 6 (Holm)
    ttc = next(line for line in table.splitlines() if line.startswith("| CPPO collapses later than DPPO"))
    assert "+10 [+10, +10] (n=9)" in ttc and ttc.endswith("**holds** |")  # 20 (censored) − 10
    now = next(line for line in table.splitlines() if line.startswith("| Removing the position weight"))
    assert "| +5.0 pts [+5.0 pts, +5.0 pts] (n=9) |" in now and now.endswith("**holds** |")  # best 0.45 vs 0.40
    hmax = next(line for line in table.splitlines() if line.startswith("| (no claim)"))
    assert hmax.endswith("| – | **described (no claim)** |")
    # the same grid with 3 seeds cannot decide anything (a sign-flip test of 3 pairs has p >= 0.25)
    three = [r for r in recs if r.cell.seed <= 3]
    table = "\n".join(claims_table(cfg, three, "upd4", "s", "eval/chain_id/greedy_acc", 0.5, 20))
    assert "**holds**" not in table and table.count("**undecided (n = 3 pairs") == 6
    assert "**undecided (too few seeds)**" in table  # kl: no runs


def test_horizon_takes_the_per_model_steps_of_the_paper_profile():
    from cppo.config import read_profile
    from cppo.report.tables import horizon

    raw = read_profile(Path(__file__).resolve().parents[1] / "config" / "paper.yaml")
    # T_stop of Table 3, per model: the window of the best checkpoint
    assert [horizon(raw, "default", s) for s in ("1.7b", "1.7b-base", "8b-base", "30b-a3b-base")] == [1120, 680, 490, 560]
    tiny = read_profile(Path(__file__).resolve().parents[1] / "config" / "tiny.yaml")
    assert horizon(tiny, "upd8", "s") == 100 and horizon(tiny, "upd8", "m") == 60
