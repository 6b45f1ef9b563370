"""The `vllm` rollout engine against torch, with real vLLM (run by tests/test_vllm_real.py in .venv-vllm).

One process, one engine (scale m, float32, vLLM's CPU build), several checks; prints one JSON object:
- parity: a rollout's sampled-token and top-K log-probs against a torch recomputation with the same
  weights (log_softmax(logits / T) of a full-sequence forward);
- sync: after an optimizer step and `sync_weights`, the next rollout's log-probs against the new
  weights and against the old ones;
- seeds: the samples of a prompt repeated in one rollout, and two rollouts from the same seed;
- threads: torch's thread count after vLLM started and after it ran, and whether `torch.set_num_threads`
  still works then.
Usage: python engine_check.py [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def recompute(model, batch, temperature: float, topk: int | None):
    """Per sequence, log_softmax(logits / T) at the response positions: sampled-token and top-K log-probs."""
    logp = torch.zeros_like(batch.logp)
    top = None if topk is None else torch.zeros_like(batch.topk_logp)
    at_mu_topk = None if topk is None else torch.zeros_like(batch.topk_logp)
    with torch.no_grad():
        for b, prompt in enumerate(batch.prompt_ids):
            n = int(batch.response_mask[b].sum())
            resp = batch.response_ids[b, :n].tolist()
            ids = torch.tensor([prompt + resp])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:len(prompt) - 1 + n].float()
            lp = torch.log_softmax(logits / temperature, -1)
            logp[b, :n] = lp.gather(-1, torch.tensor(resp)[:, None])[:, 0]
            if topk is not None:
                top[b, :n] = lp.topk(topk, -1).values
                at_mu_topk[b, :n] = lp.gather(-1, batch.topk_ids[b, :n])
    return logp, top, at_mu_topk


def _threads_settable() -> list[int]:
    """torch's thread count now, then after `torch.set_num_threads(1)` and `(2)`: [2, 1, 2] when the
    trainer's count survived vLLM and the trainer can still change it."""
    seen = [torch.get_num_threads()]
    for n in (1, 2):
        torch.set_num_threads(n)
        seen.append(torch.get_num_threads())
    return seen


def max_abs(a, b, mask):
    return float((a - b).abs()[mask].max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    from cppo.models import build_model, build_tokenizer
    from cppo.train.rollout import get_engine

    torch.set_num_threads(2)
    tok = build_tokenizer()
    model = build_model("m", tok, seed=3)
    T, K = 0.7, 4
    prompts = ["3+4*5=", "12-7=", "9*9-1=", "5+5+5="]
    out: dict = {"dtype": args.dtype}
    t0 = time.perf_counter()
    eng = get_engine("vllm", model, tok, dtype=args.dtype)
    out["start_s"] = time.perf_counter() - t0
    out["threads_after_start"] = _threads_settable()

    # parity
    t0 = time.perf_counter()
    b = eng.generate(prompts, n=4, max_new_tokens=24, temperature=T, top_p=1.0, topk=K,
                     generator=torch.Generator().manual_seed(0))
    out["gen_s"] = time.perf_counter() - t0
    mask = b.response_mask
    logp, top, at_mu_topk = recompute(model, b, T, K)
    out["parity"] = {"tokens": int(mask.sum()), "logp_max": max_abs(b.logp, logp, mask),
                     "logp_mean": float((b.logp - logp).abs()[mask].mean()),
                     "topk_max": max_abs(b.topk_logp, top, mask),
                     "topk_at_ids_max": max_abs(b.topk_logp, at_mu_topk, mask)}

    # sync: one optimizer step on a loss of this batch moves every weight, then the next rollout
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    seq = torch.tensor([b.prompt_ids[0] + b.response_ids[0, :int(mask[0].sum())].tolist()])
    model(input_ids=seq, labels=seq).loss.backward()
    opt.step()
    old = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # a second, larger move so that the old and new weights are far apart
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    before = build_model("m", tok, seed=3)
    before.load_state_dict(old)
    t0 = time.perf_counter()
    eng.sync_weights(model)
    out["sync_s"] = time.perf_counter() - t0
    b2 = eng.generate(prompts, n=2, max_new_tokens=24, temperature=T, top_p=1.0, topk=None,
                      generator=torch.Generator().manual_seed(1))
    new_lp, _, _ = recompute(model, b2, T, None)
    old_lp, _, _ = recompute(before, b2, T, None)
    out["sync"] = {"tokens": int(b2.response_mask.sum()), "vs_new_max": max_abs(b2.logp, new_lp, b2.response_mask),
                   "vs_old_max": max_abs(b2.logp, old_lp, b2.response_mask)}

    # seeds: one prompt 4 times in one rollout (n=2 each): 8 draws; then the same rollout again
    same = ["7+8="] * 4
    r1 = eng.generate(same, n=2, max_new_tokens=12, temperature=1.0, top_p=1.0, topk=None,
                      generator=torch.Generator().manual_seed(5))
    r2 = eng.generate(same, n=2, max_new_tokens=12, temperature=1.0, top_p=1.0, topk=None,
                      generator=torch.Generator().manual_seed(5))
    r3 = eng.generate(same, n=2, max_new_tokens=12, temperature=1.0, top_p=1.0, topk=None,
                      generator=torch.Generator().manual_seed(6))
    seqs = [tuple(r) for r in r1.response_ids.tolist()]
    out["seeds"] = {"draws": len(seqs), "distinct": len(set(seqs)),
                    "distinct_first_tokens": len({s[0] for s in seqs}),
                    "same_seed_same_samples": r1.response_ids.equal(r2.response_ids),
                    "other_seed_differs": not r1.response_ids.equal(r3.response_ids)}
    out["threads"] = {"after_start": out.pop("threads_after_start"), "after_generate": _threads_settable()}
    eng.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
