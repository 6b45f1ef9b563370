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

The estimates (chosen before the grid was run, docs/studies.md "A long-horizon study"):

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
import re
from typing import Any

import numpy as np

from cppo.report.collect import RunRecord
from cppo.report.compare import Comparison, adjust, compare, describe, fmt_p
from cppo.report.verdicts import per_seed

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
    """measure -> seed -> value, for the four stability measures (`verdicts.per_seed`, the report's own)."""
    return {k: per_seed(records, setting, scale, method, k, collapse_metric=metric, frac=frac, horizon=H,
                        benchmarks=[], metric="") for k in ("time_to_collapse", "auc", "best", "final")}


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


MEASURES = ("time_to_collapse", "auc", "best", "final")
GROWTH = "dt_log_growth"
"""The per-seed inputs of the claims: the stability measures of each method, and DPPO's log D_t growth."""


def claim_inputs(cfg: dict, records: list[RunRecord], setting: str, scale: str, metric: str, frac: float,
                 H: int | None) -> dict[str, dict[str, dict[int, float]]]:
    """method -> measure -> seed -> value, for the methods the claims use (`claim_methods`)."""
    roles = claim_methods(cfg)
    per = {name: _per_seed(records, setting, scale, name, metric, frac, H) for name in roles.values()}
    if "dppo" in roles:
        per[roles["dppo"]][GROWTH] = log_growth(records, setting, scale, roles["dppo"])
    return per


def claims_table(cfg: dict, records: list[RunRecord], setting: str, scale: str, metric: str, frac: float,
                 H: int | None) -> list[str]:
    """The claims table (markdown lines) of one (setting, scale) cell of the grid."""
    return claims_table_from(cfg, claim_inputs(cfg, records, setting, scale, metric, frac, H))


def claims_table_from(cfg: dict, inputs: dict[str, dict[str, dict[int, float]]]) -> list[str]:
    """The claims table from per-seed inputs (`claim_inputs`, or the committed `claims.csv`)."""
    roles = claim_methods(cfg)
    rows: list[tuple[str, str, Comparison, str, bool]] = []  # claim, measure, comparison, kind, in the family

    def est(c: Comparison, kind: str) -> str:
        vals = (c.diff, c.lo, c.hi)
        if kind == "ratio":  # the log-ratio's mean and interval, back on the ratio scale
            vals = tuple(math.exp(v) if math.isfinite(v) else math.nan for v in vals)
        return f"{_fmt(vals[0], kind)} [{_fmt(vals[1], kind)}, {_fmt(vals[2], kind)}] (n={c.n_focal})"

    growth_claim = "Per-token divergence D_t grows with the position in the response (Figure 2)"
    missing_growth = "dppo" in roles and GROWTH not in inputs.get(roles["dppo"], {})
    if "dppo" in roles and not missing_growth:
        logs = inputs[roles["dppo"]][GROWTH]
        c = paired(logs, {s: 0.0 for s in logs}, seed=len(rows))
        rows.append((growth_claim, f"D_t last / first quarter of the response, {roles['dppo']} (geometric mean)", c,
                     "ratio", True))
    empty = {k: {} for k in MEASURES}
    per = {role: {**empty, **inputs.get(name, {})} for role, name in roles.items()}
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
    if missing_growth:
        out.append(f"| {growth_claim} | D_t last / first quarter of the response, {roles['dppo']} | no per-seed D_t "
                   "profiles (not in the inputs) | – | – | **not tested** |")
    for claim, measure, c, kind, tested in rows:
        unit = "steps" if kind == "steps" else ("log" if kind == "ratio" else "pts")
        word = verdict(c, True, unit) if tested else "described (no claim)"
        out.append(f"| {claim} | {measure} | {est(c, kind)} | {fmt_p(c.p)} | "
                   f"{fmt_p(c.p_holm) if tested else '–'} | **{word}** |")
    return out


