"""RL step throughput: the builtin trainer against TRL's GRPOTrainer on the same work.

Same model (a tiny-profile Qwen3 checkpoint), same task (chain arithmetic), same batch (16 prompts ×
8 samples, ≤ 32 new tokens, temperature 1), same number of optimizer steps per rollout (8 mini-batches
of 16 sequences, π_old recomputed once per rollout), same clip rule (PPO clip 0.2/0.28, no KL term),
one CPU thread each, on the numeric path the suite runs on (pinned unless ``CPPO_NUMERICS=native``).
Reported per rollout step: wall time, its split into generation (sampling + scoring + π_old) and
update (the 8 optimizer steps), and tokens/s (generated response tokens per second of each part and
of the whole step). The two trainers alternate for ``--repeats`` passes, so that a host whose speed
drifts (a shared VM) weighs on both alike: the table gives medians over the passes, the speed-up each
pass's own ratio and their median.

    .venv/bin/python benchmarks/trainer.py [--scale s] [--rollouts 4] [--repeats 5] [--init CKPT] [--skip-trl]

TRL is an optional benchmark dependency (``.venv/bin/pip install trl==1.16.0 -c requirements.lock``,
which keeps the lock's versions; extra ``bench``); without it the TRL rows are skipped with a note.
Timings are wall clock on whatever else the machine is running: compare numbers from the same
invocation only.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OURS, TRL = "cppo-bench (hf engine)", "TRL GRPOTrainer"  # the table's rows


def base_checkpoint(args, cfg) -> str:
    """The scale's SFT base if present, else a fresh model saved to a temp folder (noted in the output)."""
    if args.init:
        return args.init
    base = cfg.base_dir(args.scale)
    if (base / "config.json").is_file():
        return str(base)
    from cppo.models import build_model, build_tokenizer, save_checkpoint

    tok = build_tokenizer()
    out = Path(tempfile.mkdtemp()) / "fresh"
    save_checkpoint(build_model(cfg.scales[args.scale], tok, seed=0), tok, out)
    print(f"note: no base checkpoint at {base}; using a freshly initialised model (responses run to the limit)")
    return str(out)


def bench_ours(cfg, run, init: str, rollouts: int) -> dict:
    import torch

    from cppo.train.rl import Trainer

    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(run, Path(d), init, progress=False)
        tr.train_step()  # warm-up (allocator, first-call overheads)
        gen = upd = 0.0
        tokens = 0
        for _ in range(rollouts):
            t0 = time.perf_counter()
            rb, rows = tr.rollout()
            t1 = time.perf_counter()
            answers = [r["answer"] for r in rows for _ in range(run.rl.samples_per_prompt)]
            from cppo.train.advantages import group_advantages
            from cppo.train.rl import build_sequences

            rewards = torch.tensor(tr.task.rewards(rb.texts, answers, rb.finished.tolist()))
            adv, keep = group_advantages(rewards, run.rl.samples_per_prompt)
            keep[:] = True  # time the full batch, like TRL (which trains on zero-advantage groups too)
            sb = build_sequences(rb, adv, keep, tr.tok.pad_token_id)
            tr.update(sb)
            t2 = time.perf_counter()
            gen, upd, tokens = gen + (t1 - t0), upd + (t2 - t1), tokens + rb.n_tokens
    return {"gen_s": gen / rollouts, "update_s": upd / rollouts, "tokens": tokens / rollouts}


