"""MinPRO: minimum prefix-ratio policy optimisation (Lei, Cheng, Tao, arXiv 2601.22718, 2026).

What it changes: the exact off-policy correction of token t is the prefix ratio ∏_{i≤t} ρ_i, which is
numerically unstable. MinPRO replaces it by a non-cumulative surrogate, the minimum token ratio of the
preceding prefix times the token's own ratio:

    w_t = m_t ρ_t,   m_t = min_{i<t} ρ_i,   m_1 = 1     (padding excluded from the minimum)

and clips that weight, in one of two variants (`clip`):

- `soft` (CISPO-style, detached weight):  loss_t = −sg(clip(w_t, 1 − ε_low, 1 + ε_high)) Â_t log π_t
- `hard` (PPO-style):  loss_t = max(−Â_t w_t, −Â_t clip(w_t, 1 − ε_low, 1 + ε_high)), m_t detached
  (gradient only through ρ_t); kept unless Â>0 ∧ w>1+ε_high or Â<0 ∧ w<1−ε_low, loss 0 where not kept.

Provenance, and what is unconfirmed:
- w_t = m_t ρ_t with m_t over the *strictly* preceding tokens and m_1 = 1: the paper's abstract and the
  secondary descriptions agree on this; it is the part we are confident about.
- The `soft` objective is how secondary sources quote the paper's objective (token-mean aggregation);
  the `hard` objective follows a public re-implementation. Which one the paper's runs used is not
  confirmed; results must state which variant ran.
- ε_low = 0.2, ε_high = 0.28 come from public scripts; the paper's own values were not retrievable.
- ρ is taken against μ (anchor `rollout`, the behaviour policy the prefix correction is about).
`kept` for `soft`: gradient weight > 0 (every response token); `masked_frac` counts clipped weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput, Tensor


@dataclass
class MinPROParams:
    """Parameters of `minpro`."""

    eps_low: float = param(0.2, "weight floor 1 − ε_low")
    eps_high: float = param(0.28, "weight ceiling 1 + ε_high")
    clip: str = param("soft", "soft: detached clipped weight (CISPO-style); hard: PPO-style clipped objective",
                      ("soft", "hard"))
    anchor: str = param("rollout", "ratio denominator: rollout (μ) or old (π_old)", ANCHORS)

    def __post_init__(self):
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"minpro: need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")


def log_prefix_min(log_ratio: Tensor, mask: Tensor) -> Tensor:
    """log m_t = min_{i<t} log ρ_i over response tokens, 0 (m = 1) where no token precedes; (B, T), no grad."""
    inf = torch.tensor(float("inf"), dtype=log_ratio.dtype, device=log_ratio.device)
    running = torch.where(mask, log_ratio.detach(), inf).cummin(dim=1).values  # min_{i≤t}
    prev = torch.nn.functional.pad(running[:, :-1], (1, 0), value=float("inf"))  # min_{i<t}
    return torch.where(torch.isinf(prev), 0.0, prev)


@register_rule("minpro", MinPROParams, paper="Lei, Cheng, Tao 2026, arXiv 2601.22718",
               summary="weight = (min preceding ratio) × own ratio, clipped (soft or hard)",
               reads_old=anchor_is_old)
def minpro(batch: PolicyBatch, p: MinPROParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, logp, log_ratio = terms.adv, terms.logp, terms.log_ratio  # (B, T)
    log_w = log_prefix_min(log_ratio, mask) + log_ratio  # (B, T) log w_t; gradient only through ρ_t
    lo, hi = math.log1p(-p.eps_low), math.log1p(p.eps_high)
    with torch.no_grad():
        lw = log_w.detach()
        if p.clip == "soft":
            weight = lw.clamp(lo, hi).exp()  # sg(clip(w_t, 1 − ε_low, 1 + ε_high))
            kept = mask & (weight > 0)
            limited = mask & ((lw < lo) | (lw > hi))
        else:
            kept = mask & ~(((adv > 0) & (lw > hi)) | ((adv < 0) & (lw < lo)))
            limited = mask & ~kept
    if p.clip == "soft":
        loss = masked_coef(kept, adv, weight) * logp  # −sg(clip(w)) Â log π
    else:
        loss = masked_coef(kept, adv) * log_w.exp()  # −Â w on kept tokens
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, limited, terms=terms), limited=limited)
