"""Shared per-token divergence estimates D_t between an anchor policy and π (docs/methods.md §Divergences).

Why here and not inside each rule: CPPO, DPPO and TRM compare the same quantities, and their
diagnostics (`div_mean`, `k3_pi_mu`, ...) must mean the same thing across rules.

- binary TV  D_t = |π(y_t) − μ(y_t)|                        (the {y_t, rest} partition)
- binary KL  D_t = KL(Bern(μ(y_t)) ‖ Bern(π(y_t)))
- top-K TV   D_t = ½ [Σ_{i∈S} |μ_i − π_i| + |μ_rest − π_rest|]
- top-K KL   D_t = Σ_{i∈S} μ_i log(μ_i/π_i) + μ_rest log(μ_rest/π_rest)
  with S = μ's top-K ids at s_t; if y_t ∉ S it replaces the K-th (smallest) entry.
- k1, k2, k3: sample estimates of KL(μ‖π) from y ~ μ with log r = log π − log μ:
  k1 = −log r, k2 = ½ (log r)², k3 = r − 1 − log r  (Schulman's "Approximating KL divergence", 2020).

All divergences are computed without gradient, in float32 or wider ("μ" below is whichever anchor the
rule uses: the rollout policy μ or π_old).
"""

from __future__ import annotations

import torch

from cppo.rules.types import PolicyBatch, Tensor

DIVERGENCES = ("binary_tv", "binary_kl", "topk_tv", "topk_kl")
ANCHORS = ("rollout", "old")
LOG_RATIO_CLAMP = 20.0  # |log ratio| cap before exp, for stability (same value as verl)
_EPS = 1e-12  # probability floor inside logs of top-K / binary KL


