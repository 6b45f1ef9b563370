"""Per-run cost of the default profile's runs, before and after a change, side by side in one invocation.

    python benchmarks/run_cost.py [CONFIG] --base results/tiny/base/scale~s --out /tmp/runcost \
        [--setting upd4] [--methods pg_is grpo dppo cppo] [--seeds 1 2] [--rounds 2] [--steps N] \
        [--before rl.recompute_old_logp=always ...] [--after KEY=VALUE ...] [--set KEY=VALUE ...]

Each side runs the pipeline's grouped job command for one method and its seeds (`cppo train --seed
S1 S2 ... --eval`, one process, one thread, no MLflow), with the profile's overrides (--set) plus its
own (--before / --after: by default `rl.recompute_old_logp=always` against the default `auto`). The
sides alternate job by job (before first, then after first, ...), for --rounds rounds over the
methods, so that the machine's load falls on both alike. Per run: its training and evaluation seconds
as the process times them (start-up and exit spread evenly over its runs), and the process's CPU time
(user + sys) shared evenly over its runs. The table gives medians over every run of a side.

Afterwards each run's metrics.jsonl must be byte-identical between the sides once `rule/k3_old_mu`
(the one diagnostic `auto` logs at evaluated steps only) is left out of both, and its evaluation
files equal; the exit status is 1 if not. Wall times move with the machine's load; CPU times much less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_cost import CPU, RUN_LINE, cppo, env_for, eval_files, run  # noqa: E402

DIAGNOSTIC = "rule/k3_old_mu"  # logged at every step with `always`, at evaluated steps with `auto`


def comparable(path: Path) -> list[dict]:
    """metrics.jsonl without the π_old diagnostic."""
    return [{k: v for k, v in json.loads(ln).items() if k != DIAGNOSTIC} for ln in path.read_text().splitlines()]


def main() -> int:
    from pipeline_cost import REPO

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default=str(REPO / "config" / "tiny.yaml"))
    p.add_argument("--base", required=True, help="the scale's SFT base checkpoint (cppo sft)")
    p.add_argument("--out", required=True, type=Path, help="a fresh folder for both sides' runs")
    p.add_argument("--setting", default="upd4")
    p.add_argument("--scale", default="s")
    p.add_argument("--methods", nargs="+", default=["pg_is", "grpo", "dppo", "cppo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=1, help="passes over the methods (fresh run folders each)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--before", action="append", default=None, metavar="KEY=VALUE",
                   help="overrides of the 'before' side (default: rl.recompute_old_logp=always)")
    p.add_argument("--after", action="append", default=[], metavar="KEY=VALUE", help="overrides of the 'after' side")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides of both sides")
    a = p.parse_args()
    sides = {"before": a.before if a.before is not None else ["rl.recompute_old_logp=always"], "after": a.after}
    if a.out.exists():
        print(f"run_cost: error: --out {a.out} exists; give a fresh folder", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True)
    env = env_for(a.out, mlflow=False)
    common = ["--scale", a.scale, "--setting", a.setting, "--init", str(a.base), "--no-progress", "--no-mlflow"]
    common += ["--steps", str(a.steps)] if a.steps is not None else []
    for s in a.set:
        common += ["--set", s]
    per_run: dict[str, list[tuple[float, float, float]]] = {w: [] for w in sides}  # (train s, eval s, cpu s)
    folders: list[tuple[Path, Path]] = []
    jobs = [(r, m) for r in range(a.rounds) for m in a.methods]
    t_start = time.perf_counter()
    for i, (r, m) in enumerate(jobs):
        order = ("before", "after") if i % 2 == 0 else ("after", "before")
        for w in order:
            root = a.out / w / f"round~{r}" / f"method~{m}"
            log = a.out / w / "log.txt"
            log.parent.mkdir(parents=True, exist_ok=True)
            start = log.stat().st_size if log.exists() else 0
            overrides = [x for s in sides[w] for x in ("--set", s)]
            wall = run([*cppo(), "train", a.config, "--method", m, "--seed", *map(str, a.seeds),
                        "--run-dir", str(root / "seed~{seed}"), "--eval", *common, *overrides], env, log)
            lines = {Path(d).name: (float(t), float(e)) for d, t, e in RUN_LINE.findall(log.read_text()[start:])}
            inner = [lines[f"seed~{k}"] for k in a.seeds]
            share = (wall - sum(t + e for t, e in inner)) / len(a.seeds)
            per_run[w] += [(t + share, e, CPU[-1] / len(a.seeds)) for t, e in inner]
        folders += [(a.out / "before" / f"round~{r}" / f"method~{m}" / f"seed~{k}",
                     a.out / "after" / f"round~{r}" / f"method~{m}" / f"seed~{k}") for k in a.seeds]
        print(f"job {i + 1}/{len(jobs)} done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    same = [comparable(b / "metrics.jsonl") == comparable(f / "metrics.jsonl") for b, f in folders]
    same_eval = [eval_files(b) == eval_files(f) for b, f in folders]
    n = len(per_run["before"])
    print(f"\n{n} runs per side ({a.setting}, {', '.join(a.methods)}, seeds {' '.join(map(str, a.seeds))}, "
          f"{a.rounds} round(s), scale {a.scale}); sets: {' '.join(a.set) or 'none'}")
    for w in sides:
        print(f"  {w}: {' '.join(sides[w]) or '(profile defaults)'}")
    print("\n| per run, median | before | after | after / before |\n|---|---|---|---|")
    for j, name in enumerate(("training wall s", "evaluation wall s", "CPU s (user + sys)")):
        b, f = (statistics.median(x[j] for x in per_run[w]) for w in ("before", "after"))
        print(f"| {name} | {b:.2f} | {f:.2f} | {f / b:.3f} |")
    b, f = (statistics.median(x[0] + x[1] for x in per_run[w]) for w in ("before", "after"))
    print(f"| training + evaluation wall s | {b:.2f} | {f:.2f} | {f / b:.3f} |")
    for m in a.methods:
        idx = [i for i, (r, mm) in enumerate((r, mm) for r, mm in jobs for _ in a.seeds) if mm == m]
        b, f = (statistics.median(per_run[w][i][2] for i in idx) for w in ("before", "after"))
        print(f"| {m}: CPU s | {b:.2f} | {f:.2f} | {f / b:.3f} |")
    print(f"\nmetrics.jsonl byte-identical (without {DIAGNOSTIC}): {sum(same)}/{len(same)}; "
          f"evaluation files equal: {sum(same_eval)}/{len(same_eval)}")
    return 0 if all(same) and all(same_eval) else 1


if __name__ == "__main__":
    raise SystemExit(main())
