"""The advantage-sign gate and the importance-weighted policy-gradient surrogate, shared by the rules.

Gate (METHODS.md): a token whose update moves the ratio back toward 1 is never blocked,
    gate_t = [ Â_t (ρ_t − 1) ≤ 0 ],
so only tokens that push π further from the anchor in the direction the advantage asks for have to
pass a trust-region test (PPO's clip, DPPO's and CPPO's divergence masks).

Surrogate: the per-token loss of every masking rule is −M_t Â_t ρ_t (gradient through ρ_t), or, with
a truncation cap C, −M_t Â_t sg(min(ρ_t, C)) log π_t: the same gradient while ρ_t ≤ C, bounded above
(this is how the public DPPO/CPPO code and verl's `dppo_*` losses write it).
"""

from __future__ import annotations

from typing import Optional

import torch

from cppo.rules.types import Tensor


def advantage_gate(advantages: Tensor, log_ratio: Tensor) -> Tensor:
    """gate_t = [Â_t (ρ_t − 1) ≤ 0]; (B, T) bool. Uses sign(log ρ) = sign(ρ − 1)."""
    return (advantages * log_ratio) <= 0


def is_surrogate(advantages: Tensor, logp: Tensor, log_ratio: Tensor, keep: Tensor,
                 trunc_cap: Optional[float] = None, weight: Optional[Tensor] = None) -> Tensor:
    """Per-token loss −keep · Â · ρ (or −keep · Â · sg(min(ρ, C)) · log π with a cap C); (B, T).

    Args:
        advantages: (B, T) Â, zero on padding.
        logp: (B, T) log π, finite on padding (callers zero it there); carries the gradient.
        log_ratio: (B, T) log ρ = log π − log anchor (from `masked_log_ratio`), carries the gradient.
        keep: (B, T) bool; the loss (and its gradient) is exactly zero where False.
        trunc_cap: C, or None for the uncapped form.
        weight: optional (B, T) detached extra weight (soft gates), multiplies the loss.
    """
    if trunc_cap is None:
        loss = -advantages * log_ratio.exp()
    else:
        loss = -advantages * log_ratio.detach().exp().clamp_max(trunc_cap) * logp
    if weight is not None:
        loss = loss * weight
    return torch.where(keep, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))


def policy_terms(batch, anchor: str) -> tuple[Tensor, Tensor, Tensor]:
    """The sanitised per-token terms every rule starts from, in float32 or wider.

    Returns:
        adv: (B, T) Â, zero on padding (no gradient).
        logp: (B, T) log π, zero on padding (keeps the gradient on response tokens).
        log_ratio: (B, T) log π − log anchor, zero on padding, clamped to ±20 (keeps the gradient).
    """
    from cppo.rules.divergence import anchor_logp, compute_dtype, masked_log_ratio

    mask = batch.mask
    dt = compute_dtype(batch.logp)
    zero = torch.zeros((), dtype=dt, device=batch.logp.device)
    adv = torch.where(mask, batch.advantages.detach().to(dt), zero)
    logp = torch.where(mask, batch.logp.to(dt), zero)
    return adv, logp, masked_log_ratio(batch.logp, anchor_logp(batch, anchor), mask)
