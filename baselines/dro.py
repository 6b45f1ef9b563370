"""DRO: policy gradient with a quadratic log-ratio penalty (Richemond et al., arXiv 2405.19107, 2024;
used by Kimi k1.5, arXiv 2501.12599).

What it changes relative to PPO: no clip and no mask. The trust region is a soft, quadratic penalty
on how far log π has moved from the anchor at each token:

    loss_t = −( Â_t log π_t − ½ β (log π_t − log π_anchor,t)² )

    ∂loss_t/∂log π_t = −Â_t + β ℓ_t,     ℓ_t = log π_t − log π_anchor,t

so a token's update stops where ℓ_t = Â_t/β (the maximiser of its objective) and is pulled back beyond
it. The penalty does not depend on Â: tokens with Â = 0 are pulled back toward the anchor too.

verl 0.9.1 (`loss_mode=dro`) computes the same per-token loss with π_old as the anchor (its
`old_log_prob`; Tinker's `dro` loss uses the sampler's log-probs, i.e. anchor `rollout`). verl has no
default for β (`policy_loss.dro_beta` must be set); β = 0.05 here is the value in Tinker's DRO
documentation. `kept` = every response token; `limited` (→ `masked_frac`) = tokens past their
stopping point, where the penalty cancels or reverses the advantage's push (Â_t ℓ_t > 0 and
β|ℓ_t| ≥ |Â_t|).
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
class DROParams:
    """Parameters of `dro`."""

    beta: float = param(0.05, "β of the penalty ½β(log π − log π_anchor)² (verl: policy_loss.dro_beta, no default)")
    anchor: str = param("old", "reference of the penalty: old (π_old, verl) or rollout (μ, Tinker)", ANCHORS)

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"dro: beta must be > 0, got {self.beta}")


@register_rule("dro", DROParams, paper="Richemond et al. 2024, arXiv 2405.19107; Kimi k1.5, arXiv 2501.12599",
               summary="−Â log π plus the quadratic penalty ½β(log π − log π_old)²; nothing masked",
               reads_old=anchor_is_old)
def dro(batch: PolicyBatch, p: DROParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, logp, log_ratio = terms.adv, terms.logp, terms.log_ratio  # (B, T), all 0 on padding
    loss = masked_coef(mask, adv) * logp + 0.5 * p.beta * log_ratio.square()  # (B, T)
    with torch.no_grad():
        lr = log_ratio.detach()
        limited = mask & (adv * lr > 0) & (p.beta * lr.abs() >= adv.abs())  # past ℓ = Â/β
    return RuleOutput(loss=loss, kept=mask, metrics=shared_metrics(batch, mask, limited, terms=terms),
                      limited=limited)
