"""Declared comparisons as tests: the difference, its interval, a permutation p-value, Holm's adjustment.

Why this and not overlapping intervals: "two 95% intervals do not overlap" is not a test of the
difference. With 3 seeds per method and the percentile bootstrap it calls two identical methods
different in about 10% of comparisons, and a report that makes 36 of them is then expected to
print about 4 false verdicts. Here a profile declares its comparisons before the runs
(`report.comparisons`): a focal method against each other method, on one primary measure, at each
compared (setting, scale). That family is tested at a family-wise error rate of `alpha`:

- **difference** d = mean(focal) − mean(other) over seeds (paired: the mean of per-seed
  differences over the seeds both have);
- **95% interval** of d: percentile bootstrap (`scipy.stats.bootstrap`; the two samples resampled
  independently, or the pairs resampled together when paired). It describes the size of d; the
  verdict does not use it. With very few seeds the percentile interval is too narrow (it
  under-covers), which is one more reason the verdict comes from the test;
- **p-value**: two-sided permutation test of d (`scipy.stats.permutation_test`): the seeds'
  method labels are reshuffled (independent samples), or each pair's two values swapped (paired,
  a sign-flip test). Exact when the rearrangements number at most `resamples`, Monte Carlo
  otherwise. It assumes only that the labels are exchangeable under "no difference", so its error
  rate holds at any n and for skewed, tied or censored measures such as the time to collapse;
- **Holm's step-down adjustment** over the family: the k-th smallest p is multiplied by (m − k + 1),
  then made monotone. It controls the family-wise error rate under any dependence between the
  comparisons (they share the focal method's seeds). Written here because scipy has no Holm; it is
  five lines and tested against hand-computed values;
- **verdict**: "<focal> higher" or "<focal> lower" when the Holm-adjusted p is at most `alpha`,
  else "undecided";
- **minimum detectable difference** (MDD) at 80% power: (t_{1−α'/2, ν} + t_{0.8, ν}) · SE, with SE
  from the observed SDs (Welch: sqrt(s_a²/n_a + s_b²/n_b), ν by Welch–Satterthwaite; paired:
  s_d/sqrt(n), ν = n − 1) and α' = alpha / m, the level the first Holm step must beat. It is the
  true difference this grid would decide about 80% of the time. When the exact test cannot reach
  α' at all (3 + 3 seeds give at least 2/20 = 0.1), the MDD is infinite: no effect is detectable.
- **split half**: the same difference on the odd seeds and on the even seeds, and whether the two
  halves agree in sign: a replication built into every grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
RESAMPLES = 9999
"""Monte Carlo rearrangements (and bootstrap resamples) when the exact test is too large."""
POWER = 0.8


def _clean(values: Mapping[int, float]) -> dict[int, float]:
    return {int(k): float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _paired_pairs(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    seeds = sorted(set(a) & set(b))
    return np.array([a[s] for s in seeds], dtype=float), np.array([b[s] for s in seeds], dtype=float)


def min_attainable_p(n_a: int, n_b: int, paired: bool, resamples: int = RESAMPLES) -> float:
    """The smallest two-sided p the permutation test can return for these sample sizes."""
    total = 2.0 ** n_a if paired else math.comb(n_a + n_b, n_a)
    if total <= resamples:  # exact: only the two most extreme rearrangements (the observed one included)
        return min(1.0, 2.0 / total)
    return 2.0 / (resamples + 1)  # Monte Carlo: (0 + 1) / (R + 1) per side


def permutation_p(x: np.ndarray, y: np.ndarray, paired: bool, resamples: int = RESAMPLES, seed: int = 0):
    """Two-sided permutation p-value of mean(x) − mean(y) (paired: of mean(x − y), by sign flips).

    x: (..., n_a), y: (..., n_b): leading axes are independent data sets tested at once (a float for
    1-D input). nan with fewer than 2 seeds (pairs) a side.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape[-1] < 2 or y.shape[-1] < 2:
        return math.nan if x.ndim == 1 else np.full(x.shape[:-1], np.nan)
    res = sps.permutation_test((x, y), _mean_diff, permutation_type="samples" if paired else "independent",
                               vectorized=True, n_resamples=resamples, alternative="two-sided", axis=-1,
                               rng=np.random.default_rng(seed))
    p = np.minimum(1.0, res.pvalue)
    return float(p) if x.ndim == 1 else p


