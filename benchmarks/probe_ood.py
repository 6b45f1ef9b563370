"""Choose the chain task's OOD length from the SFT base alone, before any RL run.

    python benchmarks/probe_ood.py BASE_CHECKPOINT [--K 24] [--ood 25 26 28 30 32] [--n 256]

Prints the base model's greedy and sampled accuracy on `chain_ood` at each candidate length. The
rule used for the tiny profile (docs/studies.md, "The pressure ladder"): the longest candidate at which the
base still solves at least 10 % greedily, so that the split can both rise and fall under RL. A
split at 0 for every run (the old K + 8) carries no information about the rules.
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from cppo.models import load_model
    from cppo.tasks import get_task
    from cppo.train.rl import evaluate
    from cppo.train.rollout import HFEngine

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base")
    p.add_argument("--K", type=int, default=24)
    p.add_argument("--ood", type=int, nargs="+", default=[25, 26, 28, 30, 32])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--max-operand", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    model, tok = load_model(a.base)
    engine = HFEngine(model, tok)
    print(f"| split length | greedy acc | sampled acc (T=1) |\n|---|---|---|")
    for k in [a.K, *a.ood]:
        task = get_task({"name": "chain", "K": a.K, "ood_K": k, "max_operand": a.max_operand, "n_test": a.n})
        split = "chain_id" if k == a.K else "chain_ood"
        m = evaluate(engine, task, [split], a.n, 1.0, k + 1, seed=0)
        print(f"| {k}{' (chain_id)' if k == a.K else ''} | {m[f'eval/{split}/greedy_acc']:.3f} | "
              f"{m[f'eval/{split}/sampled_acc']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
