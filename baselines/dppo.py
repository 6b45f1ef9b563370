"""DPPO: a uniform divergence mask instead of ratio clipping (Qi et al., arXiv 2602.04879, 2026).

What it changes relative to PPO: the trust region is a bound on a divergence D_t between the anchor
policy (μ by default) and π at each token, not on the ratio. A token is masked only when it fails the
advantage-sign gate *and* its divergence exceeds δ:

    M_t = gate_t ∨ [D_t ≤ δ],    gate_t = [Â_t (ρ_t − 1) ≤ 0]
    loss_t = −M_t Â_t ρ_t                          (trunc_cap = None)
    loss_t = −M_t Â_t sg(min(ρ_t, C)) log π_t      (truncation cap C, default 20: same gradient below C)

Asymmetric thresholds: δ_high applies where π moved up (ρ > 1), δ_low where it moved down; with binary
TV and anchor `old` this is verl's `dppo_tv` (clip_ratio_low/high as δ_low/δ_high, clip_ratio_c as C).
Published thresholds: δ = 0.15 (TV), 0.05 (binary KL). The CPPO paper's DPPO baseline uses top-K TV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS, DIVERGENCES, token_divergence
from cppo.rules.gate import advantage_gate, is_surrogate, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class DPPOParams:
    """Parameters of `dppo`."""

    delta: float = param(0.15, "divergence threshold δ (TV 0.15; binary KL 0.05)")
    delta_low: Optional[float] = param(None, "threshold where π moved down (ρ < 1); None = δ")
    delta_high: Optional[float] = param(None, "threshold where π moved up (ρ > 1); None = δ")
    divergence: str = param("topk_tv", "D_t: binary_tv, binary_kl, topk_tv or topk_kl", DIVERGENCES)
    trunc_cap: Optional[float] = param(20.0, "C in −M·Â·sg(min(ρ, C))·log π; None = untruncated −M·Â·ρ")
    anchor: str = param("rollout", "reference policy of ρ and D: rollout (μ) or old (π_old)", ANCHORS)

    def __post_init__(self):
        for name in ("delta", "delta_low", "delta_high"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"dppo: {name} must be > 0, got {v}")
        if self.trunc_cap is not None and not self.trunc_cap > 0:
            raise ValueError(f"dppo: trunc_cap must be > 0 or None, got {self.trunc_cap}")

    @property
    def needs_topk(self) -> bool:
        return self.divergence.startswith("topk")


@register_rule("dppo", DPPOParams, paper="Qi et al. 2026, arXiv 2602.04879",
               summary="mask tokens failing the advantage gate whose divergence D_t exceeds δ",
               reads_old=anchor_is_old)
def dppo(batch: PolicyBatch, p: DPPOParams) -> RuleOutput:
    terms = policy_terms(batch, p.anchor)
    adv, logp, log_ratio = terms.adv, terms.logp, terms.log_ratio  # (B, T)
    div = token_divergence(batch, p.divergence, p.anchor, terms)  # (B, T), no grad
    with torch.no_grad():
        log_ratio_sg = log_ratio.detach()  # (B, T) sg(log ρ)
        hi = p.delta if p.delta_high is None else p.delta_high
        lo = p.delta if p.delta_low is None else p.delta_low
        thr = torch.where(log_ratio_sg > 0, hi, lo) if hi != lo else hi
        kept = batch.mask & (advantage_gate(adv, log_ratio_sg) | (div <= thr))  # (B, T)
    loss = is_surrogate(adv, logp, log_ratio, kept, p.trunc_cap)
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, div=div, terms=terms), div=div)
