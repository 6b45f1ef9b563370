"""The declared comparisons of a grid, from its runs: per-seed values, the tested family, tables.

`report.comparisons` (resolved by `cppo.report.grid.declared`) names one primary measure and the
comparisons focal − other at each compared (setting, scale). Only that family gets verdicts
(`cppo.report.compare`: permutation test, Holm). The other measures are shown with the same
difference, interval and raw p-value as descriptive rows, with no verdict: testing them too would
enlarge the family the error rate is controlled over.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from cppo.report.collect import RunRecord
from cppo.report.compare import Comparison, adjust, compare, describe, fmt_p, fmt_value
from cppo.report.grid import Declared
from cppo.report.stats import run_stability

UNITS = {"time_to_collapse": "steps", "auc": "pts", "best": "pts", "final": "pts", "score": "pts"}
NAMES = {"time_to_collapse": "time to collapse", "auc": "AUC", "best": "best-in-run accuracy",
         "final": "final accuracy", "score": "final-checkpoint score"}


def per_seed(records: list[RunRecord], setting: str, scale: str, method: str, measure: str, *,
             collapse_metric: str, frac: float, horizon: int | None, benchmarks: list[str],
             metric: str) -> dict[int, float]:
    """seed -> the run's value of `measure` (runs without it are left out)."""
    from cppo.report.tables import _mean_score

    out: dict[int, float] = {}
    for r in records:
        if (r.cell.setting, r.cell.scale, r.cell.method) != (setting, scale, method):
            continue
        if measure == "score":
            v = _mean_score(r, benchmarks, metric) if benchmarks else math.nan
        else:
            h = r.histories.get(collapse_metric) or []
            v = run_stability(h, frac, horizon)[measure] if h else math.nan
        if math.isfinite(v):
            out[r.cell.seed] = v
    return out


def families(records: list[RunRecord], decl: Declared, scales: list[str], *, collapse_metric: str, frac: float,
             horizons: dict, benchmarks: list[str], metric: str,
             measures: tuple[str, ...] | None = None) -> dict[str, list[Comparison]]:
    """measure -> its comparisons over every compared (setting, scale); the primary one Holm-adjusted
    as one family, the others computed alike and labelled descriptive (no verdict)."""
    out: dict[str, list[Comparison]] = {}
    for measure in measures or (decl.primary,):
        fam = []
        for scale in scales:
            for setting in decl.settings:
                kw = dict(collapse_metric=collapse_metric, frac=frac, horizon=horizons.get((setting, scale)),
                          benchmarks=benchmarks, metric=metric)
                a = per_seed(records, setting, scale, decl.focal, measure, **kw)
                for i, other in enumerate(decl.against):
                    b = per_seed(records, setting, scale, other, measure, **kw)
                    fam.append(compare(a, b, paired=decl.paired, resamples=decl.resamples, seed=len(fam),
                                       setting=setting, scale=scale, measure=measure, focal=decl.focal, other=other))
        adjust(fam, decl.alpha, decl.resamples)
        if measure != decl.primary:
            for c in fam:
                c.verdict = "descriptive"
        out[measure] = fam
    return out


def _split(c: Comparison) -> str:
    a, b = c.halves
    unit = UNITS[c.measure]
    if not (math.isfinite(a) and math.isfinite(b)):
        return "–"
    agree = c.halves_agree
    return f"{fmt_value(a, unit)} / {fmt_value(b, unit)}: {'agree' if agree else 'disagree'} in sign"


