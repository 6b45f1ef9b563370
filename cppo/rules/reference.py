"""CPPO written as the paper's Algorithm 1: one Python loop over rows, one over response positions.

What: :func:`reference_cppo` is the readable per-position loop that the vectorised rule
(:func:`cppo.rules.cppo.cppo`, cumulative sums shifted by one step) must equal, token for token.
tests/test_rules_cppo.py checks the two against each other (kept mask exactly, gradient to 1e-10)
over every option: divergences, anchors, P90 calibration, horizons, soft gate, ablations, padding.

Why in the library and not in the tests: a reader of ``cppo.py`` finds here, next to it, what its
tensor code computes, one scalar at a time. It is slow (pure Python, float64, numpy) and is not
registered as a rule; ``shuffled_weights`` is not covered (its permutation is defined by the
vectorised code).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cppo.rules.cppo import CPPOParams
from cppo.rules.divergence import anchor_logp, token_divergence
from cppo.rules.types import PolicyBatch


def reference_cppo(batch: PolicyBatch, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Algorithm 1 as loops over rows and positions (float64, numpy); returns (kept, weight, loss_grad).

    ``p`` holds ``cppo`` parameters (as for ``get_rule("cppo", **p)``). All three outputs are (B, T):
    ``kept`` bool, ``weight`` the gradient weight g_t (1/0 in hard mode, min(1, 1/x_t) in soft mode),
    and ``loss_grad[b, t]`` the gradient of the summed per-token loss with respect to log π_t.
    """
    q = CPPOParams(**p)
    D = token_divergence(batch, q.divergence, q.anchor).double().numpy()  # (B, T), 0 on padding
    mask = batch.mask.numpy()  # (B, T) bool
    lp = batch.logp.detach().double().numpy()  # (B, T) log π
    ref = anchor_logp(batch, q.anchor).double().numpy()  # (B, T) log μ or log π_old
    A = batch.advantages.double().numpy()  # (B, T)
    B, T = mask.shape
    kept = np.zeros((B, T), dtype=bool)
    weight = np.zeros((B, T))
    grad = np.zeros((B, T))
    for b in range(B):
        ts = [t for t in range(T) if mask[b, t]]  # response positions: padding is skipped, not counted
        L = len(ts)
        if L == 0:
            continue
        H = L if q.horizon == "response" else (q.max_horizon or T)
        d_b = q.delta_b
        if q.delta_b_mode == "p90":
            d_b = min(2 * q.delta_b, max(q.delta_b, float(np.percentile([D[b, t] for t in ts], 90))))
        S = W = 0.0  # S_{t−1}, W_{t−1}
        for i, t in enumerate(ts):  # i = t − 1 in the paper's 1-based notation
            w = 1.0 if q.ablation == "no_position_weight" else 1 - (1 - q.w_min) * i / max(H - 1, 1)
            Z = w * D[b, t]
            c = q.delta if q.ablation == "no_prefix_budget" else min(q.delta, q.delta + d_b * W - S)
            rho = math.exp(lp[b, t] - ref[b, t])
            gate = A[b, t] * (rho - 1) <= 0
            ok = gate or Z <= c
            if q.mask_mode == "hard":
                g = 1.0 if ok else 0.0
            else:
                x = Z / q.delta  # the violation x_t
                if q.ablation != "no_prefix_budget":
                    x = max(x, (S + Z) / (q.delta + d_b * W))
                g = 1.0 if ok else min(1.0, 1.0 / x)
            kept[b, t] = g > 0
            weight[b, t] = g
            cap = rho if q.trunc_cap is None else min(rho, q.trunc_cap)
            grad[b, t] = -g * A[b, t] * cap  # d/dlog π of −g Â ρ  or  −g Â sg(min(ρ, C)) log π
            S += Z
            W += w
    return kept, weight, grad
