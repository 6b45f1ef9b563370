"""Contract types of the rule library: what a rule receives (`PolicyBatch`) and returns (`RuleOutput`).

A trust-region rule is a pure function of per-token log-probabilities and advantages. Every rule in
the suite (CPPO and the baselines) takes the same `PolicyBatch` and returns the same `RuleOutput`, so
the trainer, the verl integration and the tests can treat them alike (docs/contracts.md §Rules).

Conventions
- Shapes: B sequences, T padded response positions, K top-K entries of the rollout policy μ.
- `mask` marks response tokens; padding may sit anywhere (left or right) and may hold any values,
  including inf/nan: every rule neutralises padded entries before using them.
- Only `logp` (and `policy_topk_logp`) carry gradient; everything else is treated as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

import torch

Tensor = torch.Tensor


@dataclass
class PolicyBatch:
    """Per-token inputs of a policy-update rule (one mini-batch of responses)."""

    logp: Tensor
    """(B, T) log π(y_t|s_t) of the sampled tokens under the policy being updated; carries the gradient.
    Finite on response tokens."""
    old_logp: Optional[Tensor]
    """(B, T) log π_old(y_t|s_t): the trainer's policy before this round of updates. May be None for a
    rule registered with `reads_old` false (the trainer then skips π_old's forward; `k3_old_mu` is not reported)."""
    rollout_logp: Tensor
    """(B, T) log μ(y_t|s_t): recorded by the rollout engine that sampled y."""
    advantages: Tensor
    """(B, T) advantage Â_t (GRPO: one value per response, broadcast over its tokens)."""
    mask: Tensor
    """(B, T) bool: True on response tokens, False on padding."""
    rollout_topk_ids: Optional[Tensor] = None
    """(B, T, K) long: μ's top-K token ids at each position (for top-K divergences)."""
    rollout_topk_logp: Optional[Tensor] = None
    """(B, T, K) log μ at `rollout_topk_ids`."""
    policy_topk_logp: Optional[Tensor] = None
    """(B, T, K) log π at `rollout_topk_ids` (computed by the trainer; may carry gradient, unused by rules)."""
    old_topk_logp: Optional[Tensor] = None
    """(B, T, K) log π_old at `rollout_topk_ids`; needed only for top-K divergences with anchor `old`."""
    token_ids: Optional[Tensor] = None
    """(B, T) long: the sampled ids y_t. Optional: lets top-K divergences test exactly whether y_t is in
    μ's top-K set (without it, membership is decided by comparing μ(y_t) with the K-th top-K value)."""
    entropy: Optional[Tensor] = None
    """(B, T) entropy of π at each position (no gradient), only for the `entropy` diagnostic."""

    def __post_init__(self) -> None:
        shape = tuple(self.logp.shape)
        if len(shape) != 2 or 0 in shape:
            raise ValueError(f"PolicyBatch.logp must be a non-empty (B, T) tensor, got shape {shape}")
        for name in ("old_logp", "rollout_logp", "advantages", "mask", "token_ids", "entropy"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"PolicyBatch.{name} has shape {tuple(t.shape)}, expected {shape} like logp")
        if self.mask.dtype != torch.bool:
            raise ValueError(f"PolicyBatch.mask must be a bool tensor, got {self.mask.dtype}")
        k_shape = None
        for name in ("rollout_topk_ids", "rollout_topk_logp", "policy_topk_logp", "old_topk_logp"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.dim() != 3 or tuple(t.shape[:2]) != shape:
                raise ValueError(f"PolicyBatch.{name} must be (B, T, K) with (B, T) = {shape}, got {tuple(t.shape)}")
            if k_shape is not None and tuple(t.shape) != k_shape:
                raise ValueError(f"PolicyBatch top-K tensors disagree in shape: {name} is {tuple(t.shape)}, expected {k_shape}")
            k_shape = tuple(t.shape)

    @property
    def has_topk(self) -> bool:
        """True when μ's top-K log-probs and π's log-probs at those ids are both present."""
        return self.rollout_topk_logp is not None and self.policy_topk_logp is not None

    def map(self, fn) -> "PolicyBatch":
        """A new batch with `fn` applied to every tensor field (e.g. a row permutation or a dtype cast)."""
        return PolicyBatch(**{f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name)))
                              for f in fields(self)})


@dataclass
class RuleOutput:
    """What every rule returns."""

    loss: Tensor
    """(B, T) per-token loss before aggregation; exactly zero where not kept or padded."""
    kept: Tensor
    """(B, T) bool: tokens that receive gradient (soft-weight rules: gradient weight > 0)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The shared diagnostics (names in `cppo.rules.diagnostics.METRIC_NAMES`), prefix-free."""
    div: Optional[Tensor] = None
    """(B, T) the per-token divergence D_t the diagnostics used (no gradient; zero on padding)."""
    limited: Optional[Tensor] = None
    """(B, T) bool: tokens whose update the rule blocked or down-weighted (masked/clipped); for hard
    rules this is `mask & ~kept`. Drives `masked_frac*` and the position profile."""
