"""The paper's qualitative claims, each with this grid's verdict (the long-horizon study).

Why a table of claims: the CPPO paper argues by ablation (its Figure 2 and the ablation table), so a
reproduction should say, claim by claim, whether a grid agrees. Each claim is reduced to one
estimate, paired by seed (the same seed gives both methods the same base and prompt stream), with
a 95% bootstrap interval, and tested with the machinery of the declared comparisons
(`cppo.report.compare`): a two-sided sign-flip permutation test of the paired differences, Holm's
adjustment over the claims of one table (the family), and a mechanical verdict:

- **holds**: Holm p ≤ 0.05 and the estimate is on the side the paper claims;
- **does not hold**: Holm p ≤ 0.05 and the estimate is on the other side;
- **undecided**: otherwise, with the difference the grid could have detected. A sign-flip test of
  n pairs cannot go below 2/2^n, so 5 seeds (0.0625) can never decide one claim, let alone a
  Holm-adjusted family: that is what 5 seeds can say, not a failure of the test.

The estimates (chosen before the grid was run, README "A long-horizon study"):

- *D_t grows with position*: per DPPO run, the mean D_t over the last quarter of relative positions
  divided by the mean over the first quarter (`position_profile.json`, buckets of the relative
  position); the geometric mean over seeds, tested as the mean log-ratio against 0.
  DPPO is used because its mask does not depend on the position.
- *CPPO against DPPO*, and *each ablation costs accuracy*: paired differences over seeds (the same
  seed gives both methods the same prompts and the same base) of time to collapse, AUC, best-in-run
  and final accuracy (`cppo.report.stats`). The ablation claims are judged on best-in-run accuracy
  (the analogue of the paper's best score within [0, T_stop]); AUC is shown beside it.

Methods are recognised by their rule and parameters in the profile's `methods:` (rule `cppo` with
`ablation: no_position_weight`, a `binary_kl` divergence, `horizon: max`, ...), not by their names.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cppo.report.collect import RunRecord
from cppo.report.compare import Comparison, adjust, compare, describe, fmt_p
from cppo.report.stats import run_stability

ABLATIONS = {
    "no_position_weight": ("ablation", "no_position_weight", "Removing the position weight (w ≡ 1) costs accuracy"),
    "no_prefix_budget": ("ablation", "no_prefix_budget", "Removing the prefix budget costs accuracy"),
    "shuffled_weights": ("ablation", "shuffled_weights", "Shuffling the position weights costs accuracy"),
    "kl": ("divergence", "binary_kl", "Binary KL (δ = 0.1, δ_b = 0.002) instead of TV costs accuracy"),
}


def claim_methods(cfg: dict) -> dict[str, str]:
    """Role -> method name among `grid.methods`: `cppo` (the rule with its defaults' structure),
    `dppo`, and each ablation of ABLATIONS plus `horizon_max`, when present."""
    methods = cfg.get("methods") or {}
    roles: dict[str, str] = {}
    for name in (cfg.get("grid") or {}).get("methods") or []:
        m = methods.get(name) or {}
        rule = m.get("rule", name)
        if rule == "dppo" and "dppo" not in roles and m.get("divergence", "binary_tv").endswith("tv"):
            roles["dppo"] = name
        if rule != "cppo":
            continue
        hits = [role for role, (key, value, _) in ABLATIONS.items() if m.get(key) == value]
        if m.get("horizon") == "max":
            hits.append("horizon_max")
        if not hits and "cppo" not in roles and m.get("mask_mode", "hard") == "hard":
            roles["cppo"] = name
        elif len(hits) == 1 and hits[0] not in roles:
            roles[hits[0]] = name
    return roles


def _per_seed(records: list[RunRecord], setting: str, scale: str, method: str, metric: str, frac: float,
              H: int | None) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {k: {} for k in ("time_to_collapse", "auc", "best", "final")}
    for r in records:
        if (r.cell.setting, r.cell.scale, r.cell.method) != (setting, scale, method):
            continue
        h = r.histories.get(metric) or []
        if not h:
            continue
        for k, v in run_stability(h, frac, H).items():
            if math.isfinite(v):
                out[k][r.cell.seed] = v
    return out


def paired(a: dict[int, float], b: dict[int, float], seed: int = 0) -> Comparison:
    """a − b over the seeds both have: mean, 95% interval, sign-flip permutation p (Holm comes after)."""
    return compare(a, b, paired=True, seed=seed)


def log_growth(records: list[RunRecord], setting: str, scale: str, method: str) -> dict[int, float]:
    """seed -> log(mean D_t over the last quarter of relative positions / over the first quarter)."""
    logs: dict[int, float] = {}
    for r in records:
        prof = r.position_profile or {}
        d = prof.get("div_mean")
        if (r.cell.setting, r.cell.scale, r.cell.method) != (setting, scale, method) or not d:
            continue
        q = max(1, len(d) // 4)
        first, last = float(np.mean(d[:q])), float(np.mean(d[-q:]))
        if first > 0 and last > 0:
            logs[r.cell.seed] = math.log(last / first)
    return logs


def verdict(c: Comparison, claimed_positive: bool = True, unit: str = "pts") -> str:
    """holds / does not hold / undecided (...), from a Holm-adjusted comparison and the claimed side."""
    if c.n_focal < 2:
        return "undecided (too few seeds)"
    if not c.decided:
        return describe(c, unit)
    return "holds" if (c.diff > 0) == claimed_positive else "does not hold"


def _fmt(v: float, kind: str) -> str:
    if not math.isfinite(v):
        return "–"
    if kind == "ratio":
        return f"{v:.2f}×"
    if kind == "steps":
        return f"{v:+.0f}"
    return f"{100 * v:+.1f} pts"


def claims_table(cfg: dict, records: list[RunRecord], setting: str, scale: str, metric: str, frac: float,
                 H: int | None) -> list[str]:
    """The claims table (markdown lines) of one (setting, scale) cell of the grid."""
    roles = claim_methods(cfg)
    rows: list[tuple[str, str, Comparison, str, bool]] = []  # claim, measure, comparison, kind, in the family

    def est(c: Comparison, kind: str) -> str:
        vals = (c.diff, c.lo, c.hi)
        if kind == "ratio":  # the log-ratio's mean and interval, back on the ratio scale
            vals = tuple(math.exp(v) if math.isfinite(v) else math.nan for v in vals)
        return f"{_fmt(vals[0], kind)} [{_fmt(vals[1], kind)}, {_fmt(vals[2], kind)}] (n={c.n_focal})"

    if "dppo" in roles:
        logs = log_growth(records, setting, scale, roles["dppo"])
        c = paired(logs, {s: 0.0 for s in logs}, seed=len(rows))
        rows.append(("Per-token divergence D_t grows with the position in the response (Figure 2)",
                     f"D_t last / first quarter of the response, {roles['dppo']} (geometric mean)", c, "ratio", True))
    per = {role: _per_seed(records, setting, scale, name, metric, frac, H) for role, name in roles.items()}
    if "cppo" in roles and "dppo" in roles:
        cc, d = per["cppo"], per["dppo"]
        for key, claim, kind in (("time_to_collapse", "CPPO collapses later than DPPO", "steps"),
                                 ("auc", "CPPO keeps more accuracy over training than DPPO (AUC)", "pts"),
                                 ("best", "CPPO reaches a higher best score than DPPO", "pts"),
                                 ("final", "CPPO ends with a higher score than DPPO", "pts")):
            rows.append((claim, f"{key}: {roles['cppo']} − {roles['dppo']}", paired(cc[key], d[key], len(rows)),
                         kind, True))
    if "cppo" in roles:
        cc = per["cppo"]
        for role, (_, _, claim) in ABLATIONS.items():
            if role not in roles:
                continue
            a = per[role]
            area = paired(cc["auc"], a["auc"], len(rows))
            rows.append((claim, f"best: {roles['cppo']} − {roles[role]} (AUC: {_fmt(area.diff, 'pts')} "
                         f"[{_fmt(area.lo, 'pts')}, {_fmt(area.hi, 'pts')}])", paired(cc["best"], a["best"], len(rows)),
                         "pts", True))
        if "horizon_max" in roles:
            rows.append(("(no claim) `horizon: response` against `horizon: max`",
                         f"best: {roles['cppo']} − {roles['horizon_max']}",
                         paired(cc["best"], per["horizon_max"]["best"], len(rows)), "pts", False))
    if not rows:
        return []
    adjust([r[2] for r in rows if r[4]])  # Holm over the claims; the no-claim row is described, not tested
    out = ["| claim of the paper | measure (paired over seeds) | estimate [95% CI] | p | Holm p | verdict here |",
           "|---|---|---|---|---|---|"]
    for claim, measure, c, kind, tested in rows:
        unit = "steps" if kind == "steps" else ("log" if kind == "ratio" else "pts")
        word = verdict(c, True, unit) if tested else "described (no claim)"
        out.append(f"| {claim} | {measure} | {est(c, kind)} | {fmt_p(c.p)} | "
                   f"{fmt_p(c.p_holm) if tested else '–'} | **{word}** |")
    return out


def masking_by_position(records: list[RunRecord], setting: str, scale: str, methods: list[str]) -> list[str]:
    """Markdown table: masked fraction of eligible tokens per relative-position bucket, mean over seeds."""
    lines = []
    width = None
    rows = []
    for m in methods:
        profs = [r.position_profile for r in records if (r.cell.setting, r.cell.scale, r.cell.method) == (setting, scale, m)
                 and r.position_profile and r.position_profile.get("masked_frac")]
        if not profs:
            continue
        width = width or len(profs[0]["masked_frac"])
        mat = np.array([p["masked_frac"][:width] for p in profs], dtype=float)
        div = np.array([p["div_mean"][:width] for p in profs], dtype=float)
        rows.append((m, mat.mean(axis=0), div.mean(axis=0), len(profs)))
    if not rows:
        return lines
    head = [f"{i}/{width}–{i + 1}/{width}" for i in range(width)]
    lines += ["| method | n | " + " | ".join(head) + " |", "|---|---|" + "---|" * width]
    for m, masked, _, n in rows:
        lines.append(f"| {m}: masked | {n} | " + " | ".join(f"{100 * v:.2f}%" for v in masked) + " |")
    for m, _, div, n in rows:
        lines.append(f"| {m}: mean D_t | {n} | " + " | ".join(f"{v:.4f}" for v in div) + " |")
    return lines


def reject_split(records: list[RunRecord], setting: str, scale: str, method: str) -> tuple[float, float] | None:
    """Mean over seeds (of the mean over steps) of CPPO's prefix-only and token-test rejection fractions."""
    vals: dict[str, list[float]] = {"rule/prefix_reject_frac": [], "rule/token_reject_frac": []}
    for r in records:
        if (r.cell.setting, r.cell.scale, r.cell.method) != (setting, scale, method):
            continue
        for k in vals:
            h = [v for _, v in r.histories.get(k) or [] if math.isfinite(v)]
            if h:
                vals[k].append(float(np.mean(h)))
    if not all(vals.values()):
        return None
    return float(np.mean(vals["rule/prefix_reject_frac"])), float(np.mean(vals["rule/token_reject_frac"]))


def claims_section(cfg: dict, records: list[RunRecord], settings: list[str], scales: list[str], metric: str,
                   frac: float, horizons: dict[tuple[str, str], Any]) -> list[str]:
    """The summary's headline section: per (setting, scale), the claims table, then where CPPO masks."""
    roles = claim_methods(cfg)
    out = ["## The paper's claims on this grid", "",
           "Each claim is one estimate paired by seed, with a 95% bootstrap interval, a two-sided sign-flip "
           "permutation test and Holm's adjustment over the claims of the table (family-wise 5%): **holds** = "
           "decided on the paper's side, **does not hold** = decided on the other side, **undecided** = not "
           "decided, with the difference the grid could have detected (80% power). The estimates were fixed "
           "before the run, the tests after it, when every verdict rule of the suite became a test "
           "(`cppo/report/claims.py`).", ""]
    any_table = False
    for scale in scales:
        for setting in settings:
            table = claims_table(cfg, records, setting, scale, metric, frac, horizons.get((setting, scale)))
            if not table:
                continue
            any_table = True
            out += [f"### `{setting}` / scale `{scale}`", ""] + table + [""]
            shown = [m for m in (roles.get("cppo"), roles.get("dppo")) if m]
            masks = masking_by_position(records, setting, scale, shown)
            if masks:
                out += ["Where the masks fall, by relative position in the response (mean over seeds and the run):",
                        ""] + masks + [""]
            if roles.get("cppo"):
                split = reject_split(records, setting, scale, roles["cppo"])
                if split:
                    out += [f"CPPO's rejections: {100 * split[0]:.3f}% of eligible tokens by the prefix budget alone, "
                            f"{100 * split[1]:.3f}% by the position-weighted token test.", ""]
    return out if any_table else []
