"""TRM-Max: trust-region masking at sequence level, by the worst token (Li et al., arXiv 2512.23075, 2025).

What it changes: the trust region is enforced per *sequence*. A per-token KL_t = KL(μ‖π) at s_t (or its
k3 estimate r − 1 − log r with log r = log π − log μ, from the sampled token alone) is reduced over the
response, and the whole sequence is kept or dropped:

    TRM-Max:  M(y) = [ max_t KL_t ≤ δ ]          TRM-Avg:  M(y) = [ mean_t KL_t ≤ δ_avg ]
    loss_t = −M(y) Â_t ρ_t       (or −M(y) Â_t sg(min(ρ_t, C)) log π_t with a truncation cap C)

There is no advantage-sign gate: a dropped sequence gets no gradient at all. Default thresholds are the
ones of the CPPO paper's KL ablation (δ = 0.1 for max, δ_avg = 0.002 for the mean); `trm_avg` lives in
its own module and shares `trm_rule` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS, k3, token_divergence
from cppo.rules.gate import is_surrogate, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput

KL_ESTIMATORS = ("k3", "topk")


@dataclass
class TRMMaxParams:
    """Parameters of `trm_max`."""

    delta: float = param(0.1, "keep a sequence iff max_t KL_t ≤ δ")
    kl: str = param("k3", "per-token KL: k3 on the sampled token, or topk (top-K KL(μ‖π))", KL_ESTIMATORS)
    trunc_cap: Optional[float] = param(None, "C in −M·Â·sg(min(ρ, C))·log π; None = untruncated −M·Â·ρ")
    anchor: str = param("rollout", "reference policy of ρ and KL: rollout (μ) or old (π_old)", ANCHORS)

    def __post_init__(self):
        if not self.delta > 0:
            raise ValueError(f"trm: delta must be > 0, got {self.delta}")
        if self.trunc_cap is not None and not self.trunc_cap > 0:
            raise ValueError(f"trm: trunc_cap must be > 0 or None, got {self.trunc_cap}")

    @property
    def needs_topk(self) -> bool:
        return self.kl == "topk"


def trm_rule(batch: PolicyBatch, p, reduce: str) -> RuleOutput:
    """Sequence-level KL masking with `reduce` = "max" or "mean" over response tokens."""
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, logp, log_ratio = terms.adv, terms.logp, terms.log_ratio  # (B, T)
    with torch.no_grad():
        if p.kl == "k3":
            kl = k3(log_ratio.detach())  # (B, T); log ratio = 0 on padding, so k3 = 0
        else:
            kl = token_divergence(batch, "topk_kl", p.anchor, terms)
        if reduce == "max":
            stat = kl.amax(dim=1)  # KL ≥ 0, so zeros on padding never win  # (B,)
        else:
            stat = kl.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
        kept = mask & (stat <= p.delta).unsqueeze(1)  # (B, T)
    loss = is_surrogate(adv, logp, log_ratio, kept, p.trunc_cap)
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, div=kl, terms=terms), div=kl)


@register_rule("trm_max", TRMMaxParams, paper="Li et al. 2025, arXiv 2512.23075",
               summary="drop whole sequences whose max per-token KL(μ‖π) exceeds δ",
               reads_old=anchor_is_old)
def trm_max(batch: PolicyBatch, p: TRMMaxParams) -> RuleOutput:
    return trm_rule(batch, p, "max")
