"""Rollout tokens/s of the three engines on CPU: `hf`, `hf_fast` and `vllm` (vLLM's CPU build).

The tiny profile's work: one rollout of 16 chain prompts x 8 samples, up to 32 new tokens, temperature 1,
top-20 recorded, with the trainer's model (float32, random weights of a scale; nothing is downloaded).
Each engine: one warm-up rollout, then the best of `--repeats` timed rollouts; tokens/s counts the
generated tokens (EOS included). vLLM's start-up is reported apart. Run it with the python of
`.venv-vllm` (the only environment with all three engines):

    .venv-vllm/bin/python benchmarks/engines_cpu.py [--scale m] [--threads 1] [--repeats 3] [--dtype float32]

Timings are wall clock on whatever else the machine is running: compare numbers from one invocation only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", help="vLLM's dtype (the hf engines sample in the model's float32)")
    ap.add_argument("--engines", default="hf,hf_fast,vllm")
    args = ap.parse_args()

    import torch

    from cppo.models import build_model, build_tokenizer
    from cppo.tasks import get_task
    from cppo.train.rollout import get_engine

    torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    model = build_model(args.scale, tok, seed=0)
    task = get_task({"name": "chain", "K": 24, "modulus": 10, "max_operand": 3})
    import random

    prompts = [r["problem"] for r in task.sample(random.Random(0), 16)]
    rows = {}
    for name in args.engines.split(","):
        t0 = time.perf_counter()
        eng = get_engine(name, model, tok, **({"dtype": args.dtype} if name == "vllm" else {}))
        start = time.perf_counter() - t0
        best = 0.0
        for i in range(args.repeats + 1):
            t0 = time.perf_counter()
            b = eng.generate(prompts, n=8, max_new_tokens=32, temperature=1.0, top_p=1.0, topk=20,
                             generator=torch.Generator().manual_seed(i))
            dt = time.perf_counter() - t0
            if i:  # the first rollout warms up
                best = max(best, b.n_tokens / dt)
        rows[name] = {"tokens_per_s": round(best), "start_s": round(start, 1), "threads": torch.get_num_threads()}
        print(f"{name:8s} {best:8.0f} tokens/s   (engine start {start:.1f} s)", flush=True)
    print(json.dumps({"scale": args.scale, "threads": args.threads, "vllm_dtype": args.dtype, "engines": rows}))


if __name__ == "__main__":
    main()
