"""Rollout correction (cppo/rules/rollout_correction.py): hand-computed weights, rejections and diagnostics,
the degenerate settings (μ = π_old; an unreachable threshold), padding, and option validation.
Parity with verl's own implementation is in tests/verl_parity/check.py (rollout_corr/*)."""

from __future__ import annotations

import math

import pytest
import torch

from cppo.rules.rollout_correction import (CORRECTION_METRICS, is_weights, parse, reject_mask,
                                           rollout_correction)

F64 = torch.float64


def batch(ratios, mask=None):
    """log π_old, log μ, mask for rows of π_old/μ `ratios` (μ = 0.2 everywhere)."""
    w = torch.tensor(ratios, dtype=F64)
    mu = torch.full_like(w, math.log(0.2))
    m = torch.ones_like(w, dtype=torch.bool) if mask is None else torch.tensor(mask)
    return mu + w.log(), mu, m


def close(a, b):
    torch.testing.assert_close(torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64), rtol=1e-9, atol=1e-12)


def test_token_tis_and_icepop_by_hand():
    old, mu, m = batch([[0.5, 3.0, 1.0]])
    out = rollout_correction(old, mu, m, parse("token", 2.0))
    close(out.weights, [[0.5, 2.0, 1.0]])  # min(w, 2)
    assert out.mask.all() and out.metrics["rejected_frac"] == 0.0
    assert out.metrics["is_clipped_frac"] == pytest.approx(1 / 3)
    assert out.metrics["is_mean"] == pytest.approx(3.5 / 3)
    assert out.metrics["is_ess"] == pytest.approx(3.5 ** 2 / (3 * (0.25 + 4 + 1)))
    out = rollout_correction(old, mu, m, parse("token", "0.6_2.5"))  # IcePop: zero outside [0.6, 2.5]
    close(out.weights, [[0.0, 0.0, 1.0]])
    assert out.metrics["is_clipped_frac"] == pytest.approx(2 / 3)
    assert out.metrics["is_ess"] == pytest.approx(1 / 3)  # one token of three carries all the weight


def test_sequence_weights_are_the_truncated_product_per_row():
    old, mu, m = batch([[0.5, 3.0, 1.0], [1.2, 1.5, 7.0]], mask=[[True, True, True], [True, True, False]])
    w, raw = is_weights(old - mu, m, "sequence", 2.0)
    close(raw, [[1.5, 1.5, 1.5], [1.8, 1.8, 0.0]])  # 0.5·3·1; 1.2·1.5 (the padded 7 is ignored)
    close(w, [[1.5, 1.5, 1.5], [1.8, 1.8, 0.0]])
    w, _ = is_weights(old - mu, m, "sequence", 1.6)
    close(w, [[1.5, 1.5, 1.5], [1.6, 1.6, 0.0]])
    w, _ = is_weights(old - mu, m, "sequence", 1.6, batch_normalize=True)  # mean over sequences: 1.55
    close(w, torch.tensor([[1.5, 1.5, 1.5], [1.6, 1.6, 0.0]], dtype=F64) / 1.55)
    w, _ = is_weights(old - mu, m, "token", 2.0, batch_normalize=True)  # token mean (0.5+2+1+1.2+1.5)/5
    close(w, torch.tensor([[0.5, 2.0, 1.0], [1.2, 1.5, 0.0]], dtype=F64) / 1.24)