def markdown_table(fam: list[Comparison], decl: Declared, primary: bool = True) -> list[str]:
    """Markdown rows of one measure's comparisons."""
    if not fam:
        return []
    n_col = "pairs" if decl.paired else "n (focal + other)"
    if primary:
        head = ["setting", "scale", "comparison", n_col, "difference [95% CI]", "p", "Holm p",
                "detectable (80% power)", "verdict", "split half (odd / even seeds)"]
    else:
        head = ["setting", "scale", "comparison", n_col, "difference [95% CI]", "p (unadjusted)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in fam:
        unit = UNITS[c.measure]
        n = str(c.n_focal) if decl.paired else f"{c.n_focal} + {c.n_other}"
        diff = f"{fmt_value(c.diff, unit)} [{fmt_value(c.lo, unit)}, {fmt_value(c.hi, unit)}]"
        row = [c.setting, c.scale, f"{c.focal} − {c.other}", n, diff, fmt_p(c.p)]
        if primary:
            row += [fmt_p(c.p_holm), fmt_value(c.mdd, unit, signed=False), f"**{describe(c, unit, decl.alpha)}**",
                    _split(c)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def section(fams: dict[str, list[Comparison]], decl: Declared, collapse_metric: str) -> list[str]:
    """summary.md's headline: what was declared, the verdicts, the split-half check, the other measures."""
    prim = fams.get(decl.primary) or []
    if not prim:
        return []
    m = sum(1 for c in prim if math.isfinite(c.p))
    test = "sign-flip permutation test of the paired differences" if decl.paired else \
        "permutation test of the difference of means (unpaired)"
    src = "" if decl.primary == "score" else f" of `{collapse_metric}`"
    out = ["## Declared comparisons: the verdicts", "",
           f"Declared before the runs (`report.comparisons`): **{decl.focal}** against "
           f"{', '.join(decl.against)}, on the primary measure **{NAMES[decl.primary]}**{src}, at "
           f"{', '.join(f'`{s}`' for s in decl.settings)}. The family of {m} comparisons is tested with a two-sided "
           f"{test} (exact when the rearrangements are at most {decl.resamples}, Monte Carlo otherwise) and "
           f"Holm's adjustment at a family-wise error rate of {decl.alpha:g}. The interval is a 95% percentile "
           "bootstrap of the difference; it describes the size, the verdict comes from the Holm p. "
           "*Detectable* is the true difference this grid would decide with 80% power "
           f"(at {decl.alpha:g}/{m}, from the observed SDs). *Split half*: the same difference on the odd and on "
           "the even seeds, a replication inside the grid.", ""]
    out += markdown_table(prim, decl) + [""]
    decided = [c for c in prim if c.decided]
    split = [c for c in decided if c.halves_agree is False]
    out.append(f"{len(decided)} of {len(prim)} comparisons decided"
               + (f"; the split halves disagree in sign for {', '.join(f'{c.focal} − {c.other} (`{c.setting}`)' for c in split)}"
                  if split else (", and every decided one has split halves that agree in sign" if decided else ""))
               + ".")
    out.append("")
    others = [k for k in fams if k != decl.primary]
    if others:
        out += ["Other measures, the same comparisons, **descriptive** (unadjusted p, no verdict: only the primary "
                "measure was declared):", ""]
        for k in others:
            out += [f"*{NAMES[k]}*:", ""] + markdown_table(fams[k], decl, primary=False) + [""]
    return out


def write_csv(fams: dict[str, list[Comparison]], path: Path) -> None:
    cols = ["measure", "role", "setting", "scale", "focal", "other", "paired", "n_focal", "n_other", "diff",
            "ci95_lo", "ci95_hi", "p", "p_holm", "family", "mdd80", "verdict", "half_odd", "half_even"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for measure, fam in fams.items():
            for c in fam:
                w.writerow([measure, "primary" if c.verdict != "descriptive" else "descriptive", c.setting, c.scale,
                            c.focal, c.other, c.paired, c.n_focal, c.n_other,
                            *(f"{v:.6g}" if math.isfinite(v) else ("inf" if v == math.inf else "")
                              for v in (c.diff, c.lo, c.hi, c.p, c.p_holm)),
                            c.family, f"{c.mdd:.6g}" if math.isfinite(c.mdd) else "inf", c.verdict,
                            *(f"{v:.6g}" if math.isfinite(v) else "" for v in c.halves)])
