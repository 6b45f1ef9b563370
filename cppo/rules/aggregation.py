"""Loss aggregation: from per-token losses (B, T) to the scalar the optimiser minimises.

Kept apart from the rules on purpose (docs/methods.md §Aggregation): the same aggregation must be
used for every rule in a comparison, and it is always recorded in the run's parameters.

- `token-mean`:              Σ_{b,t} ℓ·m / Σ_{b,t} m                      (DAPO)
- `token-sum`:               Σ_{b,t} ℓ·m                                   (verl's `token-sum`: no normalisation)
- `seq-mean-token-mean`:     mean_b [ Σ_t ℓ·m / Σ_t m ]                    (original GRPO)
- `seq-mean-token-sum`:      mean_b [ Σ_t ℓ·m ]
- `seq-mean-token-sum-norm`: mean_b [ Σ_t ℓ·m ] / C, C a fixed constant    (Dr. GRPO; the CPPO scripts)

Sequence means run over rows with at least one response token (an all-padding row is not a
sequence). For `seq-mean-token-sum-norm`, C defaults to the padded width T; pass the maximum
response length so that the value does not depend on how a batch happens to be padded.
"""

from __future__ import annotations

from typing import Optional

import torch

from cppo.rules.types import Tensor

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate_loss(loss: Tensor, mask: Tensor, mode: str = "token-mean",
                   norm_constant: Optional[float] = None) -> Tensor:
    """Aggregate a (B, T) per-token loss over response tokens (`mask`, (B, T) bool) into a scalar."""
    if mode not in AGG_MODES:
        raise ValueError(f"loss aggregation mode must be one of {AGG_MODES}, got {mode!r}")
    if loss.shape != mask.shape:
        raise ValueError(f"aggregate_loss: loss {tuple(loss.shape)} and mask {tuple(mask.shape)} differ in shape")
    m = mask.to(loss.dtype)
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    masked = torch.where(mask, loss, zero)  # (B, T); where() so padded nan/inf never leaks
    if mode == "token-mean":
        return masked.sum() / m.sum().clamp_min(1)
    if mode == "token-sum":
        return masked.sum()
    seq_sum = masked.sum(dim=1)  # (B,)
    n_tok = m.sum(dim=1)  # (B,)
    n_seq = (n_tok > 0).sum().clamp_min(1)
    if mode == "seq-mean-token-mean":
        return (seq_sum / n_tok.clamp_min(1)).sum() / n_seq
    if mode == "seq-mean-token-sum":
        return seq_sum.sum() / n_seq
    c = float(mask.shape[-1] if norm_constant is None else norm_constant)
    if c <= 0:
        raise ValueError(f"aggregate_loss: norm_constant must be > 0, got {norm_constant}")
    return seq_sum.sum() / n_seq / c
