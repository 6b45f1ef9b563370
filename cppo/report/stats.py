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
- `collapsed(history)`: the final value of a metric is below `frac` times its value at the first
  logged step (default: final greedy test accuracy < half its starting value). A run whose start
  is 0 cannot collapse by this definition.
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


def collapsed(history: Sequence[tuple[int, float]], frac: float = 0.5) -> bool | None:
    """True when the last value of `history` [(step, value), ...] is < frac × its first value.

    None when the history has fewer than two points or its first value is not finite (undecidable).
    """
    if not 0 < frac <= 1:
        raise ValueError(f"collapsed: frac must be in (0, 1], got {frac}")
    pts = sorted((int(s), float(v)) for s, v in history)
    if len(pts) < 2 or not math.isfinite(pts[0][1]):
        return None
    start, final = pts[0][1], pts[-1][1]
    if not math.isfinite(final):
        return True  # a run that ends on nan/inf has broken
    return final < frac * start


def ci_overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether two (mean, lo, hi) intervals overlap (nan bounds count as overlapping: unknown)."""
    if any(math.isnan(v) for v in (a[1], a[2], b[1], b[2])):
        return True
    return not (a[2] < b[1] or b[2] < a[1])