def write_inputs(path, cfg: dict, records: list[RunRecord], settings: list[str], scales: list[str], metric: str,
                 frac: float, horizons: dict) -> None:
    """claims.csv: every per-seed input of the claims, so that the tests can be re-run without the runs."""
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["setting", "scale", "method", "measure", "seed", "value"])
        for scale in scales:
            for setting in settings:
                inputs = claim_inputs(cfg, records, setting, scale, metric, frac, horizons.get((setting, scale)))
                for method, measures in inputs.items():
                    for measure, vals in measures.items():
                        for seed, v in sorted(vals.items()):
                            w.writerow([setting, scale, method, measure, seed, f"{v:.9g}"])


def read_inputs(out_dir) -> dict[tuple[str, str], dict[str, dict[str, dict[int, float]]]]:
    """(setting, scale) -> method -> measure -> seed -> value from a report folder: its `claims.csv` when
    there is one, else the per-seed values of `stability.csv` (which lack DPPO's D_t growth)."""
    import csv
    import json
    from pathlib import Path

    out: dict = {}
    path = Path(out_dir) / "claims.csv"
    if path.is_file():
        for r in csv.DictReader(open(path, newline="")):
            (out.setdefault((r["setting"], r["scale"]), {}).setdefault(r["method"], {})
             .setdefault(r["measure"], {}))[int(r["seed"])] = float(r["value"])
        return out
    path = Path(out_dir) / "stability.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: neither claims.csv nor stability.csv to re-test from")
    for r in csv.DictReader(open(path, newline="")):
        if r["benchmark"] in MEASURES:
            vals = {int(k): float(v) for k, v in json.loads(r["seed_values"] or "{}").items()}
            out.setdefault((r["setting"], r["scale"]), {}).setdefault(r["method"], {})[r["benchmark"]] = vals
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


SECTION_HEAD = ["## The paper's claims on this grid"]
EXPLAIN = ("Each claim is one estimate paired by seed, with a 95% bootstrap interval, a two-sided sign-flip "
           "permutation test and Holm's adjustment over the claims of the table (family-wise 5%): **holds** = "
           "decided on the paper's side, **does not hold** = decided on the other side, **undecided** = not "
           "decided, with the difference the grid could have detected (80% power). The estimates were fixed "
           "before the run, the tests after it, when every verdict rule of the suite became a test "
           "(`cppo/report/claims.py`).")


def retest_summary(text: str, cfg: dict, inputs: dict, note: str) -> str:
    """A summary.md with its claims section re-made from per-seed inputs (`read_inputs`): the explanation
    and each (setting, scale) table replaced, `note` added under the explanation; the rest kept."""
    lines = text.splitlines()
    try:
        start = lines.index(SECTION_HEAD[0])
    except ValueError:
        raise ValueError("the summary has no claims section to re-test") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    sec = lines[start:end]
    out = [sec[0], "", EXPLAIN, "", note, ""]
    i = next((k for k in range(1, len(sec)) if sec[k].startswith("### ")), len(sec))
    while i < len(sec):
        line = sec[i]
        out.append(line)
        i += 1
        m = re.match(r"### `(.+)` / scale `(.+)`", line)
        if not m:
            continue
        while i < len(sec) and not sec[i].startswith("|"):
            out.append(sec[i])
            i += 1
        while i < len(sec) and sec[i].startswith("|"):
            i += 1  # the old table
        out += claims_table_from(cfg, inputs.get((m.group(1), m.group(2)), {}))
    return "\n".join(lines[:start] + out + lines[end:]) + ("\n" if text.endswith("\n") else "")


def claims_section(cfg: dict, records: list[RunRecord], settings: list[str], scales: list[str], metric: str,
                   frac: float, horizons: dict[tuple[str, str], Any]) -> list[str]:
    """The summary's headline section: per (setting, scale), the claims table, then where CPPO masks."""
    roles = claim_methods(cfg)
    out = SECTION_HEAD + ["", EXPLAIN, ""]
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
