"""The comparison table in the paper's layout: methods × scales, per benchmark and their mean.

Each cell aggregates over seeds: mean with a 95% bootstrap CI, the IQM and the number of collapsed
seeds. Per seed the score of a benchmark is the final evaluation's headline metric (e.g. avg@4)
or, with `report.best_within_steps`, the best evaluated step (the paper reports the best mean
within [0, T_stop]); the "mean" column is the unweighted mean over benchmarks, per seed, before
the statistics (as the paper averages AIME24/25/26).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from cppo.report.collect import RunRecord
from cppo.report.stats import bootstrap_ci, collapsed, iqm


@dataclass
class CellStats:
    setting: str
    method: str
    rule: str
    scale: str
    benchmark: str
    """a benchmark name or "mean" (over benchmarks)"""
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


def _score(rec: RunRecord, benchmark: str, metric: str, best: bool) -> float:
    if best:
        hist = rec.histories.get(f"eval/{benchmark}/{metric}")
        if hist:
            return max(v for _, v in hist)
    v = rec.evals.get(benchmark, {}).get(metric)
    return math.nan if v is None else float(v)


def _mean_score(rec: RunRecord, benchmarks: list[str], metric: str, best: bool) -> float:
    if best:  # best step of the mean over benchmarks (steps where every benchmark was evaluated)
        hists = [dict(rec.histories.get(f"eval/{b}/{metric}") or []) for b in benchmarks]
        common = set.intersection(*(set(h) for h in hists)) if hists else set()
        if common:
            return max(sum(h[s] for h in hists) / len(hists) for s in common)
    vals = [_score(rec, b, metric, False) for b in benchmarks]
    return sum(vals) / len(vals) if vals and all(math.isfinite(v) for v in vals) else math.nan


def cell_stats(records: list[RunRecord], benchmarks: list[str], metric: str, collapse_metric: str,
               collapse_frac: float = 0.5, n_boot: int = 10_000, best: bool = False) -> list[CellStats]:
    """Statistics per (setting, method, scale) × (each benchmark, "mean")."""
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.cell.setting, r.cell.method, r.cell.rule, r.cell.scale), []).append(r)
    out = []
    for (setting, method, rule, scale), recs in groups.items():
        flags = [collapsed(r.histories.get(collapse_metric) or [], collapse_frac) for r in recs]
        n_col = sum(1 for f in flags if f)
        n_dec = sum(1 for f in flags if f is not None)
        for b in [*benchmarks, "mean"]:
            cs = CellStats(setting, method, rule, scale, b, n_collapsed=n_col, n_decided=n_dec, n_runs=len(recs))
            for r in recs:
                v = _mean_score(r, benchmarks, metric, best) if b == "mean" else _score(r, b, metric, best)
                if math.isfinite(v):
                    cs.values.append(v)
                    cs.seeds.append(r.cell.seed)
            cs.mean, cs.lo, cs.hi = bootstrap_ci(cs.values, n_boot=n_boot)
            cs.iqm = iqm(cs.values)
            out.append(cs)
    return out


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


def _fmt_ci(s: CellStats, pct: bool) -> str:
    if not s.values:
        return "–"
    if math.isnan(s.lo):
        return f"{_fmt(s.mean, pct)} (n={len(s.values)})"
    return f"{_fmt(s.mean, pct)} [{_fmt(s.lo, pct)}, {_fmt(s.hi, pct)}]"


def write_csv(stats: list[CellStats], path: Path) -> None:
    cols = ["setting", "method", "rule", "scale", "benchmark", "n_seeds", "mean", "ci95_lo", "ci95_hi", "iqm",
            "collapsed", "collapse_decided", "n_runs", "seed_values", "published"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for s in stats:
            w.writerow([s.setting, s.method, s.rule, s.scale, s.benchmark, len(s.values),
                        *(f"{v:.6g}" if math.isfinite(v) else "" for v in (s.mean, s.lo, s.hi, s.iqm)),
                        s.n_collapsed, s.n_decided, s.n_runs,
                        json.dumps(dict(zip(s.seeds, (round(v, 6) for v in s.values)))),
                        "" if s.published is None else ("collapse" if math.isnan(s.published) else s.published)])


def markdown(stats: list[CellStats], benchmarks: list[str], metric: str, methods: list[str], scales: list[str],
             settings: list[str], pct: bool = True) -> str:
    """Markdown tables: per setting, the headline (mean over benchmarks) and per-benchmark tables."""
    idx = {(s.setting, s.method, s.scale, s.benchmark): s for s in stats}
    unit = " (%)" if pct else ""
    has_pub = any(s.published is not None for s in stats)
    lines = []
    for setting in settings:
        lines += [f"### Setting `{setting}`: mean of {', '.join(benchmarks)} ({metric}{unit})", ""]
        head = ["method"]
        for sc in scales:
            head += [f"{sc}: mean [95% CI]", f"{sc}: IQM", f"{sc}: collapsed"] + ([f"{sc}: paper"] if has_pub else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in methods:
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
