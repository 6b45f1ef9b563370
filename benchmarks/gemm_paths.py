"""The matmuls of the default's step on the pinned numeric path and on the native one, side by side.

    .venv/bin/python benchmarks/gemm_paths.py [--rounds 5] [--repeats 300]

The tiny profile's scale-s model (hidden 64, 4 query and 2 key/value heads of 16, MLP 256, a vocabulary
of about 100) gives a handful of matmul shapes: the update's projections over about 1,000 tokens of a
mini-batch, their weight gradients (the 1,000 tokens become the summed dimension), and the rollout's
decode step over 128 sequences. Each shape is timed in a child process on each path (the path is fixed
when MKL starts, so it cannot change inside one process), alternating pinned and native for
``--rounds`` rounds, one thread; the table gives the median time per call, GFLOP/s and the ratio.
Where the pin's cost lands: `MKL_CBWR=COMPATIBLE` runs MKL's SSE2 kernels (no FMA), the native branch
its AVX2/FMA (or AVX-512) ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (what, M, K, N): C (M, N) = A (M, K) @ B (K, N)
SHAPES = [
    ("update: q/o projection", 1024, 64, 64),
    ("update: k/v projection", 1024, 64, 32),
    ("update: gate/up", 1024, 64, 256),
    ("update: down", 1024, 256, 64),
    ("update: lm head", 1024, 64, 100),
    ("update: gate/up weight grad", 256, 1024, 64),
    ("rollout: gate/up (decode, 128 rows)", 128, 64, 256),
]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import cppo  # the numeric path of CPPO_NUMERICS, set before torch starts MKL
import torch
torch.set_num_threads(1)
shapes, n = json.loads(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
out = []
for M, K, N in shapes:
    a, b = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
    for _ in range(20):
        a @ b
    t = time.perf_counter()
    for _ in range(n):
        a @ b
    out.append((time.perf_counter() - t) / n)
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating child processes per path")
    ap.add_argument("--repeats", type=int, default=300, help="calls per shape per child")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from cppo import numerics  # (this process runs no kernel: its own pinning is harmless)

    shapes = [s[1:] for s in SHAPES]
    times: dict[str, list[list[float]]] = {path: [] for path in numerics.PATHS}
    for _ in range(a.rounds):
        for path in times:
            env = {**os.environ, numerics.SWITCH: path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            if path == "native":  # the opt-out keeps pin variables it finds set: start the child without them
                for var in numerics.PINNED_ENV:
                    env.pop(var, None)
            r = subprocess.run([sys.executable, "-c", CHILD, str(REPO), json.dumps(shapes), str(a.repeats)],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"gemm_paths: error: the {path} child failed: {r.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                return 1
            times[path].append(json.loads(r.stdout))
    print(f"\nfloat32 matmul, one thread, median over {a.rounds} alternating processes per path\n")
    print("| shape | M × K × N | pinned µs | pinned GFLOP/s | native µs | native GFLOP/s | pinned / native |")
    print("|---|---|---|---|---|---|---|")
    for i, (what, M, K, N) in enumerate(SHAPES):
        p, n = (statistics.median(r[i] for r in times[w]) for w in ("pinned", "native"))
        fl = 2 * M * K * N / 1e9
        print(f"| {what} | {M} × {K} × {N} | {p * 1e6:.0f} | {fl / p:.1f} | {n * 1e6:.0f} | {fl / n:.1f} | {p / n:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
