"""Figures: stability curves across seeds and per-position profiles (the paper's Figure 2).

- `stability_figure`: one figure per (scale, setting); one panel per curve (reward, test accuracy,
  entropy, masked fraction, mean divergence, gradient norm); per method the mean over seeds with a
  95% bootstrap band (thin lines: the individual seeds, so a single collapsing seed stays visible).
- `position_figure`: one figure per (scale, setting); mean D_t and masked fraction by relative
  response position bucket, per method, mean over seeds with the band.
- `frontier_figure`: one figure per scale, x = the settings in grid order (a pressure ladder:
  bottom rung first), panels = collapse fraction (Wilson 95% interval), restricted mean time to
  collapse, area under the accuracy curve and final accuracy (bootstrap 95% bands over seeds), one
  line per method; the on-policy reference rung, trained with one method, is drawn in black.
- `comparison_figure`: the declared comparisons (`cppo.report.verdicts`) as a forest plot: per
  measure, each difference with its 95% interval, coloured when decided, with the split halves.
All are written as PNG (for the HTML report and the README) and SVG (for papers), byte-identical
when the numbers are: no date in the SVG, and its ids drawn from a fixed salt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cppo.report.collect import RunRecord
from cppo.report.stats import bootstrap_band, wilson_interval


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    # The same figure, the same bytes: SVG ids from a fixed salt instead of random ones (the dates
    # are dropped in _save), so a regenerated results/ folder differs only where a number does.
    matplotlib.rcParams["svg.hashsalt"] = "cppo-bench"
    import matplotlib.pyplot as plt

    return plt


def _colors(methods: list[str]) -> dict[str, tuple]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _matrix(histories: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Seeds' histories -> (steps (N,), values (S, N)) on the union of steps, nan where missing."""
    steps = sorted({s for h in histories for s, _ in h})
    col = {s: i for i, s in enumerate(steps)}
    m = np.full((len(histories), len(steps)), np.nan)
    for i, h in enumerate(histories):
        for s, v in h:
            m[i, col[s]] = v
    return np.asarray(steps), m


def _save(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})
    _plt().close(fig)
    return paths


