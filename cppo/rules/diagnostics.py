"""Diagnostics every rule reports, computed the same way for all rules (docs/methods.md §Diagnostics).

Metric names are fixed and prefix-free (the trainer logs them under `rule/`), so curves of different
rules can be overlaid. Definitions (all without gradient):

| name | definition |
| --- | --- |
| masked_frac | fraction of *eligible* tokens (response tokens with Â ≠ 0) whose update the rule blocked or down-weighted (`RuleOutput.limited`; for hard rules: not kept) |
| masked_frac_pos / masked_frac_neg | the same among eligible tokens with Â > 0 / Â < 0 |
| seq_fully_masked_frac | fraction of sequences with ≥ 1 eligible token in which no eligible token is kept |
| div_mean / div_max | mean / max over response tokens of the D_t the rule tested (CPPO, DPPO: its configured divergence; TRM: its per-token KL; other rules: binary TV between π and μ) |
| k3_pi_mu | mean over response tokens of k3 with log r = log π − log μ (the policy's drift from the sampler) |
| k3_old_mu | mean of k3 with log r = log π_old − log μ (rollout/trainer mismatch alone); only when the batch carries `old_logp` |
| ratio_max | max over response tokens of ρ_t = π/μ |
| ess | effective sample size of ρ over response tokens, normalised to (0, 1]: (Σρ)² / (N Σρ²) |
| entropy | mean entropy of π over response tokens (only when the batch carries `entropy`) |
| prefix_reject_frac | CPPO only: fraction of eligible tokens rejected *only* by the prefix budget (they pass w_t D_t ≤ δ) |
| token_reject_frac | CPPO only: fraction of eligible tokens rejected by the position-weighted token test w_t D_t > δ |

Empty denominators give 0.0, never nan. The pre-clip gradient norm is the trainer's metric.
"""

from __future__ import annotations

from typing import Optional

import torch

from cppo.rules.divergence import LOG_RATIO_CLAMP, binary_tv, compute_dtype, k3
from cppo.rules.types import PolicyBatch, RuleOutput, Tensor

METRIC_NAMES: tuple[str, ...] = (
    "masked_frac", "masked_frac_pos", "masked_frac_neg", "seq_fully_masked_frac",
    "div_mean", "div_max", "k3_pi_mu", "ratio_max", "ess",
)
"""Reported by every rule for every batch."""
OPTIONAL_METRIC_NAMES: tuple[str, ...] = ("k3_old_mu", "entropy")
"""Reported when the batch carries the input (`PolicyBatch.old_logp`, `PolicyBatch.entropy`): the
trainer leaves π_old out for rules that do not read it, except where it is cheap (docs/training.md)."""
RULE_METRIC_NAMES: dict[str, tuple[str, ...]] = {"cppo": ("prefix_reject_frac", "token_reject_frac")}
"""Extra metrics of specific rules."""
ALL_METRIC_NAMES: tuple[str, ...] = METRIC_NAMES + OPTIONAL_METRIC_NAMES + tuple(
    n for names in RULE_METRIC_NAMES.values() for n in names)


def _frac(num: Tensor, den: Tensor) -> Tensor:
    return num / den.clamp_min(1)