def bench_trl(cfg, run, init: str, rollouts: int) -> dict | str:
    try:
        import trl
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        return f"TRL not installed ({e}); `.venv/bin/pip install trl==1.16.0 -c requirements.lock` to compare"
    import torch

    from cppo.models import load_model
    from cppo.tasks import get_task

    rl = run.rl
    task = get_task(vars(run.task))
    model, tok = load_model(init)
    rows = task.sample(0, rl.prompts_per_rollout * (rollouts + 1))
    ds = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows])

    def reward(prompts, completions, answer, **kw):
        return task.rewards(list(completions), list(answer))

    timings = {"gen": [], "tokens": []}
    with tempfile.TemporaryDirectory() as d:
        args = GRPOConfig(
            output_dir=d, per_device_train_batch_size=rl.prompts_per_rollout * rl.samples_per_prompt // rl.updates_per_rollout,
            num_generations=rl.samples_per_prompt, steps_per_generation=rl.updates_per_rollout, num_iterations=1,
            max_completion_length=rl.max_new_tokens, temperature=rl.temperature, top_p=rl.top_p, top_k=0,
            learning_rate=rl.lr, lr_scheduler_type="constant", beta=0.0, epsilon=0.2, epsilon_high=0.28,
            loss_type="dr_grpo", scale_rewards="group", max_steps=rl.updates_per_rollout * (rollouts + 1),
            logging_steps=1000, save_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False,
            disable_dropout=True, shuffle_dataset=False, dataloader_num_workers=0, seed=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=ds, processing_class=tok)
        inner = trainer._generate_and_score_completions

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = inner(*a, **k)
            timings["gen"].append(time.perf_counter() - t0)
            timings["tokens"].append(int(out["completion_mask"].sum()))
            return out

        trainer._generate_and_score_completions = timed
        marks = []

        class Mark(__import__("transformers").TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step % rl.updates_per_rollout == 0:
                    marks.append(time.perf_counter())

        trainer.add_callback(Mark())
        torch.set_num_threads(rl.num_threads)
        trainer.train()
    # rollout r spans marks[r-1]..marks[r]; the first rollout is the warm-up
    walls = [b - a for a, b in zip(marks[:-1], marks[1:])][-rollouts:]
    gens = timings["gen"][-rollouts:]
    wall = sum(walls) / len(walls)
    gen = sum(gens) / len(gens)
    return {"gen_s": gen, "update_s": wall - gen, "tokens": sum(timings["tokens"][-rollouts:]) / rollouts,
            "version": trl.__version__}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "tiny.yaml"))
    ap.add_argument("--scale", default="s")
    ap.add_argument("--rollouts", type=int, default=4, help="timed rollout steps (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="alternating passes (ours, then TRL); the speed-up is the median of the passes' ratios")
    ap.add_argument("--init", default=None, help="checkpoint (default: the profile's base of --scale)")
    ap.add_argument("--skip-trl", action="store_true")
    args = ap.parse_args()

    from cppo import numerics  # first: importing cppo sets the numeric path before torch starts
    import torch

    from cppo.config import load_config, resolve_run

    cfg = load_config(args.config)
    run = resolve_run(cfg, "grpo", args.scale, 0, "fresh" if "fresh" in cfg.settings else None)
    torch.set_num_threads(run.rl.num_threads)
    init = base_checkpoint(args, cfg)
    # ours and TRL alternate, pass after pass, so that a machine whose speed drifts (shared hosts) weighs
    # on both alike; each pass's ratio compares two measurements taken seconds apart
    passes: list[dict[str, dict | str]] = []
    for _ in range(args.repeats):
        p = {OURS: bench_ours(cfg, run, init, args.rollouts)}
        if not args.skip_trl:
            p[TRL] = bench_trl(cfg, run, init, args.rollouts)
        passes.append(p)

    rl = run.rl
    print(f"\nRL step throughput, scale {args.scale}, {rl.prompts_per_rollout} prompts x {rl.samples_per_prompt} samples, "
          f"{rl.updates_per_rollout} updates/rollout, <= {rl.max_new_tokens} new tokens, {rl.num_threads} thread(s), "
          f"numeric path {numerics.requested()}; per pass the mean of {args.rollouts} rollouts, "
          f"{args.repeats} alternating passes, medians\n")
    print("| trainer | step s | generation s | update s | gen tok/s | update tok/s | step tok/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in passes[0]:
        rs = [p[name] for p in passes]
        if isinstance(rs[0], str):
            print(f"| {name} | {rs[0]} | | | | | |")
            continue
        med = {k: statistics.median(r[k] for r in rs) for k in ("gen_s", "update_s", "tokens")}
        step = statistics.median(r["gen_s"] + r["update_s"] for r in rs)
        label = f"{name} {rs[0]['version']}" if "version" in rs[0] else name
        print(f"| {label} | {step:.2f} | {med['gen_s']:.2f} | {med['update_s']:.2f} | {med['tokens'] / med['gen_s']:.0f} | "
              f"{med['tokens'] / med['update_s']:.0f} | {med['tokens'] / step:.0f} |")
    ratios = [speedup(p) for p in passes if not isinstance(p.get(TRL, ""), str)]
    if ratios:
        print(f"\nspeed-up of cppo-bench over TRL (step tokens/s), per pass: {', '.join(f'{r:.2f}x' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}x")
    return 0


def speedup(p: dict) -> float:
    """Our step tokens/s over TRL's, within one pass."""
    ours, trl = p[OURS], p[TRL]
    return (ours["tokens"] / (ours["gen_s"] + ours["update_s"])) / (trl["tokens"] / (trl["gen_s"] + trl["update_s"]))


if __name__ == "__main__":
    raise SystemExit(main())
