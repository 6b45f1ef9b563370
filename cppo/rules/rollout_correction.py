"""Rollout correction: importance weights and rejection of the rollout policy μ against π_old.

What: the other half of the μ-vs-π_old story. A rule bounds how far π may move from its anchor; rollout
correction repairs, before any update, the gap between the engine that sampled (μ, e.g. vLLM in bf16
or stale weights) and the trainer's own policy π_old. It is orthogonal to the rule: weights multiply
the rule's per-token loss, rejection removes tokens from the mask the rule and the aggregation see.
Names and semantics are verl 0.9.1's `algorithm.rollout_correction` in decoupled mode
(verl/trainer/ppo/rollout_corr_helper.py), written here as small pure functions of

    log w_t = log π_old(y_t) − log μ(y_t)          (B, T), per response token

Importance weights (`rollout_is`, threshold `rollout_is_threshold`):
- `token`:    w_t = exp(log w_t)
- `sequence`: w_t = exp(Σ_s log w_s) for every token of the sequence (the product of the token ratios)
  (log-weights clamped to ±20 before exp). A single number U gives TIS (truncated IS, Ionides,
  JCGS 2008; Yao et al. 2025 for the rollout/trainer mismatch): w ← min(w, U). A string "L_U" gives
  IcePop (Ling team, Ring-1T report, 2025): w ← w · [L ≤ w ≤ U], i.e. zero weight outside the band.
  `rollout_is_batch_normalize` divides by the weights' mean over tokens (token) or sequences (sequence).
  Weights are detached (they change the measure, not the objective).

Rejection (`rollout_rs`, comma-separated options, all must pass; `rollout_rs_threshold` one per option
or one for all), with the sample KL estimators of μ‖π_old (Schulman 2020) at log r = log w:
    k1 = −log r,   k2 = ½ (log r)²,   k3 = r − 1 − log r
- `token_k{1,2,3}`: reject token t when its statistic fails;
- `seq_sum_k{1,2,3}`, `seq_mean_k{1,2,3}`, `seq_max_k{2,3}`: reject a whole sequence by the sum, mean or
  max of the token statistic.
k2/k3 take an upper bound U (reject above U). k1 takes "L_U" ratio bounds and keeps L ≤ exp(k1) ≤ U,
i.e. log L ≤ −log r ≤ log U (a single number U means L = 1/U). As in verl the band applies to
exp(k1) = μ/π_old (not to π_old/μ), which matters only for an asymmetric band.

Diagnostics (`CORRECTION_METRICS`, logged as `rollout_corr/<name>`): `rejected_frac` (response tokens
rejected), `rejected_seq_frac` (sequences with a rejected token), `is_mean` (mean weight over response
tokens), `is_ess` (effective sample size of the weights over response tokens, (Σw)²/(N Σw²) ∈ (0, 1]),
`is_clipped_frac` (tokens whose raw weight was truncated, above U, or, IcePop, zeroed outside [L, U]).

What is not here: verl's bypass mode (old_log_prob := μ) is the rules' `anchor: rollout`; its
`loss_type` presets are rules (`pg_is`, `ppo_clip`). References: verl's rollout-correction docs;
Liu, Li, Fu et al., "When Speed Kills Stability: Demystifying RL Collapse from the
Training-Inference Mismatch" (2025); Yao et al., "Your Efficient RL Framework Secretly Brings You
Off-Policy RL Training" (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

from cppo.rules.types import Tensor

IS_LEVELS = ("token", "sequence")
RS_OPTIONS = ("token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2", "seq_sum_k3",
              "seq_mean_k1", "seq_mean_k2", "seq_mean_k3", "seq_max_k2", "seq_max_k3")
CORRECTION_METRICS = ("rejected_frac", "rejected_seq_frac", "is_mean", "is_ess", "is_clipped_frac")
SAFETY_BOUND = 20.0  # |log w| cap before exp (verl's)


@dataclass(frozen=True)
class RejectOption:
    """One parsed rejection criterion: `name` (e.g. seq_mean_k3) and its bounds on the statistic."""

    name: str
    lower: Optional[float]  # k1: log L (the statistic is −log r); None for k2/k3
    upper: float  # k1: log U; k2/k3: U


@dataclass(frozen=True)
class Correction:
    """A validated rollout-correction setting (`parse` builds it from verl's option names)."""

    is_level: Optional[str] = None  # token | sequence | None (no weights)
    is_upper: float = 2.0
    is_lower: Optional[float] = None  # IcePop band when set
    is_batch_normalize: bool = False
    reject: tuple[RejectOption, ...] = ()


def _number(x: Union[str, float], what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {x!r} is not a number") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{what} must be a positive number, got {x!r}")
    return v


def parse(rollout_is: Optional[str] = None, rollout_is_threshold: Union[str, float] = 2.0,
          rollout_is_batch_normalize: bool = False, rollout_rs: Optional[str] = None,
          rollout_rs_threshold: Union[str, float, None] = None) -> Correction:
    """verl's five options -> a `Correction`; ValueError naming the option on anything invalid."""
    lo = None
    if rollout_is is not None:
        if rollout_is not in IS_LEVELS:
            raise ValueError(f"rollout_is must be one of {IS_LEVELS} or null, got {rollout_is!r}")
        if isinstance(rollout_is_threshold, bool):
            raise ValueError("rollout_is_threshold must be a number or a 'lower_upper' string")
        spec = str(rollout_is_threshold).strip()
        if "_" in spec:
            lo_s, hi_s = spec.split("_", 1)
            lo, hi = _number(lo_s, "rollout_is_threshold lower"), _number(hi_s, "rollout_is_threshold upper")
            if lo > hi:
                raise ValueError(f"rollout_is_threshold {spec!r}: lower bound above the upper one")
        else:
            hi = _number(spec, "rollout_is_threshold")
    else:
        hi = 2.0
    reject: list[RejectOption] = []
    if rollout_rs is not None:
        names = list(dict.fromkeys(o.strip() for o in str(rollout_rs).split(",") if o.strip()))
        bad = [o for o in names if o not in RS_OPTIONS]
        if not names or bad:
            raise ValueError(f"rollout_rs: unknown option(s) {bad or [rollout_rs]}; valid: {list(RS_OPTIONS)}")
        if rollout_rs_threshold is None or isinstance(rollout_rs_threshold, bool):
            raise ValueError("rollout_rs_threshold must be given (one value, or one per rollout_rs option)")
        specs = [s.strip() for s in str(rollout_rs_threshold).split(",") if s.strip()]
        if len(specs) not in (1, len(names)):
            raise ValueError(f"rollout_rs_threshold: {len(specs)} values for {len(names)} rollout_rs options")
        specs = specs * len(names) if len(specs) == 1 else specs
        for name, spec in zip(names, specs):
            if name.endswith("k1"):
                l_s, u_s = spec.split("_", 1) if "_" in spec else (None, spec)
                u = _number(u_s, f"rollout_rs_threshold of {name}")
                l = 1.0 / u if l_s is None else _number(l_s, f"rollout_rs_threshold of {name} (lower)")
                if l > u:
                    raise ValueError(f"rollout_rs_threshold of {name}: lower bound {l} above upper {u}")
                reject.append(RejectOption(name, math.log(l), math.log(u)))
            else:
                if "_" in spec:
                    raise ValueError(f"rollout_rs_threshold of {name} takes one upper bound, got {spec!r}")
                reject.append(RejectOption(name, None, _number(spec, f"rollout_rs_threshold of {name}")))
    return Correction(rollout_is, hi, lo, bool(rollout_is_batch_normalize), tuple(reject))


def is_weights(log_w: Tensor, mask: Tensor, level: str, upper: float, lower: Optional[float] = None,
               batch_normalize: bool = False) -> tuple[Tensor, Tensor]:
    """Truncated (TIS) or banded (IcePop) importance weights; returns (weights, raw weights), both (B, T),
    0 on padding, no gradient. `log_w`: (B, T) log π_old − log μ; `mask`: (B, T) bool."""
    with torch.no_grad():
        lw = torch.where(mask, log_w.detach(), 0.0)  # (B, T)
        if level == "sequence":
            lw = lw.sum(dim=1, keepdim=True).expand_as(lw)  # Σ_t log w_t on every token of the row
        raw = lw.clamp(-SAFETY_BOUND, SAFETY_BOUND).exp() * mask  # (B, T)
        if lower is None:
            w = raw.clamp(max=upper)  # TIS
        else:
            w = raw * ((raw >= lower) & (raw <= upper))  # IcePop
        if batch_normalize:
            m = mask.to(w.dtype)
            if level == "token":
                mean = w.sum() / m.sum().clamp_min(1)
            else:  # one weight per sequence: the mean over sequences
                rows = m.sum(1) > 0
                mean = ((w * m).sum(1)[rows] / m.sum(1)[rows]).mean() if rows.any() else w.new_zeros(())
            if mean > 1e-8:
                w = w / mean
    return w, raw


def reject_mask(log_w: Tensor, mask: Tensor, options: tuple[RejectOption, ...]) -> Tensor:
    """(B, T) bool: response tokens that pass every rejection option (rejected tokens and padding False)."""
    with torch.no_grad():
        lr = torch.where(mask, log_w.detach(), 0.0).clamp(-SAFETY_BOUND, SAFETY_BOUND)  # (B, T) log r
        stats = {"k1": -lr, "k2": 0.5 * lr.square(), "k3": lr.exp() - 1.0 - lr}  # each (B, T)
        m = mask.to(lr.dtype)
        keep = mask.clone()
        for o in options:
            level, k = o.name.rsplit("_", 1)
            s = stats[k]
            if level == "seq_sum":
                s = (s * m).sum(1, keepdim=True)
            elif level == "seq_mean":
                s = (s * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
            elif level == "seq_max":
                s = s.masked_fill(~mask, -math.inf).amax(1, keepdim=True)
            ok = s <= o.upper
            if o.lower is not None:
                ok = ok & (s >= o.lower)
            keep &= ok.expand_as(mask)
    return keep


@dataclass
class CorrectionOutput:
    weights: Optional[Tensor]
    """(B, T) IS weights to multiply the per-token loss by (None when `rollout_is` is off)."""
    mask: Tensor
    """(B, T) bool: the response mask after rejection."""
    metrics: dict[str, float]
    """`CORRECTION_METRICS` as floats."""


def rollout_correction(old_logp: Tensor, rollout_logp: Tensor, mask: Tensor, c: Correction) -> CorrectionOutput:
    """Apply `c` to one rollout batch: (B, T) log π_old, log μ and the response mask."""
    with torch.no_grad():
        dt = torch.promote_types(old_logp.dtype, torch.float32)
        log_w = torch.where(mask, old_logp.detach().to(dt) - rollout_logp.detach().to(dt), 0.0)  # (B, T)
        m = mask.to(dt)
        n_tok = m.sum().clamp_min(1)
        keep = reject_mask(log_w, mask, c.reject) if c.reject else mask
        rows = mask.any(1)
        rejected = mask & ~keep
        metrics = {"rejected_frac": rejected.sum() / n_tok,
                   "rejected_seq_frac": rejected.any(1).sum() / rows.sum().clamp_min(1)}
        weights = None
        if c.is_level is not None:
            weights, raw = is_weights(log_w, mask, c.is_level, c.is_upper, c.is_lower, False)
            lo = 0.0 if c.is_lower is None else c.is_lower
            clipped = mask & ((raw > c.is_upper) | (raw < lo))
            metrics.update(is_mean=weights.sum() / n_tok,
                           is_ess=weights.sum().square() / (n_tok * weights.square().sum()).clamp_min(1e-30),
                           is_clipped_frac=clipped.sum() / n_tok)
            if c.is_batch_normalize:
                weights, _ = is_weights(log_w, mask, c.is_level, c.is_upper, c.is_lower, True)
        else:
            metrics.update(is_mean=torch.ones(()), is_ess=torch.ones(()), is_clipped_frac=torch.zeros(()))
        names = list(metrics)
        vals = torch.stack([torch.as_tensor(v, dtype=dt).reshape(()).to(mask.device) for v in metrics.values()])
    return CorrectionOutput(weights=weights, mask=keep, metrics=dict(zip(names, vals.tolist())))
