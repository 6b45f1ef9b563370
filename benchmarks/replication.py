"""Two reports of the same profile side by side: do their declared verdicts contradict each other?

    python benchmarks/replication.py RUN_A/results/tiny RUN_B/results/tiny [--names "seeds 1-12" "seeds 101-112"]

Reads each folder's `comparisons.csv` (written by `cppo report`) and prints one markdown row per
primary comparison: each run's difference with its 95% interval, Holm p and verdict, and whether the
two agree. A **contradiction** is a comparison decided one way in one run and the other way in the
other; "decided in one, undecided in the other" is not one (it is what power below 100% looks like).
Exit status 1 when there is a contradiction, 2 on a bad call.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def _rows(folder: Path) -> dict[tuple[str, str, str, str], dict]:
    path = folder / "comparisons.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (run `cppo report` on that grid first)")
    with open(path, newline="") as fh:
        return {(r["setting"], r["scale"], r["focal"], r["other"]): r for r in csv.DictReader(fh)
                if r["role"] == "primary"}


def _num(v: str) -> float:
    return float(v) if v not in ("", None) else math.nan


def _cell(r: dict | None, unit: str) -> str:
    if r is None:
        return "–"
    k = 100.0 if unit == "pts" else 1.0
    d, lo, hi = (_num(r[c]) * k for c in ("diff", "ci95_lo", "ci95_hi"))
    ph = _num(r["p_holm"])
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}], Holm p {ph:.3f}: {r['verdict']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--names", nargs=2, default=None, help="column names of the two runs")
    a = p.parse_args(argv)
    try:
        ra, rb = _rows(a.a), _rows(a.b)
    except FileNotFoundError as err:
        print(f"replication: {err}", file=sys.stderr)
        return 2
    names = a.names or [str(a.a), str(a.b)]
    measure = next(iter(ra.values()), next(iter(rb.values()), {})).get("measure", "")
    unit = "steps" if measure == "time_to_collapse" else "pts"
    print(f"Primary measure: {measure} (difference in {'points' if unit == 'pts' else 'steps'}, [95% CI])\n")
    print(f"| setting | scale | comparison | {names[0]} | {names[1]} | agreement |")
    print("|---|---|---|---|---|---|")
    contradictions = 0
    for key in sorted(set(ra) | set(rb)):
        x, y = ra.get(key), rb.get(key)
        vx, vy = (r["verdict"] if r else "–" for r in (x, y))
        decided = [v for v in (vx, vy) if v.endswith((" higher", " lower"))]
        if len(decided) == 2 and vx != vy:
            agree, contradictions = "**contradiction**", contradictions + 1
        elif len(decided) == 2:
            agree = "same verdict"
        elif len(decided) == 1:
            agree = "decided in one run only (no contradiction)"
        else:
            agree = "undecided in both"
        same_sign = x and y and (_num(x["diff"]) > 0) == (_num(y["diff"]) > 0)
        agree += "; differences of the same sign" if same_sign else "; differences of opposite sign"
        print(f"| {key[0]} | {key[1]} | {key[2]} − {key[3]} | {_cell(x, unit)} | {_cell(y, unit)} | {agree} |")
    print(f"\n{contradictions} contradiction(s).")
    return 1 if contradictions else 0


if __name__ == "__main__":
    raise SystemExit(main())
