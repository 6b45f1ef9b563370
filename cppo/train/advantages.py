"""GRPO group advantages.

For the n responses of one prompt with rewards R_1..R_n:
    Â_i = (R_i − mean(R)) / (std(R) + eps)      (std_norm=True, GRPO, Shao et al. 2024)
    Â_i = R_i − mean(R)                         (std_norm=False, Dr. GRPO, Liu et al. 2025)
The same Â_i is used for every token of response i. std is the population std (ddof = 0)
(choice; verl's GRPO uses the unbiased std, which only rescales by sqrt(n/(n−1)) for a fixed n).

A group whose rewards are all equal carries no learning signal (Â = 0 for all its members); the
paper skips such prompts, and so does the trainer: ``keep`` marks the sequences of groups with
non-zero variance.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, n: int, std_norm: bool = True, eps: float = 1e-6):
    """Per-sequence advantages of contiguous groups of size ``n``.

    Args:
        rewards: (B,) rewards with B = G·n, group g occupying rows g·n .. g·n+n−1.
        n: group size.
        std_norm: divide by the group std.
        eps: added to the std.

    Returns:
        (adv (B,), keep (B,) bool: the sequence's group has non-zero reward variance).
    """
    if rewards.dim() != 1 or rewards.numel() % n:
        raise ValueError(f"group_advantages: rewards must be (G*n,) with n={n}, got shape {tuple(rewards.shape)}")
    r = rewards.float().view(-1, n)  # (G, n)
    centred = r - r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, unbiased=False, keepdim=True)  # (G, 1)
    adv = centred / (std + eps) if std_norm else centred
    keep = (std > 0).expand_as(r)  # (G, n)
    return adv.reshape(-1), keep.reshape(-1)
