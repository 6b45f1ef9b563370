"""CPPO against the literal per-position loop of the paper's Algorithm 1 (cppo.rules.reference), plus its
reductions and options."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cppo.rules import PolicyBatch, get_rule
from cppo.rules.cppo import CPPOParams, position_weights
from cppo.rules.reference import reference_cppo
from cppo.rules.testing import random_batch

F64 = torch.float64


SETTINGS = [
    dict(divergence="binary_tv", delta=0.05, delta_b=0.01, delta_b_mode="fixed"),
    dict(divergence="binary_tv", delta=0.05, delta_b=0.01, delta_b_mode="p90", w_min=0.5),
    dict(divergence="topk_tv", delta=0.15, delta_b=0.02),
    dict(divergence="topk_tv", delta=0.1, delta_b=0.02, horizon="max", max_horizon=20),
    dict(divergence="binary_kl", delta=0.02, delta_b=0.002, anchor="old", trunc_cap=None),
    dict(divergence="topk_kl", delta=0.1, delta_b=0.01, mask_mode="soft"),
    dict(divergence="binary_tv", delta=0.05, delta_b=0.005, delta_b_mode="fixed", mask_mode="soft", trunc_cap=2.0),
    dict(divergence="topk_tv", delta=0.1, ablation="no_position_weight"),
    dict(divergence="topk_tv", delta=0.1, ablation="no_prefix_budget", mask_mode="soft"),
]


@pytest.mark.parametrize("params", SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
@pytest.mark.parametrize("seed,padding", [(0, "right"), (1, "left"), (2, "right")])
def test_cppo_matches_per_position_loop(params, seed, padding):
    batch = random_batch(B=10, T=17, seed=seed, padding=padding, dtype=torch.float64, drift=0.4)
    out = get_rule("cppo", **params)(batch)
    kept, _, grad = reference_cppo(batch, params)
    assert np.array_equal(out.kept.numpy(), kept)
    out.loss.sum().backward()
    np.testing.assert_allclose(batch.logp.grad.numpy(), grad, rtol=1e-10, atol=1e-12)
    # the data must exercise both outcomes
    assert kept[batch.mask.numpy()].any() and (~kept[batch.mask.numpy()]).any() or params.get("mask_mode") == "soft"


def test_cppo_t1_and_degenerate_rows():
    # T = 1 (w_1 = 1), an all-padding row, a single-token row, a zero-advantage row
    for T in (1, 3):
        batch = random_batch(B=6, T=T, seed=7, dtype=torch.float64, drift=1.5)
        batch.mask[0] = False  # empty row
        batch.mask[1, 1:] = False  # one token
        for params in SETTINGS:
            b = batch.map(lambda t: t.detach().clone())
            b.logp.requires_grad_(True)
            out = get_rule("cppo", **params)(b)
            kept, _, grad = reference_cppo(b, params)
            assert np.array_equal(out.kept.numpy(), kept), params
            out.loss.sum().backward()
            np.testing.assert_allclose(b.logp.grad.numpy(), grad, rtol=1e-10, atol=1e-12)
            assert not out.kept[0].any() and (out.loss[0] == 0).all()
            assert all(math.isfinite(v) for v in out.metrics.values())


def test_cppo_hand_computed_example():
    # one response of 3 tokens, binary TV, δ = 0.1, fixed δ_b = 0.02, w_min = 0.8, Â = 1, μ(y_t) = 0.3
    # π(y_t) = [0.35, 0.4, 0.4] → D = [0.05, 0.1, 0.1], w = [1, 0.9, 0.8], Z = [0.05, 0.09, 0.08]
    # c_1 = 0.1; c_2 = min(0.1, 0.1 + 0.02·1 − 0.05) = 0.07 < 0.09; c_3 = min(0.1, 0.1 + 0.02·1.9 − 0.14) < 0
    # all ρ > 1 and Â > 0, so the gate never opens: kept = [1, 0, 0], both rejections are by the prefix
    pi = torch.tensor([[0.35, 0.4, 0.4]], dtype=torch.float64).log().requires_grad_(True)
    mu = torch.full((1, 3), 0.3, dtype=torch.float64).log()
    batch = PolicyBatch(logp=pi, old_logp=mu, rollout_logp=mu, advantages=torch.ones(1, 3, dtype=torch.float64),
                        mask=torch.ones(1, 3, dtype=torch.bool))
    rule = get_rule("cppo", divergence="binary_tv", delta=0.1, delta_b=0.02, delta_b_mode="fixed", w_min=0.8)
    out = rule(batch)
    assert out.kept.tolist() == [[True, False, False]]
    torch.testing.assert_close(out.div, torch.tensor([[0.05, 0.1, 0.1]], dtype=torch.float64))
    out.loss.sum().backward()
    torch.testing.assert_close(pi.grad, torch.tensor([[-0.35 / 0.3, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(out.loss, torch.tensor([[-(0.35 / 0.3) * math.log(0.35), 0, 0]], dtype=torch.float64))
    assert out.metrics["prefix_reject_frac"] == pytest.approx(2 / 3)
    assert out.metrics["token_reject_frac"] == 0.0
    assert out.metrics["masked_frac"] == pytest.approx(2 / 3)
    # without the prefix budget only the token test remains: every Z_t ≤ δ, so all are kept
    assert get_rule("cppo", divergence="binary_tv", delta=0.1, ablation="no_prefix_budget")(batch).kept.all()
    # with Â < 0 the gate (Â(ρ − 1) ≤ 0 fails again since ρ > 1 ... ) — flip π below μ instead: gate opens
    below = PolicyBatch(logp=torch.tensor([[0.2, 0.1, 0.05]], dtype=torch.float64).log(), old_logp=mu,
                        rollout_logp=mu, advantages=torch.ones(1, 3, dtype=torch.float64),
                        mask=torch.ones(1, 3, dtype=torch.bool))
    assert rule(below).kept.all()  # ρ < 1 with Â > 0 moves π back toward μ: never blocked
    # soft gate: x_2 = max(0.09/0.1, 0.14/0.12) = 7/6 → weight 6/7;  x_3 = max(0.8, 0.22/0.138)
    soft = get_rule("cppo", divergence="binary_tv", delta=0.1, delta_b=0.02, delta_b_mode="fixed", mask_mode="soft")
    pi2 = pi.detach().clone().requires_grad_(True)
    out = soft(PolicyBatch(logp=pi2, old_logp=mu, rollout_logp=mu, advantages=batch.advantages, mask=batch.mask))
    out.loss.sum().backward()
    w = torch.tensor([1.0, 0.12 / 0.14, 0.138 / 0.22], dtype=torch.float64)
    torch.testing.assert_close(pi2.grad[0], -w * torch.tensor([0.35, 0.4, 0.4], dtype=torch.float64) / 0.3)
    assert out.kept.all() and out.metrics["masked_frac"] == pytest.approx(2 / 3)


def test_cppo_p90_calibration_by_hand():
    # D = [0.0, 0.1, ..., 0.9] (binary TV) → P90 (linear) = 0.81; clamp to [δ_b, 2δ_b]
    from cppo.rules.cppo import prefix_delta_b

    div = torch.arange(10, dtype=torch.float64).unsqueeze(0) / 10
    mask = torch.ones(1, 10, dtype=torch.bool)
    assert prefix_delta_b(div, mask, CPPOParams(delta_b=0.5)).item() == pytest.approx(0.81)
    assert prefix_delta_b(div, mask, CPPOParams(delta_b=0.02)).item() == pytest.approx(0.04)
    assert prefix_delta_b(div, mask, CPPOParams(delta_b=1.0)).item() == pytest.approx(1.0)
    assert prefix_delta_b(div, mask, CPPOParams(delta_b=0.5, delta_b_mode="fixed")) == 0.5
    # padding is excluded from the percentile (D is 0 there, as token_divergence returns it)
    mask[0, 5:] = False
    div[0, 5:] = 0.0
    assert prefix_delta_b(div, mask, CPPOParams(delta_b=0.3)).item() == pytest.approx(0.36)


def test_cppo_p90_matches_numpy_in_every_regime():
    from cppo.rules.cppo import prefix_delta_b

    g = torch.Generator().manual_seed(0)
    div = torch.rand(40, 33, generator=g, dtype=F64) ** 3  # skewed, many small values
    mask = torch.arange(33).unsqueeze(0) < torch.randint(0, 34, (40, 1), generator=g)
    div = div * mask
    for delta_b in (0.001, 0.05, 0.2, 0.4, 2.0):  # all rows above, mixed, all below the band
        got = prefix_delta_b(div, mask, CPPOParams(delta_b=delta_b))
        for r in range(40):
            vals = div[r][mask[r]].numpy()
            if len(vals) == 0:
                continue
            want = min(2 * delta_b, max(delta_b, float(np.percentile(vals, 90))))
            assert got[r, 0].item() == pytest.approx(want, rel=1e-12, abs=1e-15), (delta_b, r)


def test_cppo_equals_dppo_with_flat_weights_and_huge_budget():
    for seed, div, cap in itertools.product((0, 1), ("binary_tv", "topk_tv", "topk_kl"), (20.0, None)):
        batch = random_batch(B=8, T=15, seed=seed, dtype=torch.float64)
        c = get_rule("cppo", w_min=1.0, delta_b=1e6, delta=0.1, divergence=div, trunc_cap=cap)(batch)
        d = get_rule("dppo", delta=0.1, divergence=div, trunc_cap=cap)(batch)
        assert torch.equal(c.kept, d.kept)
        assert (~c.kept & batch.mask).any()
        torch.testing.assert_close(c.loss, d.loss, rtol=0, atol=0)
        assert c.metrics["prefix_reject_frac"] == 0.0
        assert c.metrics["token_reject_frac"] == pytest.approx(d.metrics["masked_frac"])


def test_dppo_huge_delta_equals_pg_is():
    for seed, cap in itertools.product((0, 1), (20.0, None, 1.5)):
        batch = random_batch(B=8, T=15, seed=seed, dtype=torch.float64)
        d = get_rule("dppo", delta=1e9, trunc_cap=cap)(batch)
        p = get_rule("pg_is", trunc_cap=cap)(batch)
        assert torch.equal(d.kept, batch.mask)
        torch.testing.assert_close(d.loss, p.loss, rtol=0, atol=0)


def test_position_weights_horizons_and_shuffle():
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    w = position_weights(mask, CPPOParams(w_min=0.6))
    torch.testing.assert_close(w[0], torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6, 0.0]))
    torch.testing.assert_close(w[1], torch.tensor([0.0, 0.0, 1.0, 1 - 0.4 / 3, 1 - 0.8 / 3, 0.6]))
    torch.testing.assert_close(w[2], torch.tensor([1.0, 0, 0, 0, 0, 0]))
    wm = position_weights(mask, CPPOParams(w_min=0.6, horizon="max"))  # T = 6: w_t = 1 − 0.08 (t − 1)
    torch.testing.assert_close(wm[0], torch.tensor([1.0, 0.92, 0.84, 0.76, 0.68, 0.0]))
    wm = position_weights(mask, CPPOParams(w_min=0.6, horizon="max", max_horizon=11))
    torch.testing.assert_close(wm[1, 2:], torch.tensor([1.0, 0.96, 0.92, 0.88]))
    p = CPPOParams(w_min=0.6, ablation="shuffled_weights", shuffle_seed=3)
    big = torch.ones(64, 30, dtype=torch.bool)
    big[::2, 20:] = False
    ws1, ws2 = position_weights(big, p), position_weights(big, p)
    assert torch.equal(ws1, ws2), "shuffled weights must be deterministic for a seed"
    plain = position_weights(big, CPPOParams(w_min=0.6))
    assert not torch.equal(ws1, plain)
    assert torch.equal((ws1 == 0), ~big)
    for r in range(64):  # same multiset of weights per row
        torch.testing.assert_close(ws1[r].sort().values, plain[r].sort().values)
    other = position_weights(big, CPPOParams(w_min=0.6, ablation="shuffled_weights", shuffle_seed=4))
    assert not torch.equal(ws1, other)


def test_cppo_shuffled_weights_rule_runs_and_differs():
    batch = random_batch(B=16, T=30, seed=3, dtype=torch.float64)
    a = get_rule("cppo", divergence="topk_tv", delta=0.1, ablation="shuffled_weights")(batch)
    b = get_rule("cppo", divergence="topk_tv", delta=0.1, ablation="shuffled_weights")(batch)
    c = get_rule("cppo", divergence="topk_tv", delta=0.1)(batch)
    assert torch.equal(a.kept, b.kept) and not torch.equal(a.kept, c.kept)


def test_cppo_rejection_metrics_partition_masked_frac():
    for seed in range(3):
        batch = random_batch(B=12, T=20, seed=seed, drift=0.8)
        out = get_rule("cppo", delta=0.1)(batch)
        m = out.metrics
        assert m["prefix_reject_frac"] > 0 and m["token_reject_frac"] > 0
        assert m["prefix_reject_frac"] + m["token_reject_frac"] == pytest.approx(m["masked_frac"])


def test_cppo_needs_topk_and_clear_errors():
    assert get_rule("cppo").needs_topk and not get_rule("cppo", divergence="binary_tv").needs_topk
    batch = random_batch(K=None)
    with pytest.raises(ValueError, match="top-K"):
        get_rule("cppo")(batch)
    for bad in (dict(w_min=0.0), dict(delta=-1), dict(horizon="min"), dict(ablation="nope"), dict(trunc_cap=0)):
        with pytest.raises(ValueError):
            get_rule("cppo", **bad)
