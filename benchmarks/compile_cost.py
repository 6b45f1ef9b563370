"""What ``torch.compile`` would buy the default's step on the CPU, and what it would change.

    .venv/bin/python benchmarks/compile_cost.py [--method cppo] [--setting upd4] [--steps 12] [--init CKPT]

Three trainers of the same run (the profile's method, setting and seed 1, from the same SFT base) live
in one process: one eager, and two whose model forward is compiled (``torch.compile(dynamic=True)``,
which the rollout, the update and the evaluation all go through). After one warm-up step each (for
the compiled ones: the compilation, timed), they take ``--steps`` training steps in turn, eager then
compiled A then compiled B, so that a host whose speed drifts weighs on all alike. The table gives
the median step time of each and the compiled/eager ratio; then whether the compiled trainers agree
with each other bit for bit (one-host determinism) and how far the compiled run's first logged
numbers sit from the eager run's (compilation changes floats: fused kernels round differently).

The inductor cache is the user's (``TORCHINDUCTOR_CACHE_DIR``); the compile time printed is a cold one
only on a fresh cache. Inductor's generated C++ is built for the host (``-march=native`` unless
``torch._inductor.config.cpp.march`` is set), which is why the suite does not compile by default:
see docs/pipeline.md, "The step's cost".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "tiny.yaml"))
    ap.add_argument("--method", default="cppo")
    ap.add_argument("--setting", default="upd4")
    ap.add_argument("--scale", default="s")
    ap.add_argument("--steps", type=int, default=12, help="timed training steps per trainer")
    ap.add_argument("--init", default=None, help="SFT base (default: the profile's base of --scale)")
    a = ap.parse_args()

    from cppo import numerics  # first: importing cppo sets the numeric path before torch starts
    import torch

    from cppo.config import load_config, resolve_run
    from cppo.train.rl import Trainer

    cfg = load_config(a.config)
    init = a.init or str(cfg.base_dir(a.scale))
    if not (Path(init) / "config.json").is_file():
        print(f"compile_cost: error: no SFT base at {init}; give --init", file=sys.stderr)
        return 2
    run = resolve_run(cfg, a.method, a.scale, 1, a.setting)
    names = ("eager", "compiled A", "compiled B")
    trainers, first_s = {}, {}
    logs: dict[str, list[dict]] = {n: [] for n in names}  # every step's metrics, the warm-up step first
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            tr = Trainer(run, Path(d) / name.replace(" ", "_"), init, progress=False)
            if name != "eager":
                tr.model.forward = torch.compile(tr.model.forward, dynamic=True)
            t0 = time.perf_counter()
            logs[name].append(tr.train_step()[0])
            first_s[name] = time.perf_counter() - t0
            trainers[name] = tr
        times = {n: [] for n in names}
        for _ in range(a.steps):
            for n in names:
                t0 = time.perf_counter()
                m, _ = trainers[n].train_step()
                times[n].append(time.perf_counter() - t0)
                logs[n].append(m)
    eager = statistics.median(times["eager"])
    print(f"\ntorch.compile of the model forward, {a.method} at {a.setting}, scale {a.scale}, one thread, numeric "
          f"path {numerics.requested()}, torch {torch.__version__}; {a.steps} steps each, alternating\n")
    print("| trainer | first step s (compiles) | median step s | / eager |\n|---|---|---|---|")
    for n in names:
        med = statistics.median(times[n])
        print(f"| {n} | {first_s[n]:.1f} | {med:.3f} | {med / eager:.3f} |")
    same = logs["compiled A"] == logs["compiled B"]
    print(f"\ncompiled A and B bit-identical over {a.steps + 1} steps' metrics: {same}")
    e, c = logs["eager"][0], logs["compiled A"][0]
    diffs = {k: abs(c[k] - e[k]) for k in sorted(e) if k in c and isinstance(e[k], float)}
    worst = max(diffs, key=diffs.get)
    print(f"first step, compiled vs eager: {sum(v > 0 for v in diffs.values())}/{len(diffs)} metrics differ; "
          f"largest |difference| {diffs[worst]:.3g} ({worst})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
