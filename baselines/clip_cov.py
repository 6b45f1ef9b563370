"""Clip-Cov: PPO clip plus a few high-covariance tokens cut off (Cui et al., "The Entropy Mechanism of
Reinforcement Learning for Reasoning Language Models", arXiv 2505.22617, 2025).

What it changes relative to PPO: the paper shows that policy entropy falls in proportion to the
covariance between a token's log-probability and its advantage, and that a few tokens with a large
covariance drive the collapse. Clip-Cov takes the PPO-clip loss and, among the tokens PPO did not
clip, removes from the gradient a random fraction of those whose centred covariance

    Cov_t = (Â_t − mean(Â)) · (log π_t − mean(log π))      (means over the mini-batch's response tokens)

lies in (lb, ub):

    loss_t = max(−Â_t r_t, −Â_t clip(r_t, 1 − ε_low, 1 + ε_high)) · [t ∉ S]
    S = a uniform draw of min(|C|, max(1, ⌊ratio · N⌋)) tokens of C = {t not clipped : lb < Cov_t < ub}

(N response tokens in the mini-batch). Unlike every other rule here it is not the plain policy
gradient on-policy: the covariance is not zero at π = π_old, so S is not empty there.

Defaults are verl 0.9.1's (`loss_mode=clip_cov`; `policy_loss.clip_cov_ratio` 2e-4, `clip_cov_lb` 1,
`clip_cov_ub` 5, `actor.clip_ratio_low/high` 0.2, anchor π_old). As in `ppo_clip` the loss is 0 on
PPO-clipped tokens where verl keeps the constant clipped branch (same gradient). The draw of S uses
torch's global random generator, as verl does (`seed = None`; reproducible under the trainer's seeding),
or a private generator seeded with `seed`: `torch.manual_seed(s)` before verl's call and `seed = s` here
draw the same S. C is enumerated in row-major order, as in verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS, LOG_RATIO_CLAMP, anchor_logp
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput, Tensor


@dataclass
class ClipCovParams:
    """Parameters of `clip_cov`."""

    eps_low: float = param(0.2, "PPO ratio floor 1 − ε_low for Â < 0 (verl actor.clip_ratio_low)")
    eps_high: float = param(0.2, "PPO ratio ceiling 1 + ε_high for Â > 0 (verl actor.clip_ratio_high)")
    clip_cov_ratio: float = param(2e-4, "fraction of the mini-batch's response tokens cut off (at least 1)")
    clip_cov_lb: float = param(1.0, "lower bound of the covariance band of candidate tokens")
    clip_cov_ub: float = param(5.0, "upper bound of the covariance band of candidate tokens")
    seed: Optional[int] = param(None, "seed of the draw among candidates; None = torch's global generator (as verl)")
    anchor: str = param("old", "ratio denominator: old (π_old, verl) or rollout (μ)", ANCHORS)

    def __post_init__(self):
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"clip_cov: need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if not 0 < self.clip_cov_ratio <= 1:
            raise ValueError(f"clip_cov: clip_cov_ratio must be in (0, 1], got {self.clip_cov_ratio}")
        if not self.clip_cov_lb < self.clip_cov_ub:
            raise ValueError(f"clip_cov: need clip_cov_lb < clip_cov_ub, got {self.clip_cov_lb}, {self.clip_cov_ub}")


def centred_covariance(adv: Tensor, logp: Tensor, mask: Tensor) -> Tensor:
    """(B, T) Cov_t = (Â_t − mean Â)(log π_t − mean log π), means over the response tokens; 0 on padding."""
    m = mask.to(adv.dtype)
    n = m.sum().clamp_min(1)
    return (adv - (adv * m).sum() / n) * (logp - (logp * m).sum() / n) * m


def draw(candidates: Tensor, k: int, seed: Optional[int]) -> Tensor:
    """(B, T) bool: k of the True entries of `candidates` drawn uniformly (all of them when there are ≤ k)."""
    idx = candidates.flatten().nonzero().squeeze(-1)  # row-major order
    if len(idx) > k:
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        idx = idx[torch.randperm(len(idx), generator=gen)[:k].to(idx.device)]
    out = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    out[idx] = True
    return out.view_as(candidates)


@register_rule("clip_cov", ClipCovParams, paper="Cui et al. 2025, arXiv 2505.22617",
               summary="PPO clip, plus a random few tokens with log π–Â covariance in (lb, ub) cut off",
               reads_old=anchor_is_old)
def clip_cov(batch: PolicyBatch, p: ClipCovParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, log_ratio = terms.adv, terms.log_ratio  # (B, T)
    with torch.no_grad():
        lr = log_ratio.detach()
        ppo_clipped = mask & (((adv > 0) & (lr > math.log1p(p.eps_high)))
                              | ((adv < 0) & (lr < math.log1p(-p.eps_low))))
        cov = centred_covariance(adv, terms.logp.detach(), mask)  # (B, T)
        cand = mask & ~ppo_clipped & (cov > p.clip_cov_lb) & (cov < p.clip_cov_ub)
        cut = draw(cand, max(int(p.clip_cov_ratio * int(mask.sum())), 1), p.seed)  # (B, T) S
        kept = mask & ~ppo_clipped & ~cut
    loss = masked_coef(kept, adv) * log_ratio.exp()  # −Â r on kept tokens
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, terms=terms))


def reference_clip_cov_candidates(batch: PolicyBatch, p: ClipCovParams) -> list[tuple[int, int]]:
    """The candidate set C as loops (float64): (row, position) pairs in row-major order."""
    lp = batch.logp.detach().double().tolist()
    ref = anchor_logp(batch, p.anchor).double().tolist()
    A = batch.advantages.double().tolist()
    mask = batch.mask.tolist()
    tokens = [(b, t) for b in range(len(mask)) for t in range(len(mask[b])) if mask[b][t]]
    n = max(len(tokens), 1)
    mean_a = sum(A[b][t] for b, t in tokens) / n
    mean_lp = sum(lp[b][t] for b, t in tokens) / n
    out = []
    for b, t in tokens:
        ell = max(-LOG_RATIO_CLAMP, min(LOG_RATIO_CLAMP, lp[b][t] - ref[b][t]))
        if (A[b][t] > 0 and ell > math.log1p(p.eps_high)) or (A[b][t] < 0 and ell < math.log1p(-p.eps_low)):
            continue  # clipped by PPO: never a candidate
        cov = (A[b][t] - mean_a) * (lp[b][t] - mean_lp)
        if p.clip_cov_lb < cov < p.clip_cov_ub:
            out.append((b, t))
    return out
