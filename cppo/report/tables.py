"""The comparison table in the paper's layout: methods × scales, per benchmark and their mean.

Each cell aggregates over seeds: mean with a 95% bootstrap CI, the IQM and the number of collapsed
seeds. Per seed the score of a benchmark is the headline metric (e.g. avg@4) of one checkpoint:
- **final**: the final checkpoint;
- **best** (profiles with `eval.every`): the evaluated checkpoint within [0, T_stop] whose mean over
  the benchmarks is highest, as the paper reports; each benchmark's value is taken at that same step
  (so the mean column is the mean of the benchmark columns). Selecting on the test benchmarks
  themselves makes this an optimistic estimate.
The "mean" column is the unweighted mean over benchmarks, per seed, before the statistics (as the
paper averages AIME24/25/26).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from cppo.report.collect import RunRecord
from cppo.report.stats import bootstrap_ci, collapsed, iqm, run_stability


@dataclass
class CellStats:
    setting: str
    method: str
    rule: str
    scale: str
    benchmark: str
    """a benchmark name, "mean" (over benchmarks), or a stability measure (`STABILITY`)"""
    values: list[float] = field(default_factory=list)
    """per-seed scores (finished runs with an evaluation)"""
    seeds: list[int] = field(default_factory=list)
    mean: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    iqm: float = math.nan
    n_collapsed: int = 0
    n_decided: int = 0
    """seeds whose collapse could be decided"""
    n_runs: int = 0
    """seeds in the grid"""
    published: float | None = None
    checkpoint: str = ""
    """which checkpoint per seed: "final" or "best" (in the window); "" for stability measures"""


CHECKPOINTS = {
    "best": "best checkpoint within [0, T_stop] (per seed, the evaluated step with the highest mean over "
            "the benchmarks, chosen on the test benchmarks themselves, as in the paper)",
    "final": "final checkpoint",
}
"""The two per-seed checkpoint selections of the score table."""


def step_means(rec: RunRecord, benchmarks: list[str], metric: str,
               horizon: int | None = None) -> dict[int, float]:
    """step -> mean of `metric` over the benchmarks, for the evaluated steps in [0, horizon] at which
    every benchmark was evaluated (from the `eval/<benchmark>/<metric>` histories)."""
    hists = [dict(rec.histories.get(f"eval/{b}/{metric}") or []) for b in benchmarks]
    common = set.intersection(*(set(h) for h in hists)) if hists else set()
    return {s: sum(h[s] for h in hists) / len(hists) for s in sorted(common) if horizon is None or s <= horizon}


def best_step(rec: RunRecord, benchmarks: list[str], metric: str, horizon: int | None = None) -> int | None:
    """The evaluated step in [0, horizon] with the highest mean over the benchmarks (earliest on ties)."""
    means = step_means(rec, benchmarks, metric, horizon)
    return max(means, key=lambda s: (means[s], -s)) if means else None


def _score(rec: RunRecord, benchmark: str, metric: str, step: int | None = None) -> float:
    """`metric` of `benchmark` at `step` (from its history), or of the final evaluation when step is None."""
    if step is not None:
        v = dict(rec.histories.get(f"eval/{benchmark}/{metric}") or []).get(step)
    else:
        v = rec.evals.get(benchmark, {}).get(metric)
    return math.nan if v is None else float(v)


def _mean_score(rec: RunRecord, benchmarks: list[str], metric: str, step: int | None = None) -> float:
    vals = [_score(rec, b, metric, step) for b in benchmarks]
    return sum(vals) / len(vals) if vals and all(math.isfinite(v) for v in vals) else math.nan


def horizon(cfg: dict, setting: str, scale: str) -> int | None:
    """The planned rollout steps (T_stop) of a (setting, scale) run: `rl.steps`, then `scales.<s>.rl.steps`
    (the paper profile's per-model values), then the setting's, as the run resolves them."""
    from cppo.config import RLConfig

    per_scale = ((cfg.get("scales") or {}).get(scale) or {}).get("rl") or {}
    steps = {**(cfg.get("rl") or {}), **per_scale,
             **((cfg.get("settings") or {}).get(setting) or {})}.get("steps", RLConfig.steps)
    if isinstance(steps, dict):
        steps = steps.get(scale)
    return None if steps is None else int(steps)


def _groups(records: list[RunRecord]) -> dict[tuple[str, str, str, str], list[RunRecord]]:
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.cell.setting, r.cell.method, r.cell.rule, r.cell.scale), []).append(r)
    return groups


def _collapse_counts(recs: list[RunRecord], collapse_metric: str, frac: float, horizons: dict) -> tuple[int, int]:
    """(collapsed, decided) seeds of a cell (first fall below frac × the step-0 value, `stats.collapsed`)."""
    flags = [collapsed(r.histories.get(collapse_metric) or [], frac, horizons.get((r.cell.setting, r.cell.scale)))
             for r in recs]
    return sum(1 for f in flags if f), sum(1 for f in flags if f is not None)


def cell_stats(records: list[RunRecord], benchmarks: list[str], metric: str, collapse_metric: str,
               collapse_frac: float = 0.5, n_boot: int = 10_000, best: bool = False,
               horizons: dict[tuple[str, str], int | None] | None = None) -> list[CellStats]:
    """Statistics per (setting, method, scale) × (each benchmark, "mean"), of the final checkpoint or,
    with `best`, of each seed's best evaluated checkpoint within [0, horizon] (`best_step`).

    `horizons`: (setting, scale) -> planned steps, the censoring horizon of the collapse test and the
    end of the window of `best` (default: each run's last logged step)."""
    horizons = horizons or {}
    out = []
    for (setting, method, rule, scale), recs in _groups(records).items():
        n_col, n_dec = _collapse_counts(recs, collapse_metric, collapse_frac, horizons)
        # best: one step per seed, chosen on the mean; a seed without evaluated steps has no best score
        steps = {id(r): best_step(r, benchmarks, metric, horizons.get((setting, scale))) for r in recs} if best else {}
        for b in [*benchmarks, "mean"]:
            cs = CellStats(setting, method, rule, scale, b, n_collapsed=n_col, n_decided=n_dec, n_runs=len(recs),
                           checkpoint="best" if best else "final")
            for r in recs:
                step = steps.get(id(r))
                if best and step is None:
                    continue
                v = _mean_score(r, benchmarks, metric, step) if b == "mean" else _score(r, b, metric, step)
                if math.isfinite(v):
                    cs.values.append(v)
                    cs.seeds.append(r.cell.seed)
            cs.mean, cs.lo, cs.hi = bootstrap_ci(cs.values, n_boot=n_boot)
            cs.iqm = iqm(cs.values)
            out.append(cs)
    return out


STABILITY = {
    "time_to_collapse": "restricted mean time to collapse (steps; censored at the horizon)",
    "auc": "area under the accuracy curve / horizon",
    "best": "best-in-run accuracy",
    "final": "final accuracy",
}
"""Stability measures of a cell, from the trainer's periodic evaluations of the collapse metric."""


def stability_stats(records: list[RunRecord], collapse_metric: str, collapse_frac: float = 0.5,
                    n_boot: int = 10_000, horizons: dict[tuple[str, str], int | None] | None = None) -> list[CellStats]:
    """Per (setting, method, scale) × STABILITY measure: the per-seed values, bootstrap CI and IQM.

    Per seed (`cppo.report.stats`): time to collapse (censored at the horizon), the normalised area
    under the `collapse_metric` curve, its best and its final value. Seeds whose collapse is
    undecidable (no step-0 value, or 0 there) count in neither `n_collapsed` nor `n_decided`.
    """
    horizons = horizons or {}
    out = []
    for (setting, method, rule, scale), recs in _groups(records).items():
        H = horizons.get((setting, scale))
        n_col, n_dec = _collapse_counts(recs, collapse_metric, collapse_frac, horizons)
        cells = {k: CellStats(setting, method, rule, scale, k, n_collapsed=n_col, n_decided=n_dec, n_runs=len(recs))
                 for k in STABILITY}
        for r in recs:
            hist = r.histories.get(collapse_metric) or []
            if not hist:
                continue
            for k, v in run_stability(hist, collapse_frac, H).items():
                if math.isfinite(v):
                    cells[k].values.append(v)
                    cells[k].seeds.append(r.cell.seed)
        for cs in cells.values():
            cs.mean, cs.lo, cs.hi = bootstrap_ci(cs.values, n_boot=n_boot)
            cs.iqm = iqm(cs.values)
            out.append(cs)
    return out


def stability_markdown(stats: list[CellStats], methods: list[str], scales: list[str], settings: list[str],
                       collapse_metric: str, reference: tuple[str, str] | None = None) -> str:
    """One table per scale: rows = rung (setting) × method; columns = collapsed seeds and STABILITY."""
    idx = {(s.setting, s.method, s.scale, s.benchmark): s for s in stats}
    lines = []
    for sc in scales:
        lines += [f"### Scale `{sc}`: stability of `{collapse_metric}` (mean [95% CI] over seeds; IQM)", "",
                  "| setting | method | collapsed | " + " | ".join(STABILITY.values()) + " |",
                  "|---|---|---|" + "---|" * len(STABILITY)]
        for setting in settings:
            ms = [reference[1]] if reference and setting == reference[0] else methods
            for m in ms:
                first = idx.get((setting, m, sc, "auc"))
                if first is None:
                    continue
                row = [setting, m + (" (on-policy reference)" if reference and setting == reference[0] else ""),
                       f"{first.n_collapsed}/{first.n_decided}" if first.n_decided else "–"]
                for k in STABILITY:
                    c = idx[(setting, m, sc, k)]
                    f = _fmt_steps if k == "time_to_collapse" else (lambda v: _fmt(v, True))
                    row.append(f"{_fmt_ci(c, fmt=f)}; {f(c.iqm)}")
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt_steps(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.0f}"


# ----------------------------------------------------------------------------- published numbers
def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def load_published(path: Path | str) -> dict[tuple[str, str, str], float]:
    """results/paper/table1.csv -> {(method, model, benchmark): value} (normalised names)."""
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for b in ("aime24", "aime25", "aime26", "mean"):
                v = (row.get(b) or "").strip()
                if v and v.lower() != "collapse":
                    out[(_norm(row["method"]), _norm(row["model"]), b)] = float(v)
                elif v.lower() == "collapse":
                    out[(_norm(row["method"]), _norm(row["model"]), b)] = math.nan
    return out


def attach_published(stats: list[CellStats], published: dict, scale_to_model: dict[str, str],
                     method_to_published: dict[str, str] | None = None) -> None:
    """Set `published` on cells whose (method, scale's model, benchmark) appears in the paper."""
    aliases = {"grpo": "grpo", **(method_to_published or {})}
    for s in stats:
        model = scale_to_model.get(s.scale)
        if model is None:
            continue
        key = (_norm(aliases.get(s.method, s.method)), _norm(model), s.benchmark)
        if key in published:
            s.published = published[key]


# ----------------------------------------------------------------------------- writing
def _fmt(v: float, pct: bool) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _fmt_ci(s: CellStats, pct: bool = True, fmt=None) -> str:
    """`mean [lo, hi]` of a cell, each value written by `fmt` (default `_fmt(v, pct)`)."""
    f = fmt or (lambda v: _fmt(v, pct))
    if not s.values:
        return "–"
    if math.isnan(s.lo):
        return f"{f(s.mean)} (n={len(s.values)})"
    return f"{f(s.mean)} [{f(s.lo)}, {f(s.hi)}]"


def write_csv(stats: list[CellStats], path: Path) -> None:
    """One row per cell; a `checkpoint` column (final / best) when the cells have one."""
    with_ckpt = any(s.checkpoint for s in stats)
    cols = ["setting", "method", "rule", "scale", *(["checkpoint"] if with_ckpt else []), "benchmark", "n_seeds",
            "mean", "ci95_lo", "ci95_hi", "iqm", "collapsed", "collapse_decided", "n_runs", "seed_values", "published"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for s in stats:
            w.writerow([s.setting, s.method, s.rule, s.scale, *([s.checkpoint] if with_ckpt else []), s.benchmark,
                        len(s.values),
                        *(f"{v:.6g}" if math.isfinite(v) else "" for v in (s.mean, s.lo, s.hi, s.iqm)),
                        s.n_collapsed, s.n_decided, s.n_runs,
                        json.dumps(dict(zip(s.seeds, (round(v, 6) for v in s.values)))),
                        "" if s.published is None else ("collapse" if math.isnan(s.published) else s.published)])


def read_csv(path: Path) -> list[CellStats]:
    """The cells of a `write_csv` file (per-seed values included), for re-making text without the runs."""
    out = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            vals = {int(k): float(v) for k, v in json.loads(r["seed_values"] or "{}").items()}
            num = lambda k: float(r[k]) if r.get(k) not in (None, "") else math.nan  # noqa: E731
            out.append(CellStats(r["setting"], r["method"], r["rule"], r["scale"], r["benchmark"],
                                 values=list(vals.values()), seeds=list(vals), mean=num("mean"), lo=num("ci95_lo"),
                                 hi=num("ci95_hi"), iqm=num("iqm"), n_collapsed=int(r["collapsed"] or 0),
                                 n_decided=int(r["collapse_decided"] or 0), n_runs=int(r["n_runs"] or 0),
                                 checkpoint=r.get("checkpoint", "")))
    return out


def markdown(stats: list[CellStats], benchmarks: list[str], metric: str, methods: list[str], scales: list[str],
             settings: list[str], pct: bool = True) -> str:
    """Markdown tables: per setting, the headline (mean over benchmarks) and per-benchmark tables, of
    one checkpoint selection (the cells' `checkpoint`, named in every heading)."""
    idx = {(s.setting, s.method, s.scale, s.benchmark): s for s in stats}
    unit = " (%)" if pct else ""
    has_pub = any(s.published is not None for s in stats)
    which = next((s.checkpoint for s in stats if s.checkpoint), "final")
    lines = []
    for setting in settings:
        lines += [f"### Setting `{setting}`: mean of {', '.join(benchmarks)} ({metric}{unit}), {which} checkpoint", ""]
        head = ["method"]
        for sc in scales:
            head += [f"{sc}: mean [95% CI]", f"{sc}: IQM", f"{sc}: collapsed"] + ([f"{sc}: paper"] if has_pub else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in methods:
            if not any((setting, m, sc, "mean") in idx for sc in scales):
                continue  # e.g. the on-policy reference rung, trained with one method only
            row = [m]
            for sc in scales:
                s = idx.get((setting, m, sc, "mean"))
                if s is None:
                    row += ["–", "–", "–"] + (["–"] if has_pub else [])
                    continue
                row += [_fmt_ci(s, pct), _fmt(s.iqm, pct), f"{s.n_collapsed}/{s.n_decided}" if s.n_decided else "–"]
                if has_pub:
                    row.append("–" if s.published is None else
                               ("collapse" if math.isnan(s.published) else f"{s.published:.2f}"))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if len(benchmarks) > 1:
            lines += [f"Per benchmark ({metric}{unit}, mean [95% CI] over seeds):", ""]
            head = ["method"] + [f"{sc}: {b}" for sc in scales for b in benchmarks]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for m in methods:
                row = [m]
                for sc in scales:
                    for b in benchmarks:
                        s = idx.get((setting, m, sc, b))
                        row.append("–" if s is None else _fmt_ci(s, pct))
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    return "\n".join(lines)