def compute_dtype(t: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def anchor_logp(batch: PolicyBatch, anchor: str) -> Tensor:
    """log-probs of the anchor policy: μ (`rollout`) or π_old (`old`)."""
    if anchor == "rollout":
        return batch.rollout_logp
    if anchor == "old":
        return batch.old_logp
    raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")


# ---------------------------------------------------------------------------- sample estimators
def k1(log_r: Tensor) -> Tensor:
    """k1 = −log r (unbiased, high variance, can be negative)."""
    return -log_r


def k2(log_r: Tensor) -> Tensor:
    """k2 = ½ (log r)² (biased, low variance)."""
    return 0.5 * log_r.square()


def k3(log_r: Tensor) -> Tensor:
    """k3 = r − 1 − log r ≥ 0 (unbiased for KL(μ‖π) when y ~ μ, low variance).

    Written with exp, not expm1: expm1 is not vectorised on CPU (≈20× slower), and the absolute
    rounding error (≈ 1e-7 in float32) is far below any threshold or diagnostic resolution.
    """
    return log_r.exp() - 1.0 - log_r


# ---------------------------------------------------------------------------- binary partitions
def binary_tv(logp_pi: Tensor, logp_mu: Tensor) -> Tensor:
    """|π(y_t) − μ(y_t)|: TV distance over the partition {y_t, rest}."""
    return (logp_pi.exp() - logp_mu.exp()).abs()


def binary_kl(logp_pi: Tensor, logp_mu: Tensor) -> Tensor:
    """KL(Bern(μ(y_t)) ‖ Bern(π(y_t)))."""
    mu = logp_mu.exp()
    rest_mu = (-torch.expm1(logp_mu)).clamp_min(_EPS)  # 1 − μ, accurate near μ = 1
    rest_pi = (-torch.expm1(logp_pi)).clamp_min(_EPS)
    return (mu * (logp_mu - logp_pi) + rest_mu * (rest_mu.log() - rest_pi.log())).clamp_min(0.0)


# ---------------------------------------------------------------------------- top-K partitions
def _rest_mass(p: Tensor) -> Tensor:
    """1 − Σ_i p_i over the last axis, floored at 0 (top-K sums can exceed 1 by rounding)."""
    return (1.0 - p.sum(dim=-1)).clamp_min(0.0)


def topk_tv(topk_logp_pi: Tensor, topk_logp_mu: Tensor) -> Tensor:
    """½ [Σ_{i∈S} |μ_i − π_i| + |μ_rest − π_rest|] from (B, T, K) log-probs at the same ids."""
    p_pi, p_mu = topk_logp_pi.exp(), topk_logp_mu.exp()  # (B, T, K)
    return 0.5 * ((p_mu - p_pi).abs().sum(dim=-1) + (_rest_mass(p_mu) - _rest_mass(p_pi)).abs())


def topk_kl(topk_logp_pi: Tensor, topk_logp_mu: Tensor) -> Tensor:
    """Σ_{i∈S} μ_i log(μ_i/π_i) + μ_rest log(μ_rest/π_rest) from (B, T, K) log-probs at the same ids."""
    p_mu = topk_logp_mu.exp()
    rest_mu, rest_pi = _rest_mass(p_mu), _rest_mass(topk_logp_pi.exp())
    head = (p_mu * (topk_logp_mu - topk_logp_pi)).sum(dim=-1)
    tail = rest_mu * (rest_mu.clamp_min(_EPS).log() - rest_pi.clamp_min(_EPS).log())
    return (head + tail).clamp_min(0.0)


# ---------------------------------------------------------------------------- dispatch
@torch.no_grad()
def topk_divergence(kind: str, topk_pi: Tensor, topk_ref: Tensor, rank_key: Tensor, logp_pi_t: Tensor,
                    logp_ref_t: Tensor, in_set: Tensor) -> Tensor:
    """Top-K TV or KL where y_t replaces the K-th entry of S when it is not in S; (B, T).

    Computed without materialising the replaced (B, T, K) tensors: the sums over S are corrected by
    removing the K-th entry's term and adding y_t's term where `in_set` is False.

    Args:
        kind: "topk_tv" or "topk_kl".
        topk_pi, topk_ref: (B, T, K) log π and log anchor at μ's top-K ids.
        rank_key: (B, T, K) μ's log-probs, which define the K-th (smallest) entry.
        logp_pi_t, logp_ref_t: (B, T) log π(y_t), log anchor(y_t).
        in_set: (B, T) bool, y_t ∈ S.
    """
    kth = rank_key.argmin(dim=-1, keepdim=True)  # (B, T, 1)
    p_pi, p_ref = topk_pi.exp(), topk_ref.exp()  # (B, T, K)
    out = (~in_set).to(p_pi.dtype)  # 1 where y_t replaces the K-th entry (a product: cheaper than where())
    kth_pi, kth_ref = p_pi.gather(-1, kth).squeeze(-1), p_ref.gather(-1, kth).squeeze(-1)  # (B, T)
    y_pi, y_ref = logp_pi_t.exp(), logp_ref_t.exp()
    if kind == "topk_tv":
        diff = p_ref - p_pi  # (B, T, K)
        head = diff.abs().sum(-1) + out * ((y_ref - y_pi).abs() - (kth_ref - kth_pi).abs())
        # rest_ref − rest_pi = −Σ_S (ref − π): one sum instead of two rest masses
        rest = diff.sum(-1) + out * ((y_ref - y_pi) - (kth_ref - kth_pi))
        return 0.5 * (head + rest.abs())
    # Σ_S π and Σ_S ref after the swap, and the rest masses
    sum_pi = p_pi.sum(-1) + out * (y_pi - kth_pi)
    sum_ref = p_ref.sum(-1) + out * (y_ref - kth_ref)
    rest_pi, rest_ref = (1.0 - sum_pi).clamp_min(0.0), (1.0 - sum_ref).clamp_min(0.0)
    head = (p_ref * (topk_ref - topk_pi)).sum(-1)
    swap = y_ref * (logp_ref_t - logp_pi_t) - kth_ref * (topk_ref.gather(-1, kth) - topk_pi.gather(-1, kth)).squeeze(-1)
    head = head + out * swap
    tail = rest_ref * (rest_ref.clamp_min(_EPS).log() - rest_pi.clamp_min(_EPS).log())
    return (head + tail).clamp_min(0.0)


@torch.no_grad()
def token_divergence(batch: PolicyBatch, kind: str, anchor: str = "rollout", terms=None) -> Tensor:
    """D_t between the anchor policy and π for every token; (B, T), no gradient, zero on padding.

    Args:
        batch: the policy batch; top-K kinds need `rollout_topk_logp` and `policy_topk_logp` (and
            `old_topk_logp` for anchor `old`).
        kind: one of DIVERGENCES.
        anchor: `rollout` (μ) or `old` (π_old).
        terms: the rule's `cppo.rules.gate.Terms` for the same anchor, to reuse its sanitised log-probs.
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {kind!r}")
    mask = batch.mask
    if terms is not None and terms.anchor == anchor:
        logp_pi, logp_ref = terms.logp.detach(), terms.ref_logp
    else:
        dt = compute_dtype(batch.logp)
        logp_pi = torch.where(mask, batch.logp.detach().to(dt), 0.0)  # (B, T)
        logp_ref = torch.where(mask, anchor_logp(batch, anchor).to(dt), 0.0)
    dt = logp_pi.dtype
    if kind == "binary_tv":  # both log-probs are 0 on padding, so D = 0 there already
        return binary_tv(logp_pi, logp_ref)
    if kind == "binary_kl":
        return binary_kl(logp_pi, logp_ref)
    else:
        if not batch.has_topk:
            raise ValueError(f"divergence {kind!r} needs PolicyBatch.rollout_topk_logp and policy_topk_logp "
                             "(the rule's needs_topk is True: compute log π at μ's top-K ids)")
        topk_mu = batch.rollout_topk_logp.detach().to(dt)  # (B, T, K); padding may hold nan: only
        topk_pi = batch.policy_topk_logp.detach().to(dt)  # padded positions see it, zeroed at the end
        if anchor == "old":
            if batch.old_topk_logp is None:
                raise ValueError(f"divergence {kind!r} with anchor 'old' needs PolicyBatch.old_topk_logp")
            topk_ref = batch.old_topk_logp.detach().to(dt)
        else:
            topk_ref = topk_mu
        if batch.token_ids is not None and batch.rollout_topk_ids is not None:
            # amax over K is any() (the faster kernel on CPU)
            in_set = (batch.rollout_topk_ids == batch.token_ids.unsqueeze(-1)).amax(dim=-1)  # (B, T)
        else:
            # y_t ∈ top-K(μ) iff μ(y_t) ≥ the K-th largest μ (ties count as "in the set")
            rollout = logp_ref if anchor == "rollout" else torch.where(mask, batch.rollout_logp.to(dt), 0.0)
            in_set = rollout >= topk_mu.amin(dim=-1) - 1e-6
        d = topk_divergence(kind, topk_pi, topk_ref, topk_mu, logp_pi, logp_ref, in_set)
    return torch.where(mask, d, 0.0)
