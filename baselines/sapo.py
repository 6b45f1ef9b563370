"""SAPO: soft adaptive policy optimisation, a sigmoid gate instead of a hard clip (Gao et al., Qwen team,
arXiv 2511.20347, 2025).

What it changes relative to PPO: the clipped ratio is replaced by a smooth gate of the ratio
r_t = π/π_old, with a temperature τ_t that is larger for negative advantages:

    f_τ(r) = (4/τ) σ(τ (r − 1)),          τ_t = τ_pos if Â_t > 0 else τ_neg
    loss_t = −Â_t f_τt(r_t)
    ∂loss_t/∂log π_t = −Â_t r_t · g_t,    g_t = 4 σ(τ_t(r_t − 1)) (1 − σ(τ_t(r_t − 1))) ∈ (0, 1]

so the gradient is the importance-weighted one (−Â r) scaled by g_t, which is 1 at r = 1 and decays
smoothly as r leaves 1 in either direction: a soft trust region with no token cut off at a threshold.
On-policy (r = 1) the gradient is exactly −Â ∇log π.

verl 0.9.1 (`loss_mode=sapo`) computes the same per-token loss with π_old (anchor `old`) and the
defaults τ_pos = 1.0, τ_neg = 1.05 (`actor.tau_pos`, `actor.tau_neg`); it always aggregates with
`seq-mean-token-mean`, whatever `loss_agg_mode` says. Here aggregation stays the trainer's setting
(use `seq-mean-token-mean` to match verl and the paper). `kept` = tokens whose gradient weight g_t r_t
is still > 0 in floating point (σ saturates at |τ(r − 1)| ≈ 17 in float32; their loss is set to 0,
where verl keeps the constant −Â·4/τ); `limited` (→ `masked_frac`) = tokens whose gate at least halves
the importance-weighted gradient (g_t < ½, i.e. |τ_t (r_t − 1)| > 1.76).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class SAPOParams:
    """Parameters of `sapo`."""

    tau_pos: float = param(1.0, "gate temperature τ for Â > 0 (verl actor.tau_pos)")
    tau_neg: float = param(1.05, "gate temperature τ for Â ≤ 0 (verl actor.tau_neg; > tau_pos: negatives decay faster)")
    anchor: str = param("old", "ratio denominator: old (π_old, the paper and verl) or rollout (μ)", ANCHORS)

    def __post_init__(self):
        if not (self.tau_pos > 0 and self.tau_neg > 0):
            raise ValueError(f"sapo: tau_pos and tau_neg must be > 0, got {self.tau_pos}, {self.tau_neg}")


@register_rule("sapo", SAPOParams, paper="Gao et al. 2025, arXiv 2511.20347",
               summary="smooth sigmoid gate (4/τ)σ(τ(r−1)) of the ratio instead of a hard clip",
               reads_old=anchor_is_old)
def sapo(batch: PolicyBatch, p: SAPOParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, log_ratio = terms.adv, terms.log_ratio  # (B, T)
    tau = torch.full_like(adv, p.tau_neg).masked_fill(adv > 0, p.tau_pos)  # (B, T) τ_t, in adv's dtype
    ratio = log_ratio.exp()  # (B, T) r_t, carries the gradient
    sig = torch.sigmoid(tau * (ratio - 1.0))  # (B, T)
    gate = (4.0 / tau) * sig  # f_τ(r)
    with torch.no_grad():
        g = 4.0 * sig.detach() * (1.0 - sig.detach())  # (B, T) gradient scale relative to −Â r
        kept = mask & (g * ratio.detach() > 0)
        limited = mask & (g < 0.5)
    loss = masked_coef(kept, adv) * gate  # −Â f_τ(r) on kept tokens
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, limited, terms=terms),
                      limited=limited)
