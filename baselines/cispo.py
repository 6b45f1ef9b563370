"""CISPO: clipped importance-sampling-weight policy optimisation (MiniMax-M1, arXiv 2506.13585, 2025).

What it changes relative to PPO: no token is ever dropped. Instead of clipping the *objective* (which
zeroes the gradient of clipped tokens), CISPO clips the importance weight itself and detaches it, so
every token keeps a REINFORCE-style gradient with a bounded weight:

    loss_t = −sg(clip(ρ_t, 1 − ε_low, 1 + ε_high)) Â_t log π_t

ε_low is effectively unbounded in practice (`eps_low = None`: no lower clip); ε_high = 0.2 as in verl's
example (TRL's variant caps the weight at an absolute 5, i.e. ε_high = 4). Following docs/methods.md §Notation the
ratio is ρ = π/μ by default (anchor `rollout`); MiniMax's r = π/π_old is anchor `old`.
`kept` = gradient weight > 0 (every response token); `masked_frac` counts the tokens whose weight was
clipped.
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
class CISPOParams:
    """Parameters of `cispo`."""

    eps_low: Optional[float] = param(None, "weight floor 1 − ε_low; None = no lower clip")
    eps_high: float = param(0.2, "weight ceiling 1 + ε_high")
    anchor: str = param("rollout", "ratio denominator: rollout (μ) or old (π_old, as in MiniMax-M1)", ANCHORS)

    def __post_init__(self):
        if self.eps_low is not None and not 0 <= self.eps_low < 1:
            raise ValueError(f"cispo: eps_low must be in [0, 1) or None, got {self.eps_low}")
        if not self.eps_high >= 0:
            raise ValueError(f"cispo: eps_high must be >= 0, got {self.eps_high}")


@register_rule("cispo", CISPOParams, paper="MiniMax 2025, arXiv 2506.13585",
               summary="no masking; detached IS weight clipped to [1−ε_low, 1+ε_high]",
               reads_old=anchor_is_old)
def cispo(batch: PolicyBatch, p: CISPOParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, logp, log_ratio = terms.adv, terms.logp, terms.log_ratio  # (B, T)
    with torch.no_grad():
        log_ratio_sg = log_ratio.detach()  # (B, T) sg(log ρ)
        lo = -math.inf if p.eps_low is None else math.log1p(-p.eps_low)
        hi = math.log1p(p.eps_high)
        weight = log_ratio_sg.clamp(lo, hi).exp()  # clip(ρ, 1 − ε_low, 1 + ε_high), (B, T)
        kept = mask & (weight > 0)
        limited = mask & ((log_ratio_sg < lo) | (log_ratio_sg > hi))
    loss = masked_coef(kept, adv, weight) * logp  # −sg(clip(ρ)) Â log π
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, limited, terms=terms), limited=limited)
