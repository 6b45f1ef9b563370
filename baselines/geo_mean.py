"""GMPO: geometric-mean policy optimisation (Zhao et al., arXiv 2507.20673, 2025); verl's `geo_mean`.

What it changes relative to GRPO: the sequence objective averages token ratios geometrically, not
arithmetically, and clips each token's log-ratio ℓ_t = log π_t − log π_old,t in log space:

    ℓ̃_t = sgn(Â_t) · min(sgn(Â_t) ℓ_t, sgn(Â_t) clip(ℓ_t, −ε_low, ε_high))
    R_i  = exp( (1/|y_i|) Σ_t ℓ̃_t )                    (geometric mean of the clipped ratios)
    loss_i = −Â_i R_i

A geometric mean is far less sensitive to one token with an outlying ratio than GRPO's arithmetic
mean. Token t is clipped (no gradient) when Â_t > 0 and ℓ_t > ε_high, or Â_t < 0 and ℓ_t < −ε_low.

Per-token form (as for GSPO): R_i,t = sg(R_i) · exp(ℓ_t − sg(ℓ_t)) has the value R_i and the gradient
R_i ∇log π_t, so with `seq-mean-token-mean` aggregation the per-token loss −Â_t R_i,t on kept tokens
(0 on clipped ones) has exactly the gradient of −Â_i R_i for sequence-level advantages:
(1/|y_i|) Σ_{t kept} −Â_i R_i ∇log π_t. Its value differs from −Â_i R_i by the factor
(kept tokens)/|y_i| when a token is clipped (same gradient; the contract's zero loss on dropped tokens).

verl 0.9.1 (`loss_mode=geo_mean`): ε_low = ε_high = `actor.clip_ratio_low/high` (default 0.2) applied to
ℓ in log space (the paper uses 0.4, i.e. ratios in (e^−0.4, e^0.4)); anchor π_old; no ±20 clamp of
ℓ (here ℓ is clamped to ±20 as in every rule); a token with Â_t = 0 contributes ℓ̃_t = 0 to R_i, as
here. verl ignores `loss_agg_mode` and always returns the mean of −Â_i R_i over the rows of the
micro-batch, with Â_i the mean of Â over the sequence; here Â_t is used per token (identical for
GRPO's sequence-level advantages) and aggregation stays the trainer's setting: `seq-mean-token-mean`
reproduces verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS, LOG_RATIO_CLAMP, anchor_logp
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class GeoMeanParams:
    """Parameters of `geo_mean`."""

    eps_low: float = param(0.2, "log-ratio floor −ε_low for Â < 0 (verl actor.clip_ratio_low; the paper: 0.4)")
    eps_high: float = param(0.2, "log-ratio ceiling ε_high for Â > 0 (verl actor.clip_ratio_high; the paper: 0.4)")
    anchor: str = param("old", "ratio denominator: old (π_old, the paper and verl) or rollout (μ)", ANCHORS)

    def __post_init__(self):
        if not (self.eps_low >= 0 and self.eps_high >= 0):
            raise ValueError(f"geo_mean: eps_low and eps_high must be >= 0, got {self.eps_low}, {self.eps_high}")


@register_rule("geo_mean", GeoMeanParams, paper="Zhao et al. 2025 (GMPO), arXiv 2507.20673",
               summary="geometric mean of log-space-clipped token ratios per sequence (use seq-mean-token-mean)",
               reads_old=anchor_is_old)
def geo_mean(batch: PolicyBatch, p: GeoMeanParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, log_ratio = terms.adv, terms.log_ratio  # (B, T), 0 on padding
    with torch.no_grad():
        lr = log_ratio.detach()  # (B, T) ℓ_t
        clipped = ((adv > 0) & (lr > p.eps_high)) | ((adv < 0) & (lr < -p.eps_low))
        kept = mask & ~clipped  # (B, T)
        lr_tilde = torch.where(clipped, lr.clamp(-p.eps_low, p.eps_high), lr) * (adv != 0)  # ℓ̃_t
        n_tok = mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
        log_r_seq = lr_tilde.sum(dim=1, keepdim=True) / n_tok  # (B, 1) log R_i
    r_tok = (log_r_seq + log_ratio - lr).exp()  # (B, T): value R_i, gradient R_i ∇log π_t
    loss = masked_coef(kept, adv) * r_tok  # −Â R_i,t on kept tokens
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, terms=terms))


def reference_geo_mean(batch: PolicyBatch, p: GeoMeanParams) -> tuple[list[list[float]], list[list[float]]]:
    """The sequence objective as loops (float64): per row b, the loss value −Â_b R_b and the gradient
    of (1/|y_b|)·(−Â_b R_b) with respect to each log π_t, i.e. what `seq-mean-token-mean` of the rule
    must give. Returns (loss per row, gradient (B, T) as lists). Â_b = mean of Â over the sequence."""
    lp = batch.logp.detach().double().tolist()
    ref = anchor_logp(batch, p.anchor).double().tolist()
    A = batch.advantages.double().tolist()
    mask = batch.mask.tolist()
    losses, grads = [], []
    for b in range(len(mask)):
        pos = [t for t, m in enumerate(mask[b]) if m]
        n = max(len(pos), 1)
        s, free = 0.0, []
        for t in pos:
            ell = max(-LOG_RATIO_CLAMP, min(LOG_RATIO_CLAMP, lp[b][t] - ref[b][t]))
            if A[b][t] > 0 and ell > p.eps_high:
                s += p.eps_high
            elif A[b][t] < 0 and ell < -p.eps_low:
                s -= p.eps_low
            elif A[b][t] != 0:
                s += ell
                free.append(t)
        R = math.exp(s / n)
        a = sum(A[b][t] for t in pos) / n
        losses.append(-a * R)
        g = [0.0] * len(mask[b])
        for t in free:
            g[t] = -a * R / n
        grads.append(g)
    return losses, grads
