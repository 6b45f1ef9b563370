"""Hand-computed cases for every baseline rule (values worked out in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from cppo.rules import PolicyBatch, get_rule
from cppo.rules.testing import random_batch

F64 = torch.float64


def mk(ratio, adv, mask=None, mu=0.1, old_ratio=None):
    """A batch with μ(y_t) = `mu` everywhere and ρ_t = π/μ = `ratio` (π_old = μ unless `old_ratio`: π/π_old)."""
    ratio = torch.tensor(ratio, dtype=F64)
    if ratio.dim() == 1:
        ratio = ratio.unsqueeze(0)
    adv = torch.as_tensor(adv, dtype=F64).expand_as(ratio).clone()
    mu_lp = torch.full_like(ratio, math.log(mu))
    logp = (mu_lp + ratio.log()).requires_grad_(True)
    old = mu_lp.clone() if old_ratio is None else logp.detach() - torch.tensor(old_ratio, dtype=F64).reshape(ratio.shape).log()
    mask = torch.ones_like(ratio, dtype=torch.bool) if mask is None else torch.tensor(mask).reshape(ratio.shape)
    return PolicyBatch(logp=logp, old_logp=old, rollout_logp=mu_lp, advantages=adv, mask=mask)


def grad_of(out, batch):
    out.loss.sum().backward()
    return batch.logp.grad


def close(a, b):
    torch.testing.assert_close(torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ pg_is
def test_pg_is_hand():
    b = mk([[2.0, 0.5, 30.0]], [[1.0, -1.0, 1.0]])
    out = get_rule("pg_is")(b)
    close(out.loss, [[-2.0, 0.5, -30.0]])  # −Â ρ
    close(grad_of(out, b), [[-2.0, 0.5, -30.0]])  # d(−Â ρ)/dlog π = −Â ρ
    assert out.kept.all() and out.metrics["masked_frac"] == 0.0
    b = mk([[2.0, 0.5, 30.0]], [[1.0, -1.0, 1.0]])
    out = get_rule("pg_is", trunc_cap=5.0)(b)
    lp = b.logp.detach()
    close(out.loss, -torch.tensor([[2.0, -0.5, 5.0]], dtype=F64) * lp)  # −Â sg(min(ρ, 5)) log π
    close(grad_of(out, b), [[-2.0, 0.5, -5.0]])
    assert out.metrics["masked_frac"] == pytest.approx(1 / 3)  # the capped token
    assert out.metrics["ratio_max"] == pytest.approx(30.0)


# ------------------------------------------------------------------ ppo_clip
def test_ppo_clip_hand():
    # anchor old: r = π/π_old.  ε_low = 0.2, ε_high = 0.28
    r = [1.5, 1.1, 0.5, 1.5, 0.7, 4.0, 0.9]
    a = [1.0, 1.0, -1.0, -1.0, 1.0, -1.0, -2.0]
    # Â>0,r=1.5 > 1.28: clipped | Â>0,r=1.1: kept | Â<0,r=0.5 < 0.8: clipped | Â<0,r=1.5: kept (pessimistic)
    # Â>0,r=0.7: kept | Â<0,r=4: kept without dual clip, dropped with c = 3 | Â<0,r=0.9: kept
    b = mk([r], [a], old_ratio=[r])
    out = get_rule("ppo_clip", eps_low=0.2, eps_high=0.28)(b)
    assert out.kept.tolist() == [[False, True, False, True, True, True, True]]
    close(out.loss, [[0.0, -1.1, 0.0, 1.5, -0.7, 4.0, 1.8]])
    close(grad_of(out, b), [[0.0, -1.1, 0.0, 1.5, -0.7, 4.0, 1.8]])
    assert out.metrics["masked_frac"] == pytest.approx(2 / 7)
    assert out.metrics["masked_frac_pos"] == pytest.approx(1 / 3)
    assert out.metrics["masked_frac_neg"] == pytest.approx(1 / 4)
    b = mk([r], [a], old_ratio=[r])
    out = get_rule("ppo_clip", eps_low=0.2, eps_high=0.28, dual_clip=3.0)(b)
    assert out.kept.tolist() == [[False, True, False, True, True, False, True]]
    # anchor: with π_old = π (r = 1 everywhere) nothing is clipped; anchor rollout sees ρ = π/μ instead
    b = mk([r], [a], old_ratio=[[1.0] * 7])
    assert get_rule("ppo_clip")(b).kept.all()
    assert not get_rule("ppo_clip", anchor="rollout")(b).kept.all()


# ------------------------------------------------------------------ dppo
def test_dppo_binary_tv_hand():
    # μ = 0.3; π = [0.5, 0.5, 0.35, 0.1, 0.45]; Â = [1, -1, 1, -1, 1]; δ = 0.1
    # D = |π − μ| = [0.2, 0.2, 0.05, 0.2, 0.15]
    # t1: Â>0, ρ>1, D>δ → masked      t2: Â<0, ρ>1 → gate opens → kept
    # t3: D ≤ δ → kept                 t4: Â<0, ρ<1, D = 0.2 > δ → masked      t5: D = 0.15 > δ → masked
    pi = [0.5, 0.5, 0.35, 0.1, 0.45]
    adv = [[1.0, -1.0, 1.0, -1.0, 1.0]]
    b = mk([[p / 0.3 for p in pi]], adv, mu=0.3)
    out = get_rule("dppo", divergence="binary_tv", delta=0.1, trunc_cap=None)(b)
    assert out.kept.tolist() == [[False, True, True, False, False]]
    close(out.div, [[0.2, 0.2, 0.05, 0.2, 0.15]])
    close(grad_of(out, b), [[0.0, 0.5 / 0.3, -0.35 / 0.3, 0.0, 0.0]])  # −Â ρ on kept tokens
    # asymmetric: δ_high = 0.25 (π moved up) lets t1 and t5 through; δ_low = 0.05 (π moved down) still blocks t4
    b = mk([[p / 0.3 for p in pi]], adv, mu=0.3)
    out = get_rule("dppo", divergence="binary_tv", delta_low=0.05, delta_high=0.25, trunc_cap=1.6)(b)
    assert out.kept.tolist() == [[True, True, True, False, True]]
    # truncation cap C = 1.6: gradient −Â min(ρ, C) on kept tokens
    close(grad_of(out, b), [[-1.6, 1.6, -0.35 / 0.3, 0.0, -1.5]])


def test_dppo_binary_kl_hand():
    # μ = 0.5, π = 0.8: KL(Bern(0.5)‖Bern(0.8)) = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2) = 0.2231436
    b = mk([[1.6]], [[1.0]], mu=0.5)
    kl = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    out = get_rule("dppo", divergence="binary_kl", delta=0.22)(b)
    assert out.div.item() == pytest.approx(kl) and not out.kept.item()
    assert get_rule("dppo", divergence="binary_kl", delta=0.23)(b).kept.item()


# ------------------------------------------------------------------ trm
def test_trm_hand():
    # log ρ = [0.1, −0.2]: k3 = e^0.1 − 1 − 0.1 = 0.0051709, e^−0.2 − 1 + 0.2 = 0.0187308
    # max = 0.0187308, mean = 0.0119509
    b = mk([[math.exp(0.1), math.exp(-0.2)], [1.0, 1.0]], [[1.0], [1.0]])
    k3 = [math.exp(0.1) - 1 - 0.1, math.exp(-0.2) - 1 + 0.2]
    out = get_rule("trm_max", delta=0.018)(b)
    close(out.div[0], k3)
    assert out.kept.tolist() == [[False, False], [True, True]]
    assert out.metrics["seq_fully_masked_frac"] == 0.5
    assert get_rule("trm_max", delta=0.019)(b).kept.all()
    assert get_rule("trm_avg", delta=0.0120)(b).kept.all()
    out = get_rule("trm_avg", delta=0.0119)(b)
    assert out.kept.tolist() == [[False, False], [True, True]]
    close(grad_of(out, b), [[0.0, 0.0], [-1.0, -1.0]])
    # padding does not enter the mean: a padded third token with a huge ratio changes nothing
    b = mk([[math.exp(0.1), math.exp(-0.2), 50.0]], [[1.0]], mask=[[True, True, False]])
    assert get_rule("trm_avg", delta=0.0120)(b).kept.tolist() == [[True, True, False]]


def test_trm_topk_kl_uses_full_distribution_when_k_is_vocab():
    batch, full = random_batch(B=4, T=6, V=8, K=8, seed=0, dtype=F64, return_full=True)
    out = get_rule("trm_max", kl="topk", delta=1e9)(batch)
    exact = (full.logp_mu.exp() * (full.logp_mu - full.logp_pi)).sum(-1)
    close(out.div[batch.mask], exact[batch.mask])


# ------------------------------------------------------------------ cispo
def test_cispo_hand():
    b = mk([[2.0, 0.5, 1.1, 0.1]], [[1.0, -1.0, 2.0, 1.0]])
    out = get_rule("cispo", eps_high=0.2)(b)  # weights clip(ρ, −∞, 1.2) = [1.2, 0.5, 1.1, 0.1]
    lp = b.logp.detach()
    close(out.loss, -torch.tensor([[1.2, -0.5, 2.2, 0.1]], dtype=F64) * lp)
    close(grad_of(out, b), [[-1.2, 0.5, -2.2, -0.1]])
    assert out.kept.all() and out.metrics["masked_frac"] == pytest.approx(1 / 4)
    b = mk([[2.0, 0.5, 1.1, 0.1]], [[1.0, -1.0, 2.0, 1.0]])
    out = get_rule("cispo", eps_low=0.3, eps_high=0.2)(b)  # floor 0.7: [1.2, 0.7, 1.1, 0.7]
    close(grad_of(out, b), [[-1.2, 0.7, -2.2, -0.7]])
    assert out.metrics["masked_frac"] == pytest.approx(3 / 4)


# ------------------------------------------------------------------ gspo
def test_gspo_hand():
    # row 0: log r = [0.0003, 0.0001, −0.0001] → log s = 0.0001 → s = e^0.0001 inside [1 − 3e-4, 1 + 4e-4]: kept
    # row 1: log r = [0.002, 0.0] → s = e^0.001 > 1.0004 with Â > 0: clipped (whole sequence)
    # row 2: same ratios with Â < 0: kept (pessimistic side)
    r = torch.tensor([[0.0003, 0.0001, -0.0001], [0.002, 0.0, 0.0], [0.002, 0.0, 0.0]], dtype=F64).exp()
    mask = [[True, True, True], [True, True, False], [True, True, False]]
    b = mk(r.tolist(), [[1.0], [1.0], [-1.0]], mask=mask, old_ratio=r.tolist())
    out = get_rule("gspo")(b)
    assert out.kept.tolist() == [[True, True, True], [False, False, False], [True, True, False]]
    s0, s2 = math.exp(0.0001), math.exp(0.001)
    close(out.loss[0], [-s0] * 3)
    g = grad_of(out, b)
    close(g, [[-s0] * 3, [0.0] * 3, [s2, s2, 0.0]])  # ∂/∂log π_t of −Â s_{i,t} is −Â s_i


# ------------------------------------------------------------------ minpro
def test_minpro_prefix_min_excludes_current_token_and_padding():
    from baselines.minpro import log_prefix_min

    # ρ = [2, pad(0.01), 0.5, 3, 0.8] → m = [1, ·, 2, 0.5, 0.5]; w = m ρ = [2, ·, 1, 1.5, 0.4]
    log_r = torch.tensor([[2.0, 0.01, 0.5, 3.0, 0.8]], dtype=F64).log()
    mask = torch.tensor([[True, False, True, True, True]])
    m = log_prefix_min(log_r, mask).exp()
    close(m[0, [0, 2, 3, 4]], [1.0, 2.0, 0.5, 0.5])
    # left padding: the first response token still has m = 1
    log_r2 = torch.tensor([[0.01, 0.01, 3.0, 2.0]], dtype=F64).log()
    m2 = log_prefix_min(log_r2, torch.tensor([[False, False, True, True]])).exp()
    close(m2[0, 2:], [1.0, 3.0])


def test_minpro_soft_and_hard_hand():
    ratio = [[2.0, 0.01, 0.5, 3.0, 0.8]]
    mask = [[True, False, True, True, True]]
    # w = [2, ·, 1, 1.5, 0.4]; ε = 0.2 / 0.28 → clip(w) = [1.28, ·, 1, 1.28, 0.8]
    b = mk(ratio, [[1.0]], mask=mask)
    out = get_rule("minpro", clip="soft")(b)
    assert out.kept.tolist() == mask
    close(grad_of(out, b), [[-1.28, 0.0, -1.0, -1.28, -0.8]])  # −Â sg(clip(w)) ∇log π
    assert out.metrics["masked_frac"] == pytest.approx(3 / 4)
    # hard, Â = +1: dropped where w > 1.28 → kept [F, ·, T, F, T]; gradient −Â w_t (through ρ_t only)
    b = mk(ratio, [[1.0]], mask=mask)
    out = get_rule("minpro", clip="hard")(b)
    assert out.kept.tolist() == [[False, False, True, False, True]]
    close(grad_of(out, b), [[0.0, 0.0, -1.0, 0.0, -0.4]])
    close(out.loss, [[0.0, 0.0, -1.0, 0.0, -0.4]])
    # hard, Â = −1: dropped where w < 0.8 → only the last token
    b = mk(ratio, [[-1.0]], mask=mask)
    out = get_rule("minpro", clip="hard")(b)
    assert out.kept.tolist() == [[True, False, True, True, False]]
    close(grad_of(out, b), [[2.0, 0.0, 1.0, 1.5, 0.0]])


def test_minpro_hard_equals_ppo_clip_when_prefix_min_is_one():
    g = torch.Generator().manual_seed(0)
    B, T = 8, 12
    ratio = 1.0 + 0.6 * torch.rand(B, T, generator=g, dtype=F64)  # every ρ ≥ 1 ...
    ratio[:, 0] = 1.0  # ... and the first exactly 1, so every prefix minimum is 1
    adv = torch.randn(B, 1, generator=g, dtype=F64)
    for anchor in ("rollout", "old"):
        b1 = mk(ratio.tolist(), adv, old_ratio=ratio.tolist())
        b2 = mk(ratio.tolist(), adv, old_ratio=ratio.tolist())
        m = get_rule("minpro", clip="hard", eps_low=0.2, eps_high=0.28, anchor=anchor)(b1)
        p = get_rule("ppo_clip", eps_low=0.2, eps_high=0.28, anchor=anchor)(b2)
        assert torch.equal(m.kept, p.kept) and (~m.kept).any() and m.kept.any()
        close(m.loss, p.loss)
        close(grad_of(m, b1), grad_of(p, b2))
    # and it differs once a ratio below 1 lowers the prefix minimum
    ratio[:, 3] = 0.5
    b1, b2 = mk(ratio.tolist(), adv, old_ratio=ratio.tolist()), mk(ratio.tolist(), adv, old_ratio=ratio.tolist())
    m = get_rule("minpro", clip="hard", anchor="old")(b1)
    p = get_rule("ppo_clip", eps_low=0.2, eps_high=0.28, anchor="old")(b2)
    assert not torch.allclose(m.loss, p.loss)
