"""SFT warm start: teach a from-scratch model the chain task from worked solutions.

RL needs a base policy that sometimes succeeds (GRPO learns nothing from groups that all fail) and
often fails (nothing to improve otherwise). The prototype's base: ~30% sampled (temperature 1),
~87% greedy accuracy. Accuracy jumps abruptly during SFT (the model "gets" the arithmetic within
a few dozen steps), so a fixed step budget lands either far below or far above that band. We
therefore stop early: every ``eval_every`` steps the sampled accuracy on a validation split
(``chain_val``, disjoint from the test splits) is measured, and training stops as soon as it
reaches ``target_sampled_acc``.

Loss: next-token cross-entropy on the response tokens (solution + end token) only; the prompt is
context. Each step draws a fresh batch from the task's generator (no epochs, no overfitting).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch

from cppo.config import Config, SFTConfig


def sft_batch(rows: list[dict], tok) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids of prompt ++ solution ++ <eos>, right-padded, and (B, L) labels (-100 off-response)."""
    seqs, labels = [], []
    for r in rows:
        p = tok(r["problem"], add_special_tokens=False).input_ids
        s = tok(r["solution"], add_special_tokens=False).input_ids + [tok.eos_token_id]
        seqs.append(p + s)
        labels.append([-100] * len(p) + s)
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, :len(s)] = torch.tensor(s)
        lab[i, :len(l)] = torch.tensor(l)
    return ids, lab


def run_sft(cfg: Config, scale: str, sft: SFTConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the scale's model from scratch, save it to ``out_dir`` with ``sft_metrics.json``."""
    from tqdm import tqdm

    from cppo.models import build_model, build_tokenizer, n_params, save_checkpoint
    from cppo.tasks import get_task
    from cppo.train.checkpoint import atomic_write_json, seed_everything
    from cppo.train.device import resolve_device
    from cppo.train.rl import evaluate
    from cppo.train.rollout import HFEngine

    device = resolve_device(sft.device, "sft.device")
    torch.set_num_threads(sft.num_threads)
    seed_everything(sft.seed)
    if cfg.task.name != "chain":
        raise ValueError("cppo sft: the builtin warm start supports the chain task; math profiles start "
                         "from hub models (scales with `hub:`)")
    if "hub" in cfg.scales[scale]:
        raise ValueError(f"cppo sft: scale {scale!r} is a hub model ({cfg.scales[scale]['hub']}); it is its own base")
    tok = build_tokenizer()
    model = build_model(cfg.scales[scale], tok, seed=sft.seed)
    model.config._attn_implementation = "sdpa"
    model.to(device)
    task = get_task(cfg.task)
    rng = random.Random(sft.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=sft.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(sft.warmup_steps, 1)))
    engine = HFEngine(model, tok)
    rl_max = cfg.rl.get("max_new_tokens", 32)
    max_new = sft.max_new_tokens or int(rl_max[scale] if isinstance(rl_max, dict) else rl_max)
    history, stopped, step = [], "max_steps", 0
    t0 = time.perf_counter()
    bar = tqdm(total=sft.max_steps, desc=f"sft/{scale}", disable=not progress, dynamic_ncols=True)

    def validate(greedy: bool = False) -> dict[str, float]:
        # the stopping test needs only sampled accuracy; greedy is measured once at the end (saves time)
        modes = ("greedy", "sampled") if greedy else ("sampled",)
        m = evaluate(engine, task, ["chain_val"], sft.val_n, sft.temperature, max_new, seed=sft.seed, modes=modes)
        rec = {"step": step, "loss": last_loss, "sampled_acc": m["eval/chain_val/sampled_acc"],
               "greedy_acc": m.get("eval/chain_val/greedy_acc"), "time_s": time.perf_counter() - t0}
        history.append(rec)
        return rec

    last_loss = float("nan")
    model.train()
    while step < sft.max_steps:
        ids, labels = (t.to(device) for t in sft_batch(task.sample(rng, sft.batch_size), tok))
        logits = model(input_ids=ids).logits[:, :-1].float()  # (B, L-1, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sft.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), sft.grad_clip)
        opt.step()
        sched.step()
        step += 1
        last_loss = float(loss.detach())
        bar.update(1)
        if step % sft.eval_every == 0:
            rec = validate()
            bar.set_postfix(loss=f"{last_loss:.3f}", sampled=f"{rec['sampled_acc']:.3f}")
            if sft.target_sampled_acc is not None and rec["sampled_acc"] >= sft.target_sampled_acc:
                stopped = "target"
                break
    bar.close()
    elapsed = time.perf_counter() - t0
    validate(greedy=True)  # the base's final numbers (fresh sample: same seed, so same sampled acc)
    out_dir = Path(out_dir)
    save_checkpoint(model, tok, out_dir)
    final = history[-1]
    metrics = {
        "profile": cfg.profile, "scale": scale, "params": n_params(model), "steps": step, "stopped": stopped,
        "time_s": round(elapsed, 2), "val_sampled_acc": final["sampled_acc"], "val_greedy_acc": final["greedy_acc"],
        "target_sampled_acc": sft.target_sampled_acc, "config": vars(sft), "history": history,
    }
    atomic_write_json(out_dir / "sft_metrics.json", metrics)  # written last: marks a complete base
    return metrics
