"""How many seeds a grid fits in a wall-time budget, and how large a difference each seed count could detect.

    python benchmarks/seed_budget.py results/tiny [--cores 2] [--budget-min 25] [--margin 0.05]
                                     [--per-run-s 47.5] [--seeds 8 10 12 14 16 20 30]
    python benchmarks/seed_budget.py results/tiny --slurm --cores 64 --budget-min 60   # on a SLURM cluster

For each candidate seed count n (the same n for every method of the grid):

- **predicted wall time** of the README's first command: set-up, the SFT base (alone: the other
  cores wait for it), the grid's runs in jobs of `ceil(n / jobs_per_method)` runs spread over the
  cores (longest job first), one process start per job, then the report;
- **detectable difference** of each declared comparison (`report.comparisons` of the folder's
  resolved `config.yaml`): the difference a grid of n + n seeds would decide with 80% power at
  alpha / m, from the SDs observed in the folder's `stability.csv` (`cppo.report.compare.detectable_at`,
  the formula the report prints for the observed n).

The chosen n is the largest whose prediction is at most (1 − margin) × budget. The timing defaults
are the figures measured on the 20-seed `tiny` run (docs/tiny-default.md, "Cost" and "Amendment"):
47.5 s per run (46 s of training, 1.5 s of evaluation), 8 s per process start, 60 s for the SFT
base, 123 s of set-up, 42 s of report. Pass your own with more cores or another machine.

``--slurm``: the grid sent to a SLURM cluster with ``workflow/profiles/slurm-cpu``, ``--cores`` being
the cluster's cores free for it. No set-up (the environment exists), and every SLURM job (the SFT base
and each grid job) costs ``--slurm-overhead-s`` more than the same job run locally: the job's own
Snakemake start inside the allocation and the wait until the next status check sees it finished
(docs/gpu-and-cluster.md, "CPU grids on a SLURM cluster", measured on a one-node cluster). A cluster
runs at most as many jobs at once as the grid has: more cores than jobs do not shorten it, a smaller
``grid.runs_per_job`` (``--jobs-per-method``) does.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import sys
from pathlib import Path

import yaml

from cppo.report.compare import detectable_at
from cppo.report.grid import declared


SETUP_S = 123.0  # scripts/bootstrap on a fresh clone
SLURM_OVERHEAD_S = 25.0  # per SLURM job, measured on the one-node cluster (docs/gpu-and-cluster.md)


def makespan(job_runs: list[int], cores: int, per_run_s: float, start_s: float) -> float:
    """Seconds until the last of the jobs ends, each job to the first free core, longest first."""
    free = [0.0] * cores
    for runs in sorted(job_runs, reverse=True):
        t = heapq.heappop(free)
        heapq.heappush(free, t + start_s + runs * per_run_s)
    return max(free) if job_runs else 0.0


def predicted_s(n: int, a: argparse.Namespace, n_methods: int) -> tuple[float, int]:
    """(predicted seconds of the whole command, number of jobs) at n seeds per method."""
    k = math.ceil(n / a.jobs_per_method)
    per_method = [k] * (n // k) + ([n % k] if n % k else [])
    jobs = per_method * n_methods
    extra = a.slurm_overhead_s if a.slurm else 0.0  # per SLURM job
    setup = a.setup_s if a.setup_s is not None else (0.0 if a.slurm else SETUP_S)
    return (setup + a.base_s + extra + makespan(jobs, a.cores, a.per_run_s, a.job_start_s + extra) + a.report_s,
            len(jobs))


def observed_sds(folder: Path, measure: str, setting: str) -> dict[str, dict[int, float]]:
    """Per method, the per-seed values of `measure` at `setting` (stability.csv's seed_values)."""
    out: dict[str, dict[int, float]] = {}
    with open(folder / "stability.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["benchmark"] == measure and r["setting"] == setting and r.get("seed_values"):
                out[r["method"]] = {int(s): float(v) for s, v in json.loads(r["seed_values"]).items()}
    return out


def _sd(values) -> float:
    v = list(values)
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished report folder (config.yaml, stability.csv)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[6, 8, 10, 12, 13, 14, 16, 20, 30, 40])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--budget-min", type=float, default=25.0)
    ap.add_argument("--margin", type=float, default=0.05, help="fraction of the budget kept for host variance")
    ap.add_argument("--per-run-s", type=float, default=47.5, help="one run's training plus its evaluation")
    ap.add_argument("--job-start-s", type=float, default=8.0, help="one process start (imports)")
    ap.add_argument("--base-s", type=float, default=60.0, help="the SFT base (runs alone)")
    ap.add_argument("--setup-s", type=float, default=None,
                    help=f"scripts/bootstrap on a fresh clone (default {SETUP_S:g}; 0 with --slurm)")
    ap.add_argument("--report-s", type=float, default=42.0)
    ap.add_argument("--jobs-per-method", type=int, default=2)
    ap.add_argument("--slurm", action="store_true",
                    help="on a SLURM cluster (workflow/profiles/slurm-cpu); --cores: its cores free for the grid")
    ap.add_argument("--slurm-overhead-s", type=float, default=SLURM_OVERHEAD_S,
                    help="seconds each SLURM job adds to the same job run locally")
    a = ap.parse_args(argv)
    cfg_path = a.results / "config.yaml"
    if not cfg_path.is_file() or not (a.results / "stability.csv").is_file():
        print(f"seed_budget: {a.results} needs config.yaml and stability.csv (a `cppo report` folder)", file=sys.stderr)
        return 2
    if min(a.seeds) < 1 or a.cores < 1 or a.jobs_per_method < 1 or not 0 <= a.margin < 1:
        print("seed_budget: --seeds, --cores and --jobs-per-method must be >= 1, --margin in [0, 1)",
              file=sys.stderr)
        return 2
    cfg = yaml.safe_load(cfg_path.read_text())
    dec = declared(cfg)
    methods = list((cfg.get("grid") or {}).get("methods") or [])
    limit = a.budget_min * 60 * (1 - a.margin)
    comps: list[tuple[str, str, str, float, float]] = []  # (setting, focal, other, sd_a, sd_b)
    if dec is not None:
        for setting in dec.settings:
            vals = observed_sds(a.results, dec.primary, setting)
            for other in dec.against:
                fa, fb = vals.get(dec.focal, {}), vals.get(other, {})
                if len(fa) < 2 or len(fb) < 2:
                    continue
                if dec.paired:
                    common = sorted(set(fa) & set(fb))
                    comps.append((setting, dec.focal, other, _sd(fa[s] - fb[s] for s in common), 0.0))
                else:
                    comps.append((setting, dec.focal, other, _sd(fa.values()), _sd(fb.values())))
    unit = 100.0 if dec is not None and dec.primary in ("auc", "best", "final", "score") else 1.0
    head = ["seeds per method", "runs", "jobs", "predicted", f"≤ {limit / 60:.2f} min?"]
    head += [f"detectable {f} − {o} ({s})" for s, f, o, _, _ in comps]
    where = f"a SLURM cluster's {a.cores} cores (+{a.slurm_overhead_s:g} s per job)" if a.slurm else f"{a.cores} cores"
    print(f"{len(methods)} methods, {where}, {a.per_run_s:g} s per run; detectable on "
          f"{dec.primary if dec else '–'} at 80% power, alpha {dec.alpha if dec else 0.05:g} / {len(comps) or 1}"
          f"{' (points)' if unit == 100 else ''}\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    chosen = None
    for n in sorted(set(a.seeds)):
        t, jobs = predicted_s(n, a, len(methods))
        fits = t <= limit
        chosen = n if fits else chosen
        mdd = [detectable_at(sa, sb, n, n, dec.paired, dec.alpha / len(comps), resamples=dec.resamples) * unit
               if n >= 2 else math.inf for _, _, _, sa, sb in comps]  # one seed: no difference is decidable
        cells = [str(n), str(n * len(methods)), str(jobs), f"{t / 60:.1f} min", "yes" if fits else "no"]
        cells += [f"{d:.1f}" if math.isfinite(d) else "∞" for d in mdd]
        print("| " + " | ".join(cells) + " |")
    print(f"\nlargest seed count within the budget: {chosen if chosen is not None else 'none of those tried'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