@torch.no_grad()
def shared_metrics(batch: PolicyBatch, kept: Tensor, limited: Optional[Tensor] = None, div: Optional[Tensor] = None,
                   extra_counts: Optional[dict[str, Tensor]] = None, terms=None) -> dict[str, float]:
    """The METRIC_NAMES (plus entropy and rule extras) for one rule call, as Python floats.

    Args:
        batch: the rule's input.
        kept: (B, T) bool, tokens receiving gradient.
        limited: (B, T) bool, tokens blocked or down-weighted; default `mask & ~kept`.
        div: (B, T) the rule's D_t (zero on padding); default binary TV between π and μ.
        extra_counts: name -> (B, T) bool of eligible tokens counted for a rule-specific fraction
            (divided by the number of eligible tokens).
        terms: the rule's `cppo.rules.gate.Terms`, to reuse its sanitised tensors.
    """
    mask = batch.mask
    dt = compute_dtype(batch.logp)
    if terms is not None:
        adv, logp = terms.adv, terms.logp.detach()
    else:
        adv = torch.where(mask, batch.advantages.detach().to(dt), 0.0)  # (B, T)
        logp = torch.where(mask, batch.logp.detach().to(dt), 0.0)
    if terms is not None and terms.anchor == "rollout":
        mu, log_rho = terms.ref_logp, terms.log_ratio.detach()
    else:
        mu = torch.where(mask, batch.rollout_logp.to(dt), 0.0)
        log_rho = (logp - mu).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if limited is None:
        limited = mask & ~kept
    if div is None:
        div = binary_tv(logp, mu)  # both are 0 on padding, so D = 0 there
    pos, neg = adv > 0, adv < 0  # Â is 0 on padding, so these are response tokens only
    elig = pos | neg  # (B, T)
    n_tok = mask.sum()
    n_elig = elig.sum()
    lim = limited & elig
    # a sequence is fully masked when it has eligible tokens and none of them is kept
    elig_rows = elig.amax(dim=1)  # (B,) any() (amax is the faster kernel on CPU)
    fully = elig_rows & ~(kept & elig).amax(dim=1)
    rho_all = log_rho.exp()  # (B, T); 1 on padding (log ρ = 0 there)
    rho = rho_all * (terms.mask_f if terms is not None else mask.to(dt))
    vals = {
        "masked_frac": _frac(lim.sum(), n_elig),
        "masked_frac_pos": _frac((lim & pos).sum(), pos.sum()),
        "masked_frac_neg": _frac((lim & neg).sum(), neg.sum()),
        "seq_fully_masked_frac": _frac(fully.sum(), elig_rows.sum()),
        "div_mean": _frac(div.sum(), n_tok),
        "div_max": div.max(),  # D ≥ 0 and 0 on padding
        "k3_pi_mu": _frac((rho_all - 1.0 - log_rho).sum(), n_tok),  # k3; 0 on padding
        "ratio_max": rho.max(),  # ρ > 0 on response tokens, 0 on padding
        "ess": rho.sum().square() / (n_tok * rho.square().sum()).clamp_min(1e-30),
    }
    if batch.old_logp is not None:  # None: the trainer skipped π_old for a rule that does not read it
        old = torch.where(mask, batch.old_logp.to(dt), 0.0)
        vals["k3_old_mu"] = _frac(k3((old - mu).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)).sum(), n_tok)
    if batch.entropy is not None:
        vals["entropy"] = _frac(torch.where(mask, batch.entropy.detach().to(dt), 0.0).sum(), n_tok)
    for name, hit in (extra_counts or {}).items():
        vals[name] = _frac((hit & elig).sum(), n_elig)
    names = list(vals)
    # one device->host transfer for all metrics
    out = torch.stack([v.to(dt).reshape(()) for v in vals.values()]).tolist()
    return dict(zip(names, out))


@torch.no_grad()
def position_profile(batch: PolicyBatch, out: RuleOutput, n_buckets: int = 10, by: str = "relative",
                     bucket_width: int = 64) -> dict:
    """Mean D_t and masked fraction by response position (the paper's Figure 2), per bucket.

    Position t counts response tokens only (left or right padding both work).

    Args:
        batch, out: a rule's input and output (`out.div` is used when present, else binary TV vs μ).
        n_buckets: number of buckets.
        by: `relative` — bucket ⌊n_buckets · t / L⌋ of the sequence's own length L;
            `absolute` — bucket ⌊t / bucket_width⌋, the last bucket holding all later positions.
        bucket_width: tokens per bucket for `absolute`.

    Returns:
        dict with `by`, `n_buckets`, `bucket_width` (absolute only) and per-bucket lists: `tokens`,
        `div_sum`, `div_mean`, `eligible` (tokens with Â ≠ 0), `masked` (eligible and limited),
        `masked_frac`. Sums and counts let a caller accumulate over batches and recompute the means.
    """
    if by not in ("relative", "absolute"):
        raise ValueError(f"position_profile: by must be 'relative' or 'absolute', got {by!r}")
    if n_buckets < 1 or bucket_width < 1:
        raise ValueError("position_profile: n_buckets and bucket_width must be >= 1")
    mask = batch.mask
    dt = compute_dtype(batch.logp)
    idx = mask.long().cumsum(dim=1) - 1  # (B, T) 0-based position among response tokens
    if by == "relative":
        length = mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
        bucket = (idx * n_buckets) // length
    else:
        bucket = idx // bucket_width
    bucket = bucket.clamp(0, n_buckets - 1)
    div = out.div if out.div is not None else binary_tv(batch.logp.detach().to(dt), batch.rollout_logp.to(dt))
    limited = out.limited if out.limited is not None else mask & ~out.kept
    elig = mask & (batch.advantages != 0)
    b = bucket[mask]  # (N,)

    def per_bucket(values: Tensor) -> list[float]:
        acc = torch.zeros(n_buckets, dtype=dt, device=values.device)
        return acc.index_add_(0, b, values[mask].to(dt)).tolist()

    tokens = per_bucket(torch.ones_like(div, dtype=dt))
    div_sum = per_bucket(torch.where(mask, div.to(dt), 0.0))
    eligible = per_bucket(elig.to(dt))
    masked = per_bucket((limited & elig).to(dt))
    prof = {
        "by": by, "n_buckets": n_buckets,
        "tokens": tokens, "div_sum": div_sum,
        "div_mean": [s / n if n else 0.0 for s, n in zip(div_sum, tokens)],
        "eligible": eligible, "masked": masked,
        "masked_frac": [m / e if e else 0.0 for m, e in zip(masked, eligible)],
    }
    if by == "absolute":
        prof["bucket_width"] = bucket_width
    return prof
