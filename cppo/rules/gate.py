"""The advantage-sign gate and the importance-weighted policy-gradient surrogate, shared by the rules.

Gate (docs/methods.md §Gate): a token whose update moves the ratio back toward 1 is never blocked,
    gate_t = [ Â_t (ρ_t − 1) ≤ 0 ],
so only tokens that push π further from the anchor in the direction the advantage asks for have to
pass a trust-region test (PPO's clip, DPPO's and CPPO's divergence masks).

Surrogate: the per-token loss of every masking rule is −M_t Â_t ρ_t (gradient through ρ_t), or, with
a truncation cap C, −M_t Â_t sg(min(ρ_t, C)) log π_t: the same gradient while ρ_t ≤ C, bounded above
(this is how the public DPPO/CPPO code and verl's `dppo_*` losses write it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.types import PolicyBatch, Tensor


def advantage_gate(advantages: Tensor, log_ratio: Tensor) -> Tensor:
    """gate_t = [Â_t (ρ_t − 1) ≤ 0]; (B, T) bool. Uses sign(log ρ) = sign(ρ − 1)."""
    return (advantages * log_ratio) <= 0


def masked_coef(keep: Tensor, advantages: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """The detached per-token coefficient −Â · weight, exactly 0 where `keep` is False; (B, T).

    Rules multiply it into a differentiable factor (ρ, log π, ...): the loss and its gradient are then
    exactly zero on dropped tokens, with one select instead of a select in forward and backward.
    """
    with torch.no_grad():
        coef = torch.where(keep, -advantages, torch.zeros((), dtype=advantages.dtype, device=advantages.device))
        return coef if weight is None else coef * weight


def is_surrogate(advantages: Tensor, logp: Tensor, log_ratio: Tensor, keep: Tensor,
                 trunc_cap: Optional[float] = None, weight: Optional[Tensor] = None) -> Tensor:
    """Per-token loss −keep · Â · ρ (or −keep · Â · sg(min(ρ, C)) · log π with a cap C); (B, T).

    Args:
        advantages: (B, T) Â, zero on padding.
        logp: (B, T) log π, finite on padding (callers zero it there); carries the gradient.
        log_ratio: (B, T) log ρ = log π − log anchor (from `policy_terms`), carries the gradient.
        keep: (B, T) bool; the loss (and its gradient) is exactly zero where False.
        trunc_cap: C, or None for the uncapped form.
        weight: optional (B, T) detached extra weight (soft gates), multiplies the loss.
    """
    coef = masked_coef(keep, advantages, weight)  # detached: exactly 0 where not kept, so is the gradient
    if trunc_cap is None:
        return coef * log_ratio.exp()  # −Â ρ, gradient through ρ
    return coef * log_ratio.detach().exp().clamp_max(trunc_cap) * logp  # −Â sg(min(ρ, C)) log π


@dataclass
class Terms:
    """Sanitised per-token terms of one rule call (float32 or wider; zero on padding)."""

    mask: Tensor  # (B, T) bool
    mask_f: Tensor  # (B, T) the mask as 0/1 floats
    adv: Tensor  # (B, T) Â, no gradient
    logp: Tensor  # (B, T) log π, keeps the gradient on response tokens
    ref_logp: Tensor  # (B, T) log of the anchor policy, no gradient
    log_ratio: Tensor  # (B, T) log π − log anchor, clamped to ±20, keeps the gradient
    anchor: str


def policy_terms(batch: PolicyBatch, anchor: str) -> Terms:
    """The sanitised terms every rule starts from (computed once, shared with divergences and diagnostics)."""
    from cppo.rules.divergence import LOG_RATIO_CLAMP, anchor_logp, compute_dtype

    mask = batch.mask
    dt = compute_dtype(batch.logp)
    zero = torch.zeros((), dtype=dt, device=batch.logp.device)
    adv = torch.where(mask, batch.advantages.detach().to(dt), zero)
    logp = torch.where(mask, batch.logp.to(dt), zero)
    ref = torch.where(mask, anchor_logp(batch, anchor).detach().to(dt), zero)
    # both sides are finite after where(), so padding (log ratio 0) never leaks nan into the backward pass
    log_ratio = (logp - ref).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return Terms(mask=mask, mask_f=mask.to(dt), adv=adv, logp=logp, ref_logp=ref, log_ratio=log_ratio, anchor=anchor)