def test_rejection_by_hand():
    # log r = log [0.5, 3, 1]: k1 = [0.693, −1.099, 0], k2 = [0.240, 0.603, 0], k3 = [0.193, 0.901, 0]
    old, mu, m = batch([[0.5, 3.0, 1.0], [1.1, 1.0, 1.0]])
    keep = reject_mask(old - mu, m, parse(rollout_rs="token_k3", rollout_rs_threshold=0.5).reject)
    assert keep.tolist() == [[True, False, True], [True, True, True]]
    keep = reject_mask(old - mu, m, parse(rollout_rs="token_k2", rollout_rs_threshold=0.2).reject)
    assert keep.tolist() == [[False, False, True], [True, True, True]]
    # k1 ratio band on μ/π_old = exp(k1): "0.9_4" keeps μ/π_old in [0.9, 4]: π_old/μ in [0.25, 1.11]
    keep = reject_mask(old - mu, m, parse(rollout_rs="token_k1", rollout_rs_threshold="0.9_4").reject)
    assert keep.tolist() == [[True, False, True], [True, True, True]]
    # sequence level: seq_mean_k3 of row 0 = (0.193 + 0.901)/3 = 0.365, of row 1 = 0.0047/3
    keep = reject_mask(old - mu, m, parse(rollout_rs="seq_mean_k3", rollout_rs_threshold=0.3).reject)
    assert keep.tolist() == [[False] * 3, [True] * 3]
    keep = reject_mask(old - mu, m, parse(rollout_rs="seq_max_k2", rollout_rs_threshold=0.5).reject)
    assert keep.tolist() == [[False] * 3, [True] * 3]
    # seq_sum_k1 = −Σ log r: row 0 −log 1.5, row 1 −log 1.1; a single number U means the band [1/U, U]
    keep = reject_mask(old - mu, m, parse(rollout_rs="seq_sum_k1", rollout_rs_threshold=1.2).reject)
    assert keep.tolist() == [[False] * 3, [True] * 3]
    # two options, both must pass; metrics
    out = rollout_correction(old, mu, m, parse(rollout_rs="token_k3,seq_sum_k1", rollout_rs_threshold="0.5,1.6"))
    assert out.mask.tolist() == [[True, False, True], [True, True, True]]
    assert out.metrics["rejected_frac"] == pytest.approx(1 / 6) and out.metrics["rejected_seq_frac"] == 0.5
    assert out.weights is None and out.metrics["is_ess"] == 1.0


def test_on_policy_changes_nothing_and_an_unreachable_threshold_keeps_raw_weights():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(5, 7, generator=g, dtype=F64) * 3
    m = torch.rand(5, 7, generator=g) < 0.8
    c = parse("sequence", 2.0, True, "token_k1,seq_mean_k3,seq_max_k2", "0.99_1.01,1e-9,1e-9")
    out = rollout_correction(old, old.clone(), m, c)  # μ = π_old: w = 1, every statistic at its ideal
    assert torch.equal(out.mask, m) and out.metrics["rejected_frac"] == 0.0
    close(out.weights, m.to(F64))
    assert out.metrics["is_ess"] == pytest.approx(1.0) and out.metrics["is_clipped_frac"] == 0.0
    mu = old + 0.3 * torch.randn(5, 7, generator=g, dtype=F64)
    w, raw = is_weights(old - mu, m, "token", 1e9)
    close(w, ((old - mu).exp() * m))


def test_padding_is_ignored_whatever_it_holds():
    old, mu, m = batch([[0.5, 3.0, 1.0, 1.0]], mask=[[True, True, True, False]])
    c = parse("token", 2.0, False, "seq_sum_k2,token_k3", "10,10")
    a = rollout_correction(old, mu, m, c)
    old2 = old.clone()
    old2[0, 3] = float("nan")
    b = rollout_correction(old2, mu, m, c)
    close(a.weights, b.weights)
    assert torch.equal(a.mask, b.mask) and a.metrics == b.metrics and b.weights[0, 3] == 0 and not b.mask[0, 3]
    assert set(a.metrics) == set(CORRECTION_METRICS)


@pytest.mark.parametrize("kw,match", [
    ({"rollout_is": "tokens"}, "rollout_is must be one of"),
    ({"rollout_is": "token", "rollout_is_threshold": "5_0.5"}, "lower bound above"),
    ({"rollout_is": "token", "rollout_is_threshold": -1}, "positive"),
    ({"rollout_rs": "seq_max_k1", "rollout_rs_threshold": 1.0}, "unknown option"),
    ({"rollout_rs": "token_k3"}, "must be given"),
    ({"rollout_rs": "token_k3", "rollout_rs_threshold": "0.1_2"}, "one upper bound"),
    ({"rollout_rs": "token_k3,token_k2", "rollout_rs_threshold": "1,2,3"}, "3 values for 2"),
])
def test_invalid_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        parse(**kw)
