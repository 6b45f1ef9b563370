"""Statistics over seeds: bootstrap confidence intervals, the interquartile mean, collapse detection.

Why these: with 3-5 seeds a mean alone hides both spread and outliers. The percentile bootstrap of
the mean gives a 95% interval without a normality assumption; the interquartile mean (IQM) is the
robust summary recommended by Agarwal et al., "Deep RL at the Edge of the Statistical Precipice"
(NeurIPS 2021, https://arxiv.org/abs/2108.13264); and a collapse count says how often a method
broke, which a mean over seeds blurs.

- `bootstrap_ci(x)`: mean and the 2.5/97.5 percentiles of the means of B resamples (with
  replacement) of the seeds; one seed gives a degenerate interval (nan bounds).
- `iqm(x)`: the mean of the empirical distribution restricted to its quantiles [0.25, 0.75]. Each
  of n values holds mass 1/n; a value straddling a quartile counts with the part inside. This
  equals scipy's `trim_mean(x, 0.25)` when n is a multiple of 4 and stays informative for n = 3
  (weights 1/6, 2/3, 1/6 on the sorted values) where plain trimming would drop nothing.
- Stability of one run, from the trainer's periodic evaluations [(step, value), ...] of the collapse
  metric (greedy test accuracy by default), over a horizon H (the run's planned steps):
  - `time_to_collapse`: the first evaluated step whose value is below `frac` × the reference (its
    value at step 0 unless given), or H with the event flag off when it never falls that low (right
    censoring). A non-finite value counts as fallen. The mean over seeds of these censored times is
    the *restricted mean time to collapse* (restricted to [0, H]); it is not biased by the
    censoring, but it cannot exceed H. A run that starts at 0 cannot collapse (undecidable).
  - `collapsed`: the event flag of `time_to_collapse` (a run that dips below the line and recovers
    has collapsed: the dip is what a trust region should prevent).
  - `auc`: the area under the curve on [0, H] divided by H (trapezoids between evaluated steps,
    the last value held to H): the mean accuracy over training, which rewards a late collapse.
  - `best_in_run` and `final_value`: the maximum and the last evaluated value.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def bootstrap_ci(values: Sequence[float], n_boot: int = 10_000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of the finite values and its percentile-bootstrap (1 − alpha) CI.

    Deterministic for a given `seed`. Empty input gives nans; a single value gives (v, nan, nan).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    x = _finite(values)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # (B, n)
    means = x[idx].mean(axis=1)  # (B,)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi)


def bootstrap_band(matrix: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean and bootstrap CI of a (seeds, steps) matrix that may hold nans (missing).

    Returns three (steps,) arrays. Columns with one finite value get nan bounds; resampling is
    over the seeds that have a value at that step.
    """
    m = np.asarray(matrix, dtype=float)  # (S, N)
    S, N = m.shape
    mean = np.full(N, np.nan)
    lo = np.full(N, np.nan)
    hi = np.full(N, np.nan)
    rng = np.random.default_rng(seed)
    valid = np.isfinite(m)
    counts = valid.sum(axis=0)  # (N,)
    for k in np.unique(counts):  # columns with the same number of seeds share one resampling
        cols = np.where(counts == k)[0]
        if k == 0:
            continue
        vals = np.stack([m[valid[:, c], c] for c in cols], axis=1)  # (k, C)
        mean[cols] = vals.mean(axis=0)
        if k == 1:
            continue
        idx = rng.integers(0, k, size=(n_boot, k))  # (B, k)
        boot = vals[idx].mean(axis=1)  # (B, C)
        lo[cols], hi[cols] = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return mean, lo, hi


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean of the finite values (see the module docstring); nan when empty."""
    x = np.sort(_finite(values))
    n = x.size
    if n == 0:
        return math.nan
    edges = np.arange(n + 1) / n  # value i holds the quantile interval [i/n, (i+1)/n)
    inside = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)  # (n,)
    return float((inside * x).sum() / inside.sum())


def _points(history: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    return sorted((int(st), float(v)) for st, v in history)


def time_to_collapse(history: Sequence[tuple[int, float]], frac: float = 0.5, horizon: int | None = None,
                     reference: float | None = None) -> tuple[int, bool] | None:
    """(step, collapsed): the first evaluated step whose value is < frac × reference, or (horizon, False).

    `reference` defaults to the value at the first logged step; `horizon` to the last logged step.
    None (undecidable) when there is no point, or the reference is not finite or not > 0.
    """
    if not 0 < frac <= 1:
        raise ValueError(f"time_to_collapse: frac must be in (0, 1], got {frac}")
    pts = _points(history)
    if not pts:
        return None
    ref = pts[0][1] if reference is None else float(reference)
    if not math.isfinite(ref) or ref <= 0:
        return None
    H = pts[-1][0] if horizon is None else int(horizon)
    for step, v in pts:
        if step > H:
            break
        if not math.isfinite(v) or v < frac * ref:
            return step, True
    return H, False


def collapsed(history: Sequence[tuple[int, float]], frac: float = 0.5, horizon: int | None = None) -> bool | None:
    """Whether the run collapsed within the horizon (see `time_to_collapse`); None when undecidable."""
    t = time_to_collapse(history, frac, horizon)
    return None if t is None else t[1]


def auc(history: Sequence[tuple[int, float]], horizon: int | None = None) -> float:
    """Area under the curve on [first step, horizon] / its length; the last value is held to the horizon.

    A non-finite value counts as 0 (a broken model solves nothing). nan when there is no point.
    """
    pts = [(st, v if math.isfinite(v) else 0.0) for st, v in _points(history)]
    if not pts:
        return math.nan
    H = pts[-1][0] if horizon is None else int(horizon)
    pts = [p for p in pts if p[0] <= H]
    if pts[-1][0] < H:
        pts.append((H, pts[-1][1]))
    if H == pts[0][0]:
        return pts[0][1]
    area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in zip(pts, pts[1:]))
    return area / (H - pts[0][0])


def best_in_run(history: Sequence[tuple[int, float]], horizon: int | None = None) -> float:
    """The largest finite value within the horizon (step 0 included); nan when there is none."""
    vals = [v for st, v in _points(history) if (horizon is None or st <= horizon) and math.isfinite(v)]
    return max(vals) if vals else math.nan


def final_value(history: Sequence[tuple[int, float]], horizon: int | None = None) -> float:
    """The last value within the horizon (nan when there is none)."""
    pts = [p for p in _points(history) if horizon is None or p[0] <= horizon]
    return pts[-1][1] if pts else math.nan


def run_stability(history: Sequence[tuple[int, float]], frac: float = 0.5, horizon: int | None = None) -> dict[str, float]:
    """The four stability measures of one run: time to collapse (nan when undecidable), AUC, best, final."""
    t = time_to_collapse(history, frac, horizon)
    return {"time_to_collapse": math.nan if t is None else float(t[0]), "auc": auc(history, horizon),
            "best": best_in_run(history, horizon), "final": final_value(history, horizon)}


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default); (nan, nan) when n = 0.

    Why Wilson: with 3-5 seeds and k = 0 or k = n the normal interval collapses to a point, while
    Wilson's stays honest (3/3 gives [0.44, 1]).
    """
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
