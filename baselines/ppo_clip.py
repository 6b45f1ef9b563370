"""PPO clip (and its GRPO / DAPO clip-higher / dual-clip variants).

What it changes: the ratio r_t = π/π_old (anchor `old`, classic PPO; `rollout` uses μ instead) is
clipped to [1 − ε_low, 1 + ε_high] inside a pessimistic max, so a token stops receiving gradient once its
ratio has moved past the band in the direction its advantage pushes:

    loss_t = max(−Â_t r_t, −Â_t clip(r_t, 1 − ε_low, 1 + ε_high))
    dual clip (Â_t < 0 only): loss_t = min(loss_t, −Â_t c)

Kept (receives gradient) unless Â>0 ∧ r>1+ε_high, or Â<0 ∧ r<1−ε_low, or (dual) Â<0 ∧ r>c. On kept
tokens the unclipped branch is the active one, so the loss is −Â_t r_t there; on the other tokens the
contract sets the loss to 0 (the clipped branch is a constant without gradient, so gradients are those
of the formula above; only the loss *value* differs from implementations that keep the constant).

Defaults: GRPO's ε_low = ε_high = 0.2; DAPO's clip-higher is ε_high = 0.28; dual clip off (verl's c = 3).

References: Schulman et al., "Proximal Policy Optimization Algorithms", arXiv 1707.06347 (2017);
Ye et al., dual clip, arXiv 1912.09729 (2019); Yu et al., "DAPO", arXiv 2503.14476 (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class PPOClipParams:
    """Parameters of `ppo_clip`."""

    eps_low: float = param(0.2, "lower clip ε_low: ratio floor 1 − ε_low for Â < 0")
    eps_high: float = param(0.2, "upper clip ε_high: ratio ceiling 1 + ε_high for Â > 0 (DAPO clip-higher: 0.28)")
    dual_clip: Optional[float] = param(None, "dual-clip constant c > 1 for Â < 0 (verl uses 3); None = off")
    anchor: str = param("old", "ratio denominator: old (π_old, classic PPO) or rollout (μ)", ANCHORS)

    def __post_init__(self):
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"ppo_clip: need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"ppo_clip: dual_clip must be > 1 or None, got {self.dual_clip}")


@register_rule("ppo_clip", PPOClipParams,
               paper="Schulman et al. 2017 (PPO), arXiv 1707.06347; GRPO, arXiv 2402.03300; "
                     "DAPO clip-higher, arXiv 2503.14476",
               summary="ratio clipped to [1−ε_low, 1+ε_high] against π_old; optional dual clip",
               reads_old=anchor_is_old)
def ppo_clip(batch: PolicyBatch, p: PPOClipParams) -> RuleOutput:
    terms = policy_terms(batch, p.anchor)
    adv, log_ratio = terms.adv, terms.log_ratio  # (B, T)
    with torch.no_grad():
        log_ratio_sg = log_ratio.detach()  # (B, T) sg(log ρ): the clip test takes no gradient
        clipped = (((adv > 0) & (log_ratio_sg > math.log1p(p.eps_high)))
                   | ((adv < 0) & (log_ratio_sg < math.log1p(-p.eps_low))))
        if p.dual_clip is not None:
            clipped |= (adv < 0) & (log_ratio_sg > math.log(p.dual_clip))
        kept = batch.mask & ~clipped  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    loss = masked_coef(kept, adv) * ratio  # −Â r on kept tokens (the unclipped branch is active there)
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, terms=terms))
