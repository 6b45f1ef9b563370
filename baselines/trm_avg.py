"""TRM-Avg: trust-region masking at sequence level, by the mean token KL (Li et al., arXiv 2512.23075, 2025).

What it changes relative to TRM-Max: a sequence is kept iff the *mean* of its per-token KL_t = KL(μ‖π)
(k3 estimate or top-K KL) is at most δ_avg, so a single outlier token does not drop the sequence:

    M(y) = [ (1/T) Σ_t KL_t ≤ δ_avg ],    loss_t = −M(y) Â_t ρ_t

Default δ_avg = 0.002 (the CPPO paper's KL ablation). Shared code: `baselines.trm_max.trm_rule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from baselines.trm_max import KL_ESTIMATORS, trm_rule
from cppo.rules.divergence import ANCHORS
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class TRMAvgParams:
    """Parameters of `trm_avg`."""

    delta: float = param(0.002, "keep a sequence iff mean_t KL_t ≤ δ_avg")
    kl: str = param("k3", "per-token KL: k3 on the sampled token, or topk (top-K KL(μ‖π))", KL_ESTIMATORS)
    trunc_cap: Optional[float] = param(None, "C in −M·Â·sg(min(ρ, C))·log π; None = untruncated −M·Â·ρ")
    anchor: str = param("rollout", "reference policy of ρ and KL: rollout (μ) or old (π_old)", ANCHORS)

    def __post_init__(self):
        if not self.delta > 0:
            raise ValueError(f"trm_avg: delta must be > 0, got {self.delta}")
        if self.trunc_cap is not None and not self.trunc_cap > 0:
            raise ValueError(f"trm_avg: trunc_cap must be > 0 or None, got {self.trunc_cap}")

    @property
    def needs_topk(self) -> bool:
        return self.kl == "topk"


@register_rule("trm_avg", TRMAvgParams, paper="Li et al. 2025, arXiv 2512.23075",
               summary="drop whole sequences whose mean per-token KL(μ‖π) exceeds δ_avg",
               reads_old=anchor_is_old)
def trm_avg(batch: PolicyBatch, p: TRMAvgParams) -> RuleOutput:
    return trm_rule(batch, p, "mean")
