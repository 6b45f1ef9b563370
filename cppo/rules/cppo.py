"""CPPO: cumulative prefix-divergence policy optimisation (Mao et al., arXiv 2606.10968, 2026).

What it changes relative to DPPO's uniform mask D_t ≤ δ — two coupled changes, no new loss term:

1. A linear, decreasing position weight w_t = 1 − (1 − w_min)(t − 1)/(T − 1) (w_1 = 1, w_T = w_min):
   the token test w_t D_t ≤ δ is strictest at the first token (errors there affect the whole remaining
   horizon) and loosest at the last.
2. A cumulative prefix budget: with Z_t = w_t D_t, S_t = Σ_{j≤t} Z_j, W_t = Σ_{j≤t} w_j (accumulated over
   *all* response tokens, whatever their mask or advantage), the weighted prefix average may not exceed
   δ_b beyond an initial slack δ: S_t ≤ δ + δ_b W_{t−1}.

Combined (Algorithm 1 of the paper):

    c_t = min(δ, δ + δ_b W_{t−1} − S_{t−1});   I_t = [Z_t ≤ c_t]
    M_t = gate_t ∨ I_t,   gate_t = [Â_t (ρ_t − 1) ≤ 0]
    loss_t = −M_t Â_t sg(min(ρ_t, C)) log π_t      (C = 20; C = None gives −M_t Â_t ρ_t)

Design decisions (each a parameter; docs/methods.md §CPPO states them):
- Vectorised: S_{t−1}, W_{t−1} are a cumsum shifted right by one step; no Python loop over positions
  (`cppo.rules.reference.reference_cppo` is the per-position loop this must equal; the tests compare them).
  t counts response tokens only, so left- and right-padded batches give the same result.
- `horizon`: T is the response's own length (`response`, default) or a fixed maximum length (`max`:
  `max_horizon`, else the batch's padded width, as one public implementation does). For T = 1, w_1 = 1.
- `delta_b_mode`: `fixed` δ_b, or `p90` — per sequence δ_b,i = clamp(P90(D_i,1..T), δ_b, 2δ_b) (used for
  Base models), P90 by linear interpolation over the sequence's response tokens.
- `mask_mode`: `hard` mask M_t, or the paper's `soft` gate: violation x_t = max(Z_t/δ, S_t/(δ + δ_b W_{t−1}))
  and gradient weight 1 where gate_t ∨ I_t, else min(1, 1/x_t). Soft-gated tokens are "kept" (weight > 0)
  and counted in masked_frac as down-weighted.
- Ablations: `no_position_weight` (w ≡ 1), `no_prefix_budget` (only w_t D_t ≤ δ), `shuffled_weights`
  (the same multiset of w_t at random response positions, drawn from `shuffle_seed`: deterministic
  for a given batch shape, but not padding- or permutation-invariant, by construction).
- `anchor`: `rollout` (ρ and D against μ, the paper) or `old` (against π_old).
- Metrics: token_reject_frac (eligible tokens failing the gate with Z_t > δ) and prefix_reject_frac
  (failing the gate with Z_t ≤ δ but over the prefix budget); they sum to masked_frac in hard mode.

Paper defaults (Table 3): δ = 0.15 (0.20 for the 30B MoE), δ_b = 0.02 with P90 calibration for Base
models (0.015 fixed for post-trained), w_min = 0.8, top-K TV with K = 20, C = 20.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from cppo.rules.diagnostics import shared_metrics
from cppo.rules.divergence import ANCHORS, DIVERGENCES, token_divergence
from cppo.rules.gate import advantage_gate, is_surrogate, policy_terms
from cppo.rules.registry import anchor_is_old, param, register_rule
from cppo.rules.types import PolicyBatch, RuleOutput, Tensor

ABLATIONS = (None, "no_position_weight", "no_prefix_budget", "shuffled_weights")


@dataclass
class CPPOParams:
    """Parameters of `cppo`."""

    delta: float = param(0.15, "token threshold δ on w_t·D_t, also the prefix budget's initial slack")
    delta_b: float = param(0.02, "prefix budget δ_b: bound on the weighted prefix average of D (p90 mode: its floor)")
    delta_b_mode: str = param("p90", "fixed δ_b, or p90: per sequence clamp(P90(D), δ_b, 2δ_b)", ("fixed", "p90"))
    w_min: float = param(0.8, "position weight at the last token, w_t = 1 − (1 − w_min)(t − 1)/(T − 1)")
    horizon: str = param("response", "T of the position weight: the response's length, or max", ("response", "max"))
    max_horizon: Optional[int] = param(None, "T for horizon=max; None = the batch's padded width")
    divergence: str = param("topk_tv", "D_t: binary_tv, binary_kl, topk_tv or topk_kl", DIVERGENCES)
    mask_mode: str = param("hard", "hard mask, or soft gate min(1, 1/violation)", ("hard", "soft"))
    ablation: Optional[str] = param(None, "None, no_position_weight, no_prefix_budget or shuffled_weights", ABLATIONS)
    shuffle_seed: int = param(0, "seed of the position permutation for ablation=shuffled_weights")
    anchor: str = param("rollout", "reference policy of ρ and D: rollout (μ) or old (π_old)", ANCHORS)
    trunc_cap: Optional[float] = param(20.0, "C in −M·Â·sg(min(ρ, C))·log π; None = untruncated −M·Â·ρ")

    def __post_init__(self):
        if not self.delta > 0:
            raise ValueError(f"cppo: delta must be > 0, got {self.delta}")
        if not self.delta_b >= 0:
            raise ValueError(f"cppo: delta_b must be >= 0, got {self.delta_b}")
        if not 0 < self.w_min <= 1:
            raise ValueError(f"cppo: w_min must be in (0, 1], got {self.w_min}")
        if self.max_horizon is not None and not self.max_horizon >= 1:
            raise ValueError(f"cppo: max_horizon must be >= 1 or None, got {self.max_horizon}")
        if self.trunc_cap is not None and not self.trunc_cap > 0:
            raise ValueError(f"cppo: trunc_cap must be > 0 or None, got {self.trunc_cap}")

    @property
    def needs_topk(self) -> bool:
        return self.divergence.startswith("topk")


def position_weights(mask: Tensor, p: CPPOParams, dt: torch.dtype = torch.float32,
                     mask_f: Optional[Tensor] = None) -> Tensor:
    """w_t = 1 − (1 − w_min)(t − 1)/(T − 1) on response tokens, 0 on padding; (B, T).

    t counts response tokens only (1-based), so left and right padding give the same weights.
    `mask_f` is the mask as floats of dtype `dt`, when the caller already has it.
    """
    mask_f = mask.to(dt) if mask_f is None else mask_f
    if p.ablation == "no_position_weight" or p.w_min == 1.0:
        return mask_f
    if p.ablation == "shuffled_weights":
        # a seeded random permutation of the positions 0..L−1 within each row
        gen = torch.Generator(device=mask.device).manual_seed(p.shuffle_seed)
        keys = torch.rand(mask.shape, generator=gen, device=mask.device)
        keys = torch.where(mask, keys, 2.0)  # padding sorts last
        idx = keys.argsort(dim=1).argsort(dim=1).to(dt)  # t − 1 := rank among the row's response tokens
    else:
        idx = mask_f.cumsum(dim=1) - 1.0  # (B, T) t − 1
    if p.horizon == "response":
        horizon = mask_f.sum(dim=1, keepdim=True)  # (B, 1)
    else:
        horizon = torch.full((1, 1), float(p.max_horizon or mask.shape[1]), dtype=dt, device=mask.device)
    slope = (1.0 - p.w_min) / (horizon - 1.0).clamp_min(1.0)  # (B, 1) or (1, 1); T = 1 gives w_1 = 1
    w = idx.mul_(-slope).add_(1.0)  # 1 − slope·(t − 1), in place: idx is a fresh temporary
    if p.horizon == "max":  # a response longer than max_horizon keeps w_min past the horizon
        w.clamp_min_(p.w_min)
    return w.mul_(mask_f)


def prefix_delta_b(div: Tensor, mask: Tensor, p: CPPOParams) -> Tensor | float:
    """δ_b: the fixed value, or per sequence clamp(P90(D), δ_b, 2δ_b) as a (B, 1) tensor.

    `div` must be ≥ 0 and 0 on padding (as `token_divergence` returns it). P90 is the linear
    interpolation between order statistics (numpy's default) over the row's response tokens.

    Cost: the clamp only needs P90 exactly when it can fall inside (δ_b, 2δ_b). Counting the values
    above each bound decides most rows (x_(upper) ≤ δ_b ⇔ #(D > δ_b) ≤ n − 1 − upper, and
    x_(lower) ≥ 2δ_b ⇔ #(D ≥ 2δ_b) ≥ n − lower); only when some row is undecided is a partial top-k
    taken, over the undecided rows only (only the top ⌈0.1 (T − 1)⌉ + 1 values can be involved).
    """
    if p.delta_b_mode == "fixed":
        return p.delta_b
    if p.delta_b == 0:
        return 0.0
    lo_b, hi_b = p.delta_b, 2 * p.delta_b
    n = mask.sum(dim=1, keepdim=True)  # (B, 1)
    rank = 0.9 * (n - 1).clamp_min(0).to(div.dtype)  # ascending fractional rank of P90
    lower, upper = rank.floor(), rank.ceil()
    n_f = n.to(div.dtype)
    at_floor = (div > lo_b).sum(dim=1, keepdim=True) <= (n_f - 1) - upper  # P90 ≤ δ_b
    at_ceil = (div >= hi_b).sum(dim=1, keepdim=True) >= n_f - lower  # P90 ≥ 2δ_b
    out = torch.where(at_ceil, n_f.new_tensor(hi_b), n_f.new_tensor(lo_b))  # (B, 1), in div's dtype
    open_rows = (~(at_floor | at_ceil) & (n > 0)).squeeze(1).nonzero().squeeze(1)  # (R,) undecided rows
    if open_rows.numel() == 0:
        return out
    # exact P90 for the undecided rows only
    sub, n_r = div.index_select(0, open_rows), n.index_select(0, open_rows)  # (R, T), (R, 1)
    lower_r, upper_r, rank_r = lower.index_select(0, open_rows), upper.index_select(0, open_rows), rank.index_select(0, open_rows)
    T = div.shape[1]
    k = min(T, math.ceil(0.1 * (T - 1)) + 1)
    # D ≥ 0 and D = 0 on padding: padded zeros can only tie with response zeros, which leaves the
    # values of the order statistics unchanged, so no masking is needed before the top-k
    top = sub.topk(k, dim=1).values  # (R, k) descending
    # ascending index i is descending index n − 1 − i
    v_lo = top.gather(1, ((n_r - 1) - lower_r.long()).clamp(0, k - 1))
    v_hi = top.gather(1, ((n_r - 1) - upper_r.long()).clamp(0, k - 1))
    q = v_lo + (rank_r - lower_r) * (v_hi - v_lo)
    return out.index_copy(0, open_rows, q.clamp(lo_b, hi_b))


@register_rule("cppo", CPPOParams, paper="Mao et al. 2026, arXiv 2606.10968",
               summary="position-weighted token test + cumulative prefix-divergence budget",
               reads_old=anchor_is_old)
def cppo(batch: PolicyBatch, p: CPPOParams) -> RuleOutput:
    mask = batch.mask
    terms = policy_terms(batch, p.anchor)
    adv, logp, log_ratio = terms.adv, terms.logp, terms.log_ratio  # (B, T)
    div = token_divergence(batch, p.divergence, p.anchor, terms)  # (B, T), no grad, 0 on padding
    with torch.no_grad():
        w = position_weights(mask, p, div.dtype, terms.mask_f)  # (B, T)
        z = w * div  # Z_t
        token_ok = z <= p.delta
        gate = advantage_gate(adv, log_ratio.detach())
        if p.ablation == "no_prefix_budget":
            passed = token_ok
            budget = None
        else:
            s = z.cumsum(dim=1)  # S_t
            # one-step right shift: S_{t−1}, W_{t−1} (S_0 = W_0 = 0)
            s_prev = torch.nn.functional.pad(s[:, :-1], (1, 0))
            w_prev = torch.nn.functional.pad(w.cumsum(dim=1)[:, :-1], (1, 0))
            budget = w_prev.mul_(prefix_delta_b(div, mask, p)).add_(p.delta)  # δ + δ_b W_{t−1} (in place)
            passed = token_ok & (z <= budget - s_prev)  # Z_t ≤ min(δ, δ + δ_b W_{t−1} − S_{t−1})
        ok = gate | passed
        weight = None
        if p.mask_mode == "hard":
            kept = mask & ok
        else:
            x = z / p.delta  # violation
            if budget is not None:
                x = torch.maximum(x, s / budget)
            weight = torch.where(ok, 1.0, x.reciprocal().clamp_max(1.0))  # (B, T)
            kept = mask & (weight > 0)
        limited = mask & ~ok  # failed the gate and (the token test or the prefix test)
        extra = {"token_reject_frac": limited & ~token_ok, "prefix_reject_frac": limited & token_ok}
    loss = is_surrogate(adv, logp, log_ratio, kept, p.trunc_cap, weight)
    metrics = shared_metrics(batch, kept, limited, div, extra_counts=extra, terms=terms)
    return RuleOutput(loss=loss, kept=kept, metrics=metrics, div=div, limited=limited)