def bootstrap_interval(x: np.ndarray, y: np.ndarray, paired: bool, resamples: int = RESAMPLES,
                       confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the difference of means (nan with fewer than 2 seeds a side)."""
    if len(x) < 2 or len(y) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        d = float(x[0] - y[0])
        return d, d
    if paired:
        res = sps.bootstrap((x - y,), np.mean, vectorized=True, n_resamples=resamples, method="percentile",
                            confidence_level=confidence, rng=np.random.default_rng(seed))
    else:
        res = sps.bootstrap((x, y), _mean_diff, vectorized=True, n_resamples=resamples, method="percentile",
                            confidence_level=confidence, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def min_detectable(x: np.ndarray, y: np.ndarray, paired: bool, alpha: float = ALPHA, power: float = POWER,
                   resamples: int = RESAMPLES) -> float:
    """The difference detectable with `power` at two-sided level `alpha` (see the module docstring)."""
    n_a, n_b = len(x), len(y)
    if min(n_a, n_b) < 2:
        return math.inf
    if paired:
        return detectable_at(float(np.std(x - y, ddof=1)), 0.0, n_a, n_a, True, alpha, power, resamples)
    return detectable_at(float(np.std(x, ddof=1)), float(np.std(y, ddof=1)), n_a, n_b, False, alpha, power,
                         resamples)


def detectable_at(sd_a: float, sd_b: float, n_a: int, n_b: int, paired: bool, alpha: float = ALPHA,
                  power: float = POWER, resamples: int = RESAMPLES) -> float:
    """The MDD of a grid of n_a + n_b seeds whose SDs are sd_a, sd_b (paired: sd_a is the SD of the
    per-seed differences, sd_b unused). `min_detectable` at the observed n; a seed budget at a planned n."""
    if min(n_a, n_b) < 2 or min_attainable_p(n_a, n_b, paired, resamples) > alpha:
        return math.inf
    if paired:
        se, df = sd_a / math.sqrt(n_a), n_a - 1
    else:
        va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)) if va + vb > 0 else n_a + n_b - 2
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and does not count in the family size)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.where(np.isfinite(p))[0]
    m = len(ok)
    running = 0.0
    for k, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[i]))  # the k-th smallest (0-based) times m − k, monotone
        out[i] = running
    return out.tolist()


@dataclass
class Comparison:
    """One declared comparison `focal − other` on one measure at one (setting, scale)."""
    setting: str
    scale: str
    measure: str
    focal: str
    other: str
    paired: bool
    n_focal: int = 0
    n_other: int = 0
    diff: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    mdd: float = math.inf
    family: int = 1
    """the number of comparisons Holm adjusts over (the MDD uses alpha / family)"""
    halves: tuple[float, float] = (math.nan, math.nan)
    """the difference on the odd seeds and on the even seeds"""
    verdict: str = ""
    focal_values: dict[int, float] = field(default_factory=dict)
    other_values: dict[int, float] = field(default_factory=dict)

    @property
    def halves_agree(self) -> bool | None:
        a, b = self.halves
        if not (math.isfinite(a) and math.isfinite(b)):
            return None
        return (a > 0) == (b > 0) and a != 0 and b != 0

    @property
    def decided(self) -> bool:
        """Decided by the family's test (a descriptive comparison never is)."""
        return self.verdict in (f"{self.focal} higher", f"{self.focal} lower")


def _samples(a: Mapping[int, float], b: Mapping[int, float], paired: bool) -> tuple[np.ndarray, np.ndarray]:
    if paired:
        return _paired_pairs(a, b)
    return np.array(list(a.values()), dtype=float), np.array(list(b.values()), dtype=float)


def _half_diff(a: dict[int, float], b: dict[int, float], paired: bool, parity: int) -> float:
    ha = {s: v for s, v in a.items() if s % 2 == parity}
    hb = {s: v for s, v in b.items() if s % 2 == parity}
    x, y = _samples(ha, hb, paired)
    return float(np.mean(x) - np.mean(y)) if len(x) and len(y) else math.nan


def compare(focal_values: Mapping[int, float], other_values: Mapping[int, float], *, paired: bool = False,
            resamples: int = RESAMPLES, seed: int = 0, interval: bool = True, **labels) -> Comparison:
    """The difference, interval, raw p-value and split halves of one comparison (Holm comes after)."""
    a, b = _clean(focal_values), _clean(other_values)
    c = Comparison(paired=paired, focal_values=a, other_values=b,
                   **{k: labels.get(k, "") for k in ("setting", "scale", "measure", "focal", "other")})
    x, y = _samples(a, b, paired)
    c.n_focal, c.n_other = len(x), len(y)
    if len(x) == 0 or len(y) == 0:
        return c
    c.diff = float(np.mean(x) - np.mean(y))
    c.p = permutation_p(x, y, paired, resamples, seed)
    if interval:
        c.lo, c.hi = bootstrap_interval(x, y, paired, resamples, seed=seed)
    c.halves = (_half_diff(a, b, paired, 1), _half_diff(a, b, paired, 0))
    return c


def adjust(family: list[Comparison], alpha: float = ALPHA, resamples: int = RESAMPLES) -> list[Comparison]:
    """Holm over the family, then each comparison's verdict and minimum detectable difference."""
    adj = holm([c.p for c in family])
    m = sum(1 for c in family if math.isfinite(c.p))
    for c, ph in zip(family, adj):
        c.p_holm, c.family = ph, max(m, 1)
        x, y = _samples(c.focal_values, c.other_values, c.paired)
        c.mdd = min_detectable(x, y, c.paired, alpha / c.family, resamples=resamples)
        if math.isfinite(ph) and ph <= alpha and c.diff != 0:
            c.verdict = f"{c.focal} {'higher' if c.diff > 0 else 'lower'}"
        else:
            c.verdict = "undecided"
    return family


def run_family(groups: Mapping[str, Mapping[int, float]], focal: str, others: Sequence[str], *,
                paired: bool = False, alpha: float = ALPHA, resamples: int = RESAMPLES, seed: int = 0,
                interval: bool = True) -> list[Comparison]:
    """focal − each other method on one measure: the declared family of one (setting, scale), adjusted."""
    fam = [compare(groups.get(focal, {}), groups.get(o, {}), paired=paired, resamples=resamples, seed=seed + i,
                   interval=interval, focal=focal, other=o) for i, o in enumerate(others)]
    return adjust(fam, alpha, resamples)


def describe(c: Comparison, unit: str = "pts", alpha: float = ALPHA) -> str:
    """The verdict in words: "cppo higher (Holm p = 0.010)" or "undecided (n = 3 + 3; detectable ≥ 16 pts)"."""
    if c.n_focal == 0 or c.n_other == 0:
        return "no runs"
    if c.verdict and c.verdict != "undecided":
        return f"{c.verdict} (Holm p = {fmt_p(c.p_holm)})"
    n = f"n = {c.n_focal} pairs" if c.paired else f"n = {c.n_focal} + {c.n_other}"
    if not math.isfinite(c.mdd):
        floor = min_attainable_p(c.n_focal, c.n_other, c.paired)
        return (f"undecided ({n}; no difference is detectable: the smallest attainable p, {floor:.3g}, is above "
                f"{alpha / c.family:.3g})")
    return f"undecided ({n}; detectable ≥ {fmt_value(c.mdd, unit, signed=False)})"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def fmt_value(v: float, unit: str, signed: bool = True) -> str:
    """A difference in its unit: accuracy points (×100), steps, or a plain number."""
    if v is None or not math.isfinite(v):
        return "–" if v is None or math.isnan(v) else "∞"
    sign = "+" if signed else ""
    if unit == "pts":
        return f"{100 * v:{sign}.1f} pts"
    if unit == "steps":
        return f"{v:{sign}.0f} steps"
    return f"{v:{sign}.3g}"
