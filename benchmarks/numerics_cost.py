"""What the pinned numeric path costs: runs of the default profile, pinned against native, side by side.

    python benchmarks/numerics_cost.py [CONFIG] --out /tmp/numcost [--setting upd4] \
        [--methods pg_is cppo] [--seeds 1 2 3] [--steps N] [--sft-steps N]

For each path (CPPO_NUMERICS=pinned, then native; cppo/numerics.py) the script runs what the pipeline
runs: one `cppo sft` of the scale (capped at --sft-steps, so both paths do the same number of steps),
then per method one grouped `cppo train --seed ... --eval` process over the seeds, from one shared
base checkpoint (the pinned path's), one thread, no MLflow. The paths alternate method by method
(pinned first, then native first, ...), so the machine's load falls on both alike.

The two paths compute different floats, so their runs are different trajectories (a run that collapses
samples other lengths); with several seeds and methods the per-run means compare the kernels' cost,
not one trajectory's. Printed: per path, the SFT's seconds per step, and per run the wall time and the
CPU time (user + sys; on a shared machine the CPU time moves less with its load), mean and median over
runs, and native / pinned.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from pipeline_cost import RUN_LINE, children_cpu  # noqa: E402  (the grouped job's per-run line; CPU of children)

PATHS = ("pinned", "native")


def run(cmd: list[str], path: str, log: Path) -> tuple[float, float, str]:
    """(wall s, CPU s, output) of one command on one numeric path; a failure stops the measurement."""
    env = {k: v for k, v in os.environ.items() if k != "CPPO_NUMERICS"}
    env.update(CPPO_NUMERICS=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0, c0 = time.perf_counter(), children_cpu()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    with open(log, "a") as fh:
        fh.write(f"$ CPPO_NUMERICS={path} {' '.join(cmd)}\n{out.stdout}{out.stderr}\n")
    if out.returncode != 0:
        raise SystemExit(f"numerics_cost: {' '.join(cmd[2:5])} ({path}) failed (exit {out.returncode}); see {log}")
    return wall, cpu, out.stdout + out.stderr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default=str(REPO / "config" / "tiny.yaml"))
    p.add_argument("--out", required=True, type=Path, help="a folder that does not exist yet")
    p.add_argument("--setting", default="upd4")
    p.add_argument("--scale", default="s")
    p.add_argument("--methods", nargs="+", default=["pg_is", "cppo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=None, help="rollout steps (default: the profile's)")
    p.add_argument("--sft-steps", type=int, default=200, help="SFT steps on both paths (default 200)")
    a = p.parse_args()
    if a.out.exists():
        print(f"numerics_cost: error: --out {a.out} exists; give a fresh folder", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True)
    log = a.out / "log.txt"
    cppo = [sys.executable, "-m", "cppo.cli"]
    steps = ["--steps", str(a.steps)] if a.steps else []

    sft = {}
    for path in PATHS:
        wall, cpu, _ = run([*cppo, "sft", a.config, "--scale", a.scale, "--out", str(a.out / f"base-{path}"),
                            "--steps", str(a.sft_steps), "--set", f"sft.eval_every={a.sft_steps}", "--no-progress"],
                           path, log)
        sft[path] = (wall / a.sft_steps, cpu / a.sft_steps)
    base = a.out / "base-pinned"

    per_run: dict[str, list[tuple[float, float]]] = {p: [] for p in PATHS}
    for i, method in enumerate(a.methods):
        for path in (PATHS if i % 2 == 0 else PATHS[::-1]):
            seeds = [str(s) for s in a.seeds]
            wall, cpu, out = run([*cppo, "train", a.config, "--method", method, "--scale", a.scale, "--seed", *seeds,
                                  "--setting", a.setting, *steps, "--init", str(base), "--eval", "--no-mlflow",
                                  "--no-progress", "--run-dir", str(a.out / path / method / "seed~{seed}")], path, log)
            assert len(RUN_LINE.findall(out)) == len(seeds), f"expected {len(seeds)} runs in the output"
            per_run[path] += [(wall / len(seeds), cpu / len(seeds))] * len(seeds)
            print(f"  {path:6s} {method:6s} {len(seeds)} runs: {wall:6.1f} s wall, {cpu:6.1f} s CPU", flush=True)

    print(f"\nper run of `{a.setting}` ({len(a.methods)} methods x {len(a.seeds)} seeds each way, "
          f"one process per method and path, start-up spread over its runs); SFT per step")
    print("| path | SFT s/step wall | SFT s/step CPU | run wall mean | run wall median | run CPU mean | run CPU median |")
    print("|---|---|---|---|---|---|---|")
    stats = {}
    for path in PATHS:
        w = [x for x, _ in per_run[path]]
        c = [y for _, y in per_run[path]]
        stats[path] = (statistics.mean(w), statistics.mean(c))
        print(f"| {path} | {sft[path][0]:.3f} | {sft[path][1]:.3f} | {statistics.mean(w):.1f} s | "
              f"{statistics.median(w):.1f} s | {statistics.mean(c):.1f} s | {statistics.median(c):.1f} s |")
    print(f"\npinned / native: wall {stats['pinned'][0] / stats['native'][0]:.2f}x, "
          f"CPU {stats['pinned'][1] / stats['native'][1]:.2f}x per run; "
          f"SFT CPU per step {sft['pinned'][1] / sft['native'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
