"""summary.md: what the grid shows, in sentences with the numbers, and what it does not show.

The statements are generated from the statistics, not written by hand, so they stay true when the
grid is re-run: a difference between methods is claimed only by a declared comparison (a test of
the difference, Holm-adjusted: `cppo.report.verdicts`), never from overlapping intervals; collapse
counts are given per method, and the mask rates and divergences come from the runs' own diagnostics.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np

from cppo.report.collect import RunRecord
from cppo.report.host import host_line
from cppo.report.stats import bootstrap_ci
from cppo.report.tables import CellStats


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def _dur(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def run_mean(rec: RunRecord, key: str) -> float:
    """Mean of a metric over a run's logged steps (nan when absent)."""
    vals = [v for _, v in rec.histories.get(key) or [] if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _ci(c: CellStats, steps: bool = False) -> str:
    f = (lambda v: "–" if not math.isfinite(v) else f"{v:.0f}") if steps else _pct
    if not c.values:
        return "–"
    return f"{f(c.mean)}" + ("" if math.isnan(c.lo) else f" [{f(c.lo)}, {f(c.hi)}]")


def ladder_section(stab: list[CellStats], methods: list[str], scales: list[str], settings: list[str],
                   reference: tuple[str, str] | None, collapse_metric: str, horizons: dict) -> list[str]:
    """Per setting × scale: collapse counts and each method's stability measures, described, not ranked.

    No verdict is drawn here: differences between methods are claimed only by the declared
    comparisons (`report.comparisons`, the section above), which test the difference itself."""
    idx = {(c.setting, c.method, c.scale, c.benchmark): c for c in stab}
    out = ["## Stability per setting (descriptive)", "",
           f"Per seed, from the trainer's evaluations of `{collapse_metric}` (every `rl.eval_every` steps): "
           "time to collapse (censored at the horizon; the mean over seeds is the restricted mean), the area "
           "under the curve divided by the horizon (AUC), and the final value; each cell is the mean over seeds "
           "with its own 95% bootstrap interval. These marginal intervals describe each method alone: whether two "
           "of them overlap is not a test of their difference, and no ranking is read from them.", ""]
    for scale in scales:
        for setting in settings:
            H = horizons.get((setting, scale))
            if reference and setting == reference[0]:
                c = idx.get((setting, reference[1], scale, "auc"))
                if c is None or not c.values:
                    continue
                f = idx[(setting, reference[1], scale, "final")]
                out.append(f"- `{setting}` / `{scale}` (on-policy reference, {reference[1]} standing for every "
                           f"rule): collapsed {c.n_collapsed}/{c.n_decided}; AUC {_ci(c)}, final {_ci(f)}.")
                continue
            cells = {m: idx.get((setting, m, scale, "auc")) for m in methods}
            cells = {m: c for m, c in cells.items() if c is not None and c.values}
            if not cells:
                continue
            col = ", ".join(f"{m} {c.n_collapsed}/{c.n_decided}" for m, c in cells.items())
            text = f"- `{setting}` / `{scale}` (horizon {H} steps, {max(len(c.values) for c in cells.values())} seeds): " \
                   f"collapsed seeds {col}."
            for key, name, steps in (("auc", "AUC", False), ("time_to_collapse", "time to collapse", True)):
                order = ", ".join(f"{m} {_ci(idx[(setting, m, scale, key)], steps)}" for m in cells)
                text += f" {name}: {order}."
            out.append(text)
    out.append("")
    return out


def score_lines(stats: list[CellStats], methods: list[str], scales: list[str], settings: list[str],
                reference: tuple[str, str] | None) -> list[str]:
    """Per setting × scale: each method's mean score with its own interval, and collapses (no ranking)."""
    idx = {(s.setting, s.method, s.scale, s.benchmark): s for s in stats}
    lines = []
    for setting in settings:
        for scale in scales:
            cells = [idx[(setting, m, scale, "mean")] for m in methods if (setting, m, scale, "mean") in idx]
            cells = [c for c in cells if c.values]
            if not cells:
                lines.append(f"- `{setting}` / scale `{scale}`: no evaluated runs.")
                continue
            what = " (the on-policy reference)" if reference and setting == reference[0] else ""
            text = (f"- `{setting}` / scale `{scale}`{what}: mean score " +
                    ", ".join(f"{c.method} {_ci(c)} (n={len(c.values)})" for c in cells) + ".")
            col = [f"{c.method} {c.n_collapsed}/{c.n_decided}" for c in cells if c.n_collapsed]
            text += (" Collapsed seeds: " + ", ".join(col) + ".") if col else " No seed collapsed."
            lines.append(text)
    return lines


def selection_lines(best: list[CellStats], final: list[CellStats], records: list[RunRecord],
                    benchmarks: list[str], metric: str, every: int, horizons: dict) -> list[str]:
    """What choosing the best checkpoint per seed does: the paper's selection, and by how much it raises
    the score over the final checkpoint here (paired per seed)."""
    from cppo.report.tables import best_step, step_means

    fin = {(c.setting, c.method, c.scale): dict(zip(c.seeds, c.values)) for c in final if c.benchmark == "mean"}
    gains, at_final, at_start, n_steps, floors = [], 0, 0, [], {}
    for c in best:
        if c.benchmark != "mean":
            continue
        f = fin.get((c.setting, c.method, c.scale), {})
        gains += [v - f[sd] for sd, v in zip(c.seeds, c.values) if sd in f]
    for r in records:
        H = horizons.get((r.cell.setting, r.cell.scale))
        means = step_means(r, benchmarks, metric, H)
        if 0 in means:
            floors.setdefault(r.cell.scale, set()).add(round(means[0], 6))
        if means:
            n_steps.append(len(means))
            b = best_step(r, benchmarks, metric, H)
            at_final += b == max(means)
            at_start += b == min(means)
    out = ["## Checkpoint selection: best in the window and final", "",
           f"Every run is evaluated at step 0 and every {every} steps up to its final step (`eval.every`), with the "
           f"same `cppo eval` settings as the final checkpoint. The **best** score of a seed is its highest mean "
           f"`{metric}` over those checkpoints: this is what the paper reports (the best mean within [0, T_stop]). "
           "The checkpoint is chosen on the test benchmarks themselves, with no held-out selection set, so the "
           "best score is **optimistically biased**: it picks up evaluation noise as well as real peaks, and the "
           "more checkpoints are evaluated, the larger that bias. The **final** score has no selection. Both are "
           "in `table.md` and `table.csv` (column `checkpoint`)."]
    if gains:
        m, lo, hi = bootstrap_ci(gains, n_boot=2000)
        out.append("")
        out.append(f"Here the best score exceeds the final one by {100 * m:.1f} points on average over "
                   f"{len(gains)} runs (paired, 95% CI [{100 * lo:.1f}, {100 * hi:.1f}]; largest {100 * max(gains):.1f}). "
                   "That gap mixes the selection bias with real decline after a peak (a collapse), so it is not "
                   f"the size of the bias. {at_final} of {len(n_steps)} runs have their best at the final checkpoint "
                   f"and {at_start} at step 0; {int(np.median(n_steps)) if n_steps else 0} checkpoints per run (median).")
        one = {sc: next(iter(v)) for sc, v in floors.items() if len(v) == 1}
        if one:
            out.append("")
            out.append("Every run of a scale starts from the same checkpoint and is scored with the same evaluation "
                       "seed, so its step-0 score (" + ", ".join(f"{100 * v:.1f}% at `{sc}`" for sc, v in one.items())
                       + ") is a floor for every best score: a run that never beats its start scores exactly that, "
                       "and methods that collapse all tie there. On the best table a collapse is invisible; the "
                       "final table and the stability measures show it.")
    out.append("")
    return out


def not_shown(cfg: dict, settings: list[str], with_stability: bool) -> list[str]:
    """The summary's "What it does not show" section."""
    lines = ["## What it does not show", "",
             f"- {len(cfg['grid']['seeds'])} seeds per cell. An *undecided* comparison is not evidence of equality: "
             "its *detectable* column says how large a difference the grid could have missed. Differences on "
             "measures other than the declared primary one are descriptive.",
             "- These are tiny from-scratch models on a synthetic task, CPU-sized: they test whether the rules "
             "behave as the paper says under off-policy pressure (stability, masking), not the paper's AIME "
             "numbers." if cfg.get("task", {}).get("name") == "chain" else
             "- Scores are single evaluations of one checkpoint per seed (final, or the best in the window).",
             "- The settings change two things at once (staleness and gradient clipping, as the trainer issue "
             "specifies), so a difference between settings cannot be attributed to either alone."
             if {"fresh", "stale"} <= set(settings) else None,
             "- Time to collapse is known only to the evaluation interval, and a restricted mean cannot exceed the "
             "horizon: a method that never collapses and one that collapses just after the horizon look alike."
             if with_stability else None,
             ""]
    return [line for line in lines if line is not None]


def write_summary(cfg: dict, records: list[RunRecord], stats: list[CellStats], *, metric: str,
                  benchmarks: list[str], collapse_metric: str, collapse_frac: float, methods: list[str],
                  scales: list[str], settings: list[str], wall_s: float | None, provenance: dict,
                  figures: list[str], stab: list[CellStats] | None = None,
                  reference: tuple[str, str] | None = None, horizons: dict | None = None,
                  notes: list[str] | None = None, headline: list[str] | None = None,
                  best: list[CellStats] | None = None) -> str:
    profile = cfg["profile"]
    grid = cfg["grid"]
    n_total = len(records)
    n_done = sum(r.finished for r in records)
    n_eval = sum(1 for r in records if all(metric in r.evals.get(b, {}) for b in benchmarks))
    lines = [f"# Profile `{profile}`: summary", "",
             f"Generated by `cppo report` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit "
             f"`{provenance.get('git_commit', 'unknown')[:10]}`"
             f"{' (uncommitted changes)' if provenance.get('git_dirty') == 'true' else ''}.", "",
             host_line(provenance), "",
             *(headline or []),
             "## Grid and cost", "",
             f"- {len(methods)} methods ({', '.join(methods)}) × {len(scales)} scales ({', '.join(scales)}) × "
             f"{len(grid['seeds'])} seeds × {len(settings)} settings ({', '.join(settings)})"
             + (f", the on-policy rung `{reference[0]}` trained with {reference[1]} only" if reference else "")
             + f" = {n_total} runs; {n_done} finished, {n_eval} evaluated on {', '.join(benchmarks) or 'nothing'}.",
             f"- Pipeline wall time (first job start → last run evaluated): **{_dur(wall_s)}**."]
    commits = defaultdict(int)
    for r in records:
        if r.git_commit:
            commits[r.git_commit[:10]] += 1
    if commits:
        lines.append("- Runs trained at commit " + ", ".join(f"`{c}` ({n} runs)" for c, n in commits.items()) + ".")
    durs = [(r.end_ms - r.start_ms) / 1000 for r in records if r.start_ms and r.end_ms and r.end_ms > r.start_ms]
    if durs:
        by_scale = defaultdict(list)
        for r in records:
            if r.start_ms and r.end_ms and r.end_ms > r.start_ms:
                by_scale[r.cell.scale].append((r.end_ms - r.start_ms) / 1000)
        per = ", ".join(f"{s}: {np.mean(v):.0f} s" for s, v in sorted(by_scale.items()))
        lines.append(f"- RL run time (MLflow start → end, one thread each): mean per run {per}; "
                     f"{sum(durs) / 60:.1f} run-minutes in total.")
    missing = [r for r in records if not r.finished]
    if missing:
        lines.append(f"- **Unfinished runs ({len(missing)})**: " + ", ".join(
            f"{r.cell.setting}/{r.cell.method}/{r.cell.scale}/seed{r.cell.seed}" for r in missing[:12]) +
            (" …" if len(missing) > 12 else ""))
    stopped = [r for r in records if r.done and r.done.get("stopped_reason")]
    if stopped:
        lines.append("- Runs stopped by the non-finite guard: " + ", ".join(
            f"{r.cell.setting}/{r.cell.method}/{r.cell.scale}/seed{r.cell.seed}" for r in stopped))
    lines += ["", "## Definitions", "",
              f"- **Score**: `{metric}` of the final checkpoint" + (" and of the best checkpoint within [0, T_stop]"
                                                              if best else "") +
              f" (`cppo eval`, {cfg.get('eval', {}).get('n', 1)} samples "
              f"per problem at temperature {cfg.get('eval', {}).get('temperature', 0.7)}) on each benchmark; **mean** = "
              "unweighted mean over the benchmarks, per seed. Table cells: mean over seeds with a 95% percentile "
              "bootstrap interval, and the interquartile mean (IQM).",
              f"- **Collapsed seed**: at some evaluated step within the horizon, `{collapse_metric}` (logged by the "
              f"trainer during training) is below {collapse_frac:g} × its value at step 0; the first such step is "
              "its time to collapse.", ""]
    if notes:
        lines += ["## Choices of this profile", ""] + [f"- {n}" for n in notes] + [""]
    if stab:
        lines += ladder_section(stab, methods, scales, settings, reference, collapse_metric, horizons or {})

    if best:
        lines += selection_lines(best, stats, records, benchmarks, metric, int(cfg["eval"]["every"]), horizons or {})
        lines += [f"## Best scores (`{metric}` of the best checkpoint within [0, T_stop], per seed)", ""]
        lines += score_lines(best, methods, scales, settings, reference) + [""]
    lines += [f"## Final scores (`{metric}` of the final checkpoint)", ""]
    lines += score_lines(stats, methods, scales, settings, reference)
    # facts that bound what the table can say
    for b in benchmarks:
        vals = [v for st in stats if st.benchmark == b for v in st.values]
        if vals and max(vals) == 0.0:
            lines.append(f"- `{b}` is 0 for every evaluated run ({len(vals)} runs): that column (and its share of "
                         "the mean) carries no information about the rules.")
    decided = sum(st.n_decided for st in stats if st.benchmark == "mean")
    n_col = sum(st.n_collapsed for st in stats if st.benchmark == "mean")
    if decided and n_col == 0:
        lines.append(f"- No run collapsed ({decided} runs judged): no stability measure can tell the "
                     "rules apart in this grid; differences in score are the only comparison it offers.")
    elif decided:
        by_method = defaultdict(lambda: [0, 0])
        for st in stats:
            if st.benchmark == "mean":
                by_method[st.method][0] += st.n_collapsed
                by_method[st.method][1] += st.n_decided
        lines.append("- Collapsed runs per method over all cells: " + ", ".join(
            f"{m} {k}/{n}" for m, (k, n) in by_method.items()) + ".")
    lines.append("")

    # diagnostics: mask rates and divergence per method (mean over steps, then over seeds)
    lines += ["## Trust-region diagnostics (mean over training steps, then over seeds)", "",
              "| setting | scale | method | masked frac | mean D_t | max ρ (mean of per-step max) | grad norm |",
              "|---|---|---|---|---|---|---|"]
    for setting in settings:
        for scale in scales:
            for m in methods:
                recs = [r for r in records if (r.cell.setting, r.cell.scale, r.cell.method) == (setting, scale, m)]
                if not recs:
                    continue
                vals = {k: bootstrap_ci([run_mean(r, k) for r in recs], n_boot=1000)[0]
                        for k in ("rule/masked_frac", "rule/div_mean", "rule/ratio_max", "train/grad_norm")}
                if not any(math.isfinite(v) for v in vals.values()):
                    continue  # no run of this cell has logged anything yet

                def f(v, spec):
                    return format(v, spec) if math.isfinite(v) else "–"

                lines.append(f"| {setting} | {scale} | {m} | {f(vals['rule/masked_frac'], '.4%')} | "
                             f"{f(vals['rule/div_mean'], '.4f')} | {f(vals['rule/ratio_max'], '.3g')} | "
                             f"{f(vals['train/grad_norm'], '.3g')} |")
    for setting in settings:  # CPPO vs DPPO masking, the paper's claim of a stricter early mask
        by_rule = {}
        for rule in ("cppo", "dppo"):
            vals = [run_mean(r, "rule/masked_frac") for r in records
                    if r.cell.setting == setting and r.cell.rule == rule and r.cell.method == rule]
            by_rule[rule] = bootstrap_ci(vals, n_boot=1000)[0]
        c, d = by_rule["cppo"], by_rule["dppo"]
        if math.isfinite(c) and math.isfinite(d):
            ratio = f"{c / d:.1f}×" if d > 0 else "∞ (DPPO masked nothing)"
            lines += ["", f"Setting `{setting}`: CPPO masks {c:.4%} of eligible tokens, DPPO {d:.4%} "
                      f"(ratio {ratio}, all scales)."]
    cppo_recs = [r for r in records if r.cell.rule == "cppo"]
    if cppo_recs:
        pre = bootstrap_ci([run_mean(r, "rule/prefix_reject_frac") for r in cppo_recs], n_boot=1000)[0]
        tok = bootstrap_ci([run_mean(r, "rule/token_reject_frac") for r in cppo_recs], n_boot=1000)[0]
        if math.isfinite(pre) and math.isfinite(tok):
            lines += ["", f"CPPO rejections (all its runs): {pre:.4%} of eligible tokens only by the prefix budget, "
                      f"{tok:.4%} by the position-weighted token test."]
    lines += [""] + not_shown(cfg, settings, bool(stab))
    if figures:
        lines += ["## Figures", ""] + [f"- [{f}](figures/{f})" for f in figures] + [""]
    return "\n".join(l for l in lines if l is not None)
