"""GSPO: group sequence policy optimisation (Zheng et al., Qwen team, arXiv 2507.18071, 2025).

What it changes relative to PPO: the importance ratio and its clipping are per *sequence*, using the
length-normalised sequence ratio s_i = exp( (1/|y_i|) Σ_t log r_i,t ), r = π/π_old:

    loss_i = max(−Â_i s_i, −Â_i clip(s_i, 1 − ε_low, 1 + ε_high))

Per-token form (the "GSPO-token" write-up, also verl's): s_i,t = sg(s_i) · π_t / sg(π_t) has the value
s_i and gradient s_i ∇log π_t, so with `seq-mean-token-mean` aggregation the per-token loss
−Â_t s_i,t reproduces GSPO's gradient exactly when Â is constant over the response. A sequence is
clipped as a whole (kept = not clipped). The paper's ε are tiny (3e-4 / 4e-4) because s_i is a
geometric mean. Use `seq-mean-token-mean` aggregation, as the paper does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class GSPOParams:
    """Parameters of `gspo`."""

    eps_low: float = param(3e-4, "sequence-ratio floor 1 − ε_low")
    eps_high: float = param(4e-4, "sequence-ratio ceiling 1 + ε_high")
    anchor: str = param("old", "ratio denominator: old (π_old, the paper) or rollout (μ)", ANCHORS)

    def __post_init__(self):
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"gspo: need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")


@register_rule("gspo", GSPOParams, paper="Zheng et al. 2025, arXiv 2507.18071",
               summary="length-normalised sequence ratio, clipped per sequence",
               reads_old=anchor_is_old)
def gspo(batch: PolicyBatch, p: GSPOParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, log_ratio = terms.adv, terms.log_ratio  # (B, T)
    n_tok = mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
    log_s = (log_ratio.detach().sum(dim=1, keepdim=True) / n_tok)  # (B, 1) log s_i
    log_s_tok = log_s + log_ratio - log_ratio.detach()  # (B, T): value log s_i, gradient ∇log π_t
    with torch.no_grad():
        clipped = ((adv > 0) & (log_s > math.log1p(p.eps_high))) | ((adv < 0) & (log_s < math.log1p(-p.eps_low)))
        kept = mask & ~clipped
    loss = masked_coef(kept, adv) * log_s_tok.exp()  # −Â s_i,t on kept sequences
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, terms=terms))
