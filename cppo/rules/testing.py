"""Synthetic `PolicyBatch`es for tests and benchmarks (no model needed).

The three policies are full categorical distributions over a small vocabulary V at every position:
μ (the sampler), π_old = μ perturbed by `stale`, π = π_old perturbed by `drift`. Tokens are sampled from
μ, so every field (log-probs at y_t, μ's top-K ids, π and π_old at those ids) is mutually consistent and
exact divergences can be computed from `full` for reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.types import PolicyBatch, Tensor


@dataclass
class FullDistributions:
    """The full log-distributions behind a synthetic batch, each (B, T, V)."""

    logp_mu: Tensor
    logp_old: Tensor
    logp_pi: Tensor


def random_batch(B: int = 6, T: int = 12, V: int = 16, K: Optional[int] = 4, seed: int = 0,
                 dtype: torch.dtype = torch.float32, drift: float = 0.5, stale: float = 0.1,
                 padding: str = "right", min_len: int = 1, zero_adv_rows: int = 1, garbage: bool = True,
                 device: str | torch.device = "cpu", return_full: bool = False):
    """A random ragged PolicyBatch; `logp` is a leaf tensor with requires_grad=True.

    Args:
        B, T, V, K: batch size, padded length, vocabulary size, top-K size (None: no top-K fields).
        seed: RNG seed (CPU generator; tensors are moved to `device` afterwards).
        dtype: floating dtype of every float field.
        drift, stale: logit noise scales π_old → π and μ → π_old.
        padding: "right" or "left": where padding sits in each row.
        min_len: minimum response length (lengths are uniform in [min_len, T]).
        zero_adv_rows: number of rows whose advantage is 0 (GRPO groups without reward variance).
        garbage: fill padded positions with nan/inf/large values, which rules must ignore.
        return_full: also return the FullDistributions.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    base = 2.0 * torch.randn(B, T, V, generator=g, dtype=f64)
    logp_mu = base.log_softmax(-1)
    old_logits = base + stale * torch.randn(B, T, V, generator=g, dtype=f64)
    logp_old = old_logits.log_softmax(-1)
    logp_pi = (old_logits + drift * torch.randn(B, T, V, generator=g, dtype=f64)).log_softmax(-1)
    y = torch.multinomial(logp_mu.exp().reshape(-1, V), 1, generator=g).reshape(B, T)
    lengths = torch.randint(min_len, T + 1, (B,), generator=g)
    pos = torch.arange(T).unsqueeze(0)
    mask = pos < lengths.unsqueeze(1) if padding == "right" else pos >= (T - lengths).unsqueeze(1)
    adv = torch.randn(B, 1, generator=g, dtype=f64).expand(B, T).clone()
    adv[:zero_adv_rows] = 0.0

    def at_y(lp: Tensor) -> Tensor:
        return lp.gather(-1, y.unsqueeze(-1)).squeeze(-1)

    fields = dict(logp=at_y(logp_pi), old_logp=at_y(logp_old), rollout_logp=at_y(logp_mu), advantages=adv)
    if K is not None:
        ids = logp_mu.topk(K, dim=-1).indices  # (B, T, K)
        fields.update(rollout_topk_ids=ids, rollout_topk_logp=logp_mu.gather(-1, ids),
                      policy_topk_logp=logp_pi.gather(-1, ids), old_topk_logp=logp_old.gather(-1, ids))
    fields["entropy"] = -(logp_pi.exp() * logp_pi).sum(-1)
    if garbage:
        junk = {"logp": float("nan"), "old_logp": float("inf"), "rollout_logp": float("nan"),
                "advantages": float("nan"), "entropy": 1e30}
        for name, v in junk.items():
            fields[name] = fields[name].masked_fill(~mask, v)
        for name in ("rollout_topk_logp", "policy_topk_logp", "old_topk_logp"):
            if name in fields:
                fields[name] = fields[name].masked_fill(~mask.unsqueeze(-1), float("nan"))
    out = {}
    for name, t in fields.items():
        t = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
        out[name] = t
    out["logp"] = out["logp"].detach().requires_grad_(True)
    batch = PolicyBatch(mask=mask.to(device), token_ids=y.to(device), **out)
    if return_full:
        return batch, FullDistributions(logp_mu.to(device), logp_old.to(device), logp_pi.to(device))
    return batch
