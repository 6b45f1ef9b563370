"""Time each trust-region rule: loss + mask + diagnostics + aggregation + backward, per (B, T).

    .venv/bin/python benchmarks/rules.py                      # CPU, and CUDA when present
    .venv/bin/python benchmarks/rules.py --sizes 64x512 --devices cpu --repeat 5

Prints a markdown table with the median time (CPU: process CPU time, so that other processes on a
shared machine do not inflate it; CUDA: synchronised wall time) of one full rule step (the rule call, which includes
the shared diagnostics and their single host transfer, then `aggregate_loss` and `backward()`) and
its ratio to `ppo_clip` on the same device and size (rules are interleaved round by round in a shuffled
order, so that background load and cache state affect them alike). Inputs are synthetic (`cppo.rules.testing`) with
V = 32 and K = 20 (the paper's top-K), float32. The goal of the suite: cppo ≤ 1.3× ppo_clip.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from tqdm import tqdm

# (label, rule name, params): the variants that separate the cost of the top-K divergence from the cost of
# the rule's own mask. Every registered rule is also timed at its defaults (`variants()`), so a rule added
# by a plugin or a new baseline file is in the table without an edit here.
EXTRA_VARIANTS = [
    ("dppo (binary_tv)", "dppo", {"divergence": "binary_tv"}),
    ("cppo (topk_tv, fixed)", "cppo", {"delta_b_mode": "fixed"}),
    ("cppo (binary_tv, p90)", "cppo", {"divergence": "binary_tv"}),
    # δ_b chosen so that every row's P90 falls inside (δ_b, 2δ_b): the exact top-k path of the P90
    ("cppo (binary_tv, p90 in band)", "cppo", {"divergence": "binary_tv", "delta_b": 0.1}),
    ("cppo (binary_tv, fixed)", "cppo", {"divergence": "binary_tv", "delta_b_mode": "fixed"}),
    ("cppo (soft gate)", "cppo", {"mask_mode": "soft"}),
]


def variants() -> list[tuple[str, str, dict]]:
    """ppo_clip first (the ratio's denominator), then every other registered rule at its defaults, then
    EXTRA_VARIANTS. The rule names come from the registry."""
    from cppo.rules import list_rules

    names = ["ppo_clip"] + [n for n in list_rules() if n != "ppo_clip"]
    return [(n, n, {}) for n in names] + EXTRA_VARIANTS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(rule, batch) -> float:
    """Seconds of one rule(batch) + aggregation + backward."""
    from cppo.rules import aggregate_loss

    device = batch.logp.device
    # CPU: process CPU time (all torch threads), robust to other processes competing for the cores;
    # CUDA: wall time between synchronisations
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    batch.logp.grad = None
    _sync(device)
    t0 = clock()
    out = rule(batch)
    aggregate_loss(out.loss, batch.mask, "seq-mean-token-sum-norm", batch.mask.shape[1]).backward()
    _sync(device)
    return clock() - t0


def time_rules(rules, batch, repeat: int, warmup: int = 2) -> list[float]:
    """Median seconds per rule; rounds interleave the rules so that load drifts hit all of them alike."""
    for _, rule in rules:
        for _ in range(warmup):
            step_seconds(rule, batch)
    times = [[] for _ in rules]
    order = list(range(len(rules)))
    rng = random.Random(0)
    for _ in tqdm(range(repeat), desc="rounds", leave=False):
        rng.shuffle(order)  # no rule always runs first (cold caches) in a round
        for i in order:
            times[i].append(step_seconds(rules[i][1], batch))
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    from cppo.rules import get_rule
    from cppo.rules.testing import random_batch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64x512,256x1024,64x4096", help="comma-separated BxT")
    ap.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    rules = [(label, get_rule(name, **params)) for label, name, params in variants()]
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print("\n| device | B×T | rule | ms (median) | × ppo_clip |\n| --- | --- | --- | ---: | ---: |")
    for dev in devices:
        for B, T in sizes:
            batch = random_batch(B=B, T=T, V=32, K=20, seed=0, min_len=T // 4, device=dev)
            secs = time_rules(rules, batch, args.repeat)
            for (label, _), sec in zip(rules, secs):
                print(f"| {dev} | {B}×{T} | {label} | {sec * 1e3:.2f} | {sec / secs[0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