def stability_figure(records: list[RunRecord], curves: dict[str, str], methods: list[str], scale: str,
                     setting: str, out: Path, n_boot: int = 1000) -> list[Path]:
    """Curves of one (scale, setting): panels = `curves` (title -> metric key), lines = methods."""
    plt = _plt()
    recs = [r for r in records if r.cell.scale == scale and r.cell.setting == setting]
    colors = _colors(methods)
    ncol = 3
    nrow = -(-len(curves) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.2 * nrow), squeeze=False)
    for ax, (title, key) in zip(axes.flat, curves.items()):
        drawn = False
        for m in methods:
            hs = [r.histories.get(key) or [] for r in recs if r.cell.method == m]
            hs = [h for h in hs if h]
            if not hs:
                continue
            steps, mat = _matrix(hs)
            mean, lo, hi = bootstrap_band(mat, n_boot=n_boot)
            for row in mat:
                ok = np.isfinite(row)
                ax.plot(steps[ok], row[ok], color=colors[m], alpha=0.25, lw=0.7)
            ok = np.isfinite(mean)
            ax.plot(steps[ok], mean[ok], color=colors[m], lw=1.8, label=f"{m} (n={len(hs)})",
                    marker="o" if ok.sum() <= 12 else None, ms=3)
            band = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(steps[band], lo[band], hi[band], color=colors[m], alpha=0.18, lw=0)
            drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("rollout step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if key.startswith("train/grad_norm") or key.startswith("rule/div") or key.startswith("rule/masked"):
            if drawn and all(v > 0 for r in recs for _, v in (r.histories.get(key) or []) if np.isfinite(v)):
                ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, f"no data\n({key})", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    handles, labels = next(((h, lab) for h, lab in (a.get_legend_handles_labels() for a in axes.flat) if h), ([], []))
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Stability across seeds: scale {scale}, setting {setting} (mean, 95% bootstrap band; thin: seeds)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return _save(fig, out, f"curves_scale-{scale}_setting-{setting}")


def position_figure(records: list[RunRecord], methods: list[str], scale: str, setting: str, out: Path,
                    n_boot: int = 1000) -> list[Path]:
    """Mean D_t and masked fraction by response-position bucket, per method (Figure 2 style)."""
    plt = _plt()
    recs = [r for r in records if r.cell.scale == scale and r.cell.setting == setting and r.position_profile]
    colors = _colors(methods)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, key, title in ((axes[0], "div_mean", "mean divergence D_t"),
                           (axes[1], "masked_frac", "masked fraction (eligible tokens)")):
        for m in methods:
            profs = [r.position_profile[key] for r in recs if r.cell.method == m and key in r.position_profile]
            if not profs:
                continue
            width = max(len(p) for p in profs)
            mat = np.full((len(profs), width), np.nan)
            for i, p in enumerate(profs):
                mat[i, :len(p)] = p
            mean, lo, hi = bootstrap_band(mat, n_boot=n_boot)
            x = (np.arange(width) + 0.5) / width  # bucket centres, relative position in the response
            ax.plot(x, mean, color=colors[m], marker="o", ms=3, lw=1.6, label=m)
            band = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(x[band], lo[band], hi[band], color=colors[m], alpha=0.18, lw=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("relative position in the response", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    h, lab = axes[0].get_legend_handles_labels()
    if h:
        axes[1].legend(h, lab, fontsize=8)
    fig.suptitle(f"Per-position profile: scale {scale}, setting {setting} (mean over seeds, whole run)", fontsize=11)
    fig.tight_layout()
    return _save(fig, out, f"position_scale-{scale}_setting-{setting}")


def frontier_figure(stab, methods: list[str], settings: list[str], scale: str, out: Path,
                    reference: tuple[str, str] | None = None, horizon: int | None = None) -> list[Path]:
    """The stability frontier of one scale from `tables.stability_stats` cells (see the module docstring)."""
    plt = _plt()
    idx = {(c.setting, c.method, c.benchmark): c for c in stab if c.scale == scale}
    colors = _colors(methods)
    x_of = {s: i for i, s in enumerate(settings)}
    panels = [("collapsed", "collapse fraction (Wilson 95%)"),
              ("time_to_collapse", f"time to collapse (restricted mean, steps ≤ {horizon or 'H'})"),
              ("auc", "area under greedy accuracy / horizon"), ("final", "final greedy accuracy")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.4), squeeze=False)
    width = 0.3
    lines = [(m, colors[m], (i - (len(methods) - 1) / 2) * width / max(len(methods) - 1, 1))
             for i, m in enumerate(methods)]
    if reference:
        lines.append((reference[1], "black", 0.0))
    for ax, (key, title) in zip(axes.flat, panels):
        for m, color, dx in lines:
            is_ref = reference is not None and color == "black"
            xs, ys, los, his = [], [], [], []
            for st in settings:
                if reference and (st == reference[0]) != is_ref:
                    continue
                c = idx.get((st, m, "auc" if key == "collapsed" else key))
                if c is None or (key != "collapsed" and not c.values) or (key == "collapsed" and not c.n_decided):
                    continue
                if key == "collapsed":
                    y = c.n_collapsed / c.n_decided
                    lo, hi = wilson_interval(c.n_collapsed, c.n_decided)
                else:
                    y, lo, hi = c.mean, c.lo, c.hi
                xs.append(x_of[st] + dx)
                ys.append(y)
                los.append(lo if np.isfinite(lo) else y)
                his.append(hi if np.isfinite(hi) else y)
            if not xs:
                continue
            xs, ys, los, his = map(np.asarray, (xs, ys, los, his))
            label = f"{m} (on-policy reference)" if is_ref else m
            ax.errorbar(xs, ys, yerr=[ys - los, his - ys], color=color, marker="s" if is_ref else "o", ms=5,
                        lw=1.6, capsize=3, label=label, ls="none" if is_ref else "-")
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(settings, fontsize=8, rotation=20)
        ax.set_xlabel("rung (off-policy pressure →)", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if key == "collapsed":
            ax.set_ylim(-0.05, 1.05)
    h, lab = axes[0][0].get_legend_handles_labels()
    if h:
        fig.legend(h, lab, loc="lower center", ncol=min(len(lab), 5), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"Stability frontier: scale {scale} (mean over seeds with 95% intervals)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    return _save(fig, out, f"frontier_scale-{scale}")


def comparison_figure(fams: dict, primary: str, out: Path, names: dict[str, str], units: dict[str, str]) -> list[Path]:
    """The declared comparisons as a forest plot: one panel per measure (the primary one first), one row
    per comparison, the difference with its 95% bootstrap interval, a line at 0 and the primary verdicts.
    Descriptive measures are drawn grey: they carry no verdict."""
    plt = _plt()
    measures = [primary] + [m for m in fams if m != primary]
    fams = {m: fams[m] for m in measures if fams.get(m)}
    if not fams:
        return []
    rows = max(len(f) for f in fams.values())
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams) + 1.5, 0.55 * rows + 1.6), sharey=True,
                             squeeze=False)
    for ax, (measure, fam) in zip(axes[0], fams.items()):
        scale = 100.0 if units.get(measure) == "pts" else 1.0
        for i, c in enumerate(fam):
            y = len(fam) - 1 - i
            col = ("tab:green" if c.diff > 0 else "tab:red") if c.decided else (
                "0.35" if measure == primary else "0.65")
            if np.isfinite(c.lo) and np.isfinite(c.hi):
                ax.plot([scale * c.lo, scale * c.hi], [y, y], color=col, lw=2)
            ax.plot([scale * c.diff], [y], "o", color=col)
            if measure == primary:
                a, b = c.halves
                for h, mk in ((a, "<"), (b, ">")):  # split halves: odd seeds ◁, even seeds ▷
                    if np.isfinite(h):
                        ax.plot([scale * h], [y + 0.22], mk, color=col, ms=4, alpha=0.7)
        ax.axvline(0.0, color="k", lw=0.8)
        unit = "points" if units.get(measure) == "pts" else units.get(measure, "")
        title = names.get(measure, measure) + (" (primary)" if measure == primary else " (descriptive)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"difference ({unit})", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    first = next(iter(fams.values()))
    axes[0][0].set_yticks(range(len(first)))
    axes[0][0].set_yticklabels([f"{c.focal} − {c.other} ({c.setting}/{c.scale})" for c in reversed(first)],
                               fontsize=8)
    fig.suptitle("Declared comparisons: difference of means, 95% bootstrap interval; coloured = decided "
                 "(Holm); ◁ ▷ = odd / even seeds", fontsize=9)
    fig.tight_layout()
    return _save(fig, out, "comparisons")
