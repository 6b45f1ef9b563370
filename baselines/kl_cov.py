"""KL-Cov: a |log-ratio| penalty on the highest-covariance tokens (Cui et al., "The Entropy Mechanism
of Reinforcement Learning for Reasoning Language Models", arXiv 2505.22617, 2025).

What it changes relative to PPO: no clip at all. The paper traces entropy collapse to the tokens whose
log-probability and advantage covary most; KL-Cov leaves every token its importance-weighted gradient
and adds a penalty on the distance to π_old only on the top ⌈ratio⌉ tokens by centred covariance:

    Cov_t = (Â_t − mean(Â)) · (log π_t − mean(log π))      (means over the mini-batch's response tokens)
    loss_t = −Â_t r_t + k · |log r_t| · [t ∈ top-K of Cov],   K = max(1, ⌊ratio · N⌋)

(N response tokens in the mini-batch, r_t = π/π_old). On-policy the penalty and its gradient are 0
(|log r| = 0, and torch's d|x|/dx is 0 at 0), so the rule is the plain policy gradient there.

Defaults are verl 0.9.1's (`loss_mode=kl_cov`; `policy_loss.kl_cov_ratio` 2e-4 and `ppo_kl_coef` 0.1,
which is the dataclass and YAML default although verl's docstring says 1; anchor π_old). verl does not
clamp log r; here it is clamped to ±20 as in every rule. Ties in Cov at the K-th place may be broken
differently from verl (it ranks a compacted vector of the response tokens). `kept` = every response
token; `limited` (→ `masked_frac`) = the penalised tokens whose ratio has moved (log r ≠ 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.clip_cov import centred_covariance
from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class KLCovParams:
    """Parameters of `kl_cov`."""

    kl_cov_ratio: float = param(2e-4, "fraction of the mini-batch's response tokens penalised (at least 1)")
    ppo_kl_coef: float = param(0.1, "coefficient k of the |log r| penalty (verl policy_loss.ppo_kl_coef)")
    anchor: str = param("old", "ratio denominator: old (π_old, verl) or rollout (μ)", ANCHORS)

    def __post_init__(self):
        if not 0 < self.kl_cov_ratio <= 1:
            raise ValueError(f"kl_cov: kl_cov_ratio must be in (0, 1], got {self.kl_cov_ratio}")
        if not self.ppo_kl_coef >= 0:
            raise ValueError(f"kl_cov: ppo_kl_coef must be >= 0, got {self.ppo_kl_coef}")


@register_rule("kl_cov", KLCovParams, paper="Cui et al. 2025, arXiv 2505.22617",
               summary="−Â r, plus k·|log r| on the top-K tokens by log π–Â covariance; nothing masked",
               reads_old=anchor_is_old)
def kl_cov(batch: PolicyBatch, p: KLCovParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, log_ratio = terms.adv, terms.log_ratio  # (B, T)
    with torch.no_grad():
        n_tok = int(mask.sum())
        cov = centred_covariance(adv, terms.logp.detach(), mask).masked_fill(~mask, -torch.inf)  # (B, T)
        top = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
        if n_tok:
            top[cov.flatten().topk(max(1, int(n_tok * p.kl_cov_ratio))).indices] = True
        top = top.view_as(mask)  # (B, T)
        limited = top & (log_ratio.detach() != 0)
    loss = masked_coef(mask, adv) * log_ratio.exp() + torch.where(top, p.ppo_kl_coef * log_ratio.abs(), 0.0)
    return RuleOutput(loss=loss, kept=mask, metrics=shared_metrics(batch, mask, limited, terms=terms),
                      limited=limited)


def reference_kl_cov_penalised(batch: PolicyBatch, p: KLCovParams) -> set[tuple[int, int]]:
    """The penalised tokens as loops (float64): the K response tokens of largest Cov_t."""
    lp = batch.logp.detach().double().tolist()
    A = batch.advantages.double().tolist()
    mask = batch.mask.tolist()
    tokens = [(b, t) for b in range(len(mask)) for t in range(len(mask[b])) if mask[b][t]]
    if not tokens:
        return set()
    n = len(tokens)
    mean_a = sum(A[b][t] for b, t in tokens) / n
    mean_lp = sum(lp[b][t] for b, t in tokens) / n
    ranked = sorted(tokens, key=lambda bt: (A[bt[0]][bt[1]] - mean_a) * (lp[bt[0]][bt[1]] - mean_lp), reverse=True)
    return set(ranked[:max(1, int(n * p.kl_cov_ratio))])
