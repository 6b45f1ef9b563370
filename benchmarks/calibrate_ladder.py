"""Calibrate a pressure ladder on the control alone: pg_is at every rung of a profile, per seed.

    python benchmarks/calibrate_ladder.py config/tiny.yaml --base results/tiny/base/scale~s \
        --out /tmp/calib [--scale s] [--seeds 1 2 3] [--settings onpolicy upd8] [--jobs 2] [--table-only]

Trains `pg_is` (the rule with no trust region) on each of `grid.settings`, with the profile's
horizon and evaluation cadence, and prints one row per rung: per seed the time to collapse (the
first evaluated step with greedy accuracy below `report.collapse_frac` × its step-0 value, or
"—" when it never falls that low within the horizon), the area under the accuracy curve and the
final accuracy. No other method is run: the ladder must be fixed before the rules are compared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main() -> int:
    from cppo.config import load_config
    from cppo.report.collect import read_metrics_jsonl
    from cppo.report.stats import auc, final_value, time_to_collapse
    from cppo.report.tables import horizon

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--base", required=True, help="the scale's SFT base checkpoint")
    p.add_argument("--out", required=True, type=Path, help="folder of the calibration runs")
    p.add_argument("--scale", default="s")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: grid.seeds")
    p.add_argument("--settings", nargs="+", default=None, help="rungs to calibrate (default: grid.settings)")
    p.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    p.add_argument("--table-only", action="store_true", help="print the table of existing runs")
    p.add_argument("--choose", nargs="+", metavar="RUNG", default=None,
                   help="apply the default profile's rules (docs/tiny-default.md) to the finished runs: the first "
                        "of these candidate rungs, the horizon and the primary measure; the first of --settings "
                        "is the on-policy reference")
    a = p.parse_args()
    cfg = load_config(a.config)
    raw, settings = cfg.raw, list(a.settings or cfg.grid.settings)
    unknown = [st for st in settings if st not in (raw.get("settings") or {})]
    if unknown:
        p.error(f"--settings: not in the profile's settings: {', '.join(unknown)}")
    seeds = a.seeds or list(cfg.grid.seeds)
    rep = raw.get("report") or {}
    metric, frac = rep.get("collapse_metric", "eval/chain_id/greedy_acc"), float(rep.get("collapse_frac", 0.5))
    runs = [(st, k, a.out / f"setting~{st}" / f"seed~{k}") for st in settings for k in seeds]

    def train(job):
        st, k, d = job
        cmd = [sys.executable, "-m", "cppo.cli", "train", a.config, "--method", "pg_is", "--scale", a.scale,
               "--seed", str(k), "--setting", st, "--run-dir", str(d), "--init", a.base, "--no-mlflow", "--no-progress"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(f"{st} seed {k}: rc={r.returncode}", file=sys.stderr, flush=True)

    if not a.table_only:
        with ThreadPoolExecutor(a.jobs) as ex:
            list(ex.map(train, runs))
    print(f"pg_is, scale {a.scale}: time to collapse (steps; — = none within the horizon) / AUC / final `{metric}`\n")
    print("| rung | horizon | " + " | ".join(f"seed {k}" for k in seeds) + " | collapsed |")
    print("|---|---|" + "---|" * (len(seeds) + 1))
    for st in settings:
        H = horizon(raw, st, a.scale)
        cells, n = [], 0
        for k in seeds:
            run = a.out / f"setting~{st}" / f"seed~{k}"
            h = read_metrics_jsonl(run / "metrics.jsonl", {metric}).get(metric)
            if not h:
                cells.append("missing")
                continue
            if not (run / "done").exists():  # a partial run has not collapsed *yet*: never count it
                cells.append(f"unfinished (step {max(s for s, _ in h)})")
                continue
            t = time_to_collapse(h, frac, H)
            n += bool(t and t[1])
            cells.append(f"{t[0] if t and t[1] else '—'} / {auc(h, H):.2f} / {final_value(h, H):.2f}")
        done = sum(1 for c in cells if c != "missing" and not c.startswith("unfinished"))
        print(f"| {st} | {H} | " + " | ".join(cells) + f" | {n}/{done}" + ("" if done == len(seeds) else
                                                                      f" ({len(seeds) - done} not finished)") + " |")
    if a.choose:
        histories = {}
        for st in settings:
            for k in seeds:
                run = a.out / f"setting~{st}" / f"seed~{k}"
                if (run / "done").exists():
                    histories.setdefault(st, []).append(read_metrics_jsonl(run / "metrics.jsonl", {metric})[metric])
        print()
        for line in choose(histories, settings[0], a.choose, len(seeds), frac, int(raw["rl"].get("eval_every", 10))):
            print(line)
    return 0


def choose(histories: dict[str, list], reference: str, candidates: list[str], n_seeds: int, frac: float,
           cadence: int, cap: int = 100) -> list[str]:
    """Rules 1-3 of docs/tiny-default.md, applied mechanically (lines of text to print).

    1. rung: the first candidate where pg_is collapses in >= 90% of the calibration seeds (all finished),
       provided the reference (on-policy) rung collapses in none;
    2. horizon: the latest time to collapse at that rung + 2 evaluations, rounded up to the cadence, capped;
    3. measure: among time to collapse, AUC and final value at that horizon, the largest
       |mean(reference) − mean(rung)| / pooled SD.
    """
    import math

    import numpy as np

    from cppo.report.stats import run_stability, time_to_collapse

    out = []
    ref = [time_to_collapse(h, frac, cap) for h in histories.get(reference, [])]
    n_ref = sum(1 for t in ref if t and t[1])
    out.append(f"reference `{reference}`: {n_ref}/{len(ref)} collapsed" + ("" if n_ref == 0 else
               " (rule 1: reported beside the chosen rung)"))
    rung = None
    for st in candidates:
        hs = histories.get(st, [])
        ts = [time_to_collapse(h, frac, cap) for h in hs]
        k = sum(1 for t in ts if t and t[1])
        need = math.ceil(0.9 * n_seeds)
        verdict = "chosen" if len(hs) == n_seeds and k >= need else (
            "fails" if len(hs) - k > n_seeds - need else "not decided yet (runs missing)")
        out.append(f"candidate `{st}`: {k}/{len(hs)} collapsed (needs {need}/{n_seeds}): {verdict}")
        if verdict == "chosen":
            rung = st
            break
        if verdict != "fails":
            return out
    if rung is None:
        return out + ["no candidate rung qualifies"]
    times = [t[0] for t in (time_to_collapse(h, frac, cap) for h in histories[rung]) if t and t[1]]
    H = min(cap, int(math.ceil((max(times) + 2 * cadence) / cadence) * cadence))
    out.append(f"horizon: latest collapse at step {max(times)} + {2 * cadence}, rounded up to {cadence}, capped at "
               f"{cap}: {H}")
    best, scores = None, {}
    for measure in ("time_to_collapse", "auc", "final"):
        a = np.array([run_stability(h, frac, H)[measure] for h in histories[reference]])
        b = np.array([run_stability(h, frac, H)[measure] for h in histories[rung]])
        pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        scores[measure] = abs(a.mean() - b.mean()) / pooled if pooled > 0 else math.inf
        out.append(f"measure {measure}: {reference} {a.mean():.3f} (SD {a.std(ddof=1):.3f}), {rung} {b.mean():.3f} "
                   f"(SD {b.std(ddof=1):.3f}); range / pooled SD = {scores[measure]:.2f}")
        if best is None or scores[measure] > scores[best]:
            best = measure
    out.append(f"primary measure: {best}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
