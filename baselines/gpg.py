"""GPG: group policy gradient, with no ratio and no trust region (Chu et al., arXiv 2504.02546, 2025).

What it changes relative to PPO: everything is dropped but the policy gradient itself. No importance
ratio, no clip, no mask:

    loss_t = −Â_t log π_t

so the gradient is −Â_t ∇log π_t whatever the policy that sampled y (μ) or the one before this round
of updates (π_old). On-policy it is exactly the plain policy gradient; off-policy it makes no
correction at all, which is why it is a useful lower bound next to `pg_is` (full correction, no trust
region) and the trust-region rules.

verl 0.9.1 (`loss_mode=gpg`, adapted from the GPG repository) computes the same per-token loss. GPG's
other ingredient, its rescaled group advantage (verl's `gpg` advantage estimator), is an advantage
estimator, not a loss: here the trainer's group advantages are used as for every rule.
`kept` = every response token; nothing is limited.
"""

from __future__ import annotations

from dataclasses import dataclass

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.gate import masked_coef, policy_terms
from cppo.rules.registry import register_rule
from cppo.rules.types import PolicyBatch, RuleOutput


@dataclass
class GPGParams:
    """Parameters of `gpg` (none: the loss has no ratio and no threshold)."""


@register_rule("gpg", GPGParams, paper="Chu et al. 2025, arXiv 2504.02546",
               summary="plain group policy gradient −Â log π: no ratio, no clip",
               reads_old=False)
def gpg(batch: PolicyBatch, p: GPGParams) -> RuleOutput:
    terms = policy_terms(batch, "rollout")  # the anchor only feeds the shared diagnostics (ρ = π/μ)
    kept = batch.mask  # (B, T)
    loss = masked_coef(kept, terms.adv) * terms.logp  # −Â log π, (B, T)
    return RuleOutput(loss=loss, kept=kept, metrics=shared_metrics(batch, kept, terms=terms))
