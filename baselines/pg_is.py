"""PG-IS: the importance-weighted policy gradient with no trust region (the control that should be unstable).

What it changes: nothing is masked or clipped; every token is reweighted by ρ_t = π/μ (or π/π_old with
anchor `old`):

    loss_t = −Â_t ρ_t                                  (gradient −Â_t ρ_t ∇log π_t)
    loss_t = −Â_t sg(min(ρ_t, C)) log π_t              (optional truncation cap C, "truncated IS")

Reference: the off-policy policy-gradient estimator with per-token importance weights; truncation as in
IMPALA/V-trace-style truncated importance sampling (Espeholt et al., 2018). docs/methods.md §PG-IS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS
from cppo.rules.gate import is_surrogate, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class PGISParams:
    """Parameters of `pg_is`."""

    trunc_cap: Optional[float] = param(None, "C: use −Â·sg(min(ρ, C))·log π; None = untruncated −Â·ρ")
    anchor: str = param("rollout", "ratio denominator: rollout (μ) or old (π_old)", ANCHORS)

    def __post_init__(self):
        if self.trunc_cap is not None and not self.trunc_cap > 0:
            raise ValueError(f"pg_is: trunc_cap must be > 0 or None, got {self.trunc_cap}")


@register_rule("pg_is", PGISParams, paper="importance-weighted policy gradient (no trust region)",
               summary="−Â ρ on every token; optional truncation cap",
               reads_old=anchor_is_old)
def pg_is(batch: PolicyBatch, p: PGISParams) -> RuleOutput:
    terms = policy_terms(batch, p.anchor)
    adv, logp, log_ratio = terms.adv, terms.logp, terms.log_ratio  # (B, T) each
    kept = batch.mask.clone()  # every response token gets gradient
    loss = is_surrogate(adv, logp, log_ratio, kept, p.trunc_cap)
    # "limited": the tokens whose weight the cap reduced
    limited = kept & (log_ratio > math.log(p.trunc_cap)) if p.trunc_cap is not None else torch.zeros_like(kept)
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, limited, terms=terms), limited=limited)
