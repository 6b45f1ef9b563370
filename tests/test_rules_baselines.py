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


# ------------------------------------------------------------------ gpg
def test_gpg_hand_and_blind_to_the_ratio():
    for ratio in ([[2.0, 0.5, 30.0]], [[1.0, 1.0, 1.0]]):
        b = mk(ratio, [[1.0, -1.0, 2.0]], old_ratio=ratio)
        out = get_rule("gpg")(b)
        close(out.loss, -torch.tensor([[1.0, -1.0, 2.0]], dtype=F64) * b.logp.detach())  # −Â log π
        close(grad_of(out, b), [[-1.0, 1.0, -2.0]])  # whatever π/μ and π/π_old are
        assert out.kept.all() and out.metrics["masked_frac"] == 0.0


# ------------------------------------------------------------------ dro
def test_dro_hand():
    # anchor old, β = 0.5: ℓ = log π − log π_old = [0.4, −0.2, 1.0, 0.6], Â = [1, 1, 0, 0.2]
    # ∂loss/∂log π = −Â + β ℓ = [−0.8, −1.1, 0.5, 0.1]; past ℓ = Â/β only token 3 (Âℓ > 0, β|ℓ| = 0.3 ≥ 0.2)
    ell = torch.tensor([[0.4, -0.2, 1.0, 0.6]], dtype=F64)
    adv = [[1.0, 1.0, 0.0, 0.2]]
    b = mk([[1.0] * 4], adv, old_ratio=ell.exp().tolist())
    out = get_rule("dro", beta=0.5)(b)
    lp = b.logp.detach()
    close(out.loss, -torch.tensor(adv, dtype=F64) * lp + 0.25 * ell.square())
    close(grad_of(out, b), [[-0.8, -1.1, 0.5, 0.1]])
    assert out.kept.all() and out.limited.tolist() == [[False, False, False, True]]
    assert out.metrics["masked_frac"] == pytest.approx(1 / 3)  # of the 3 tokens with Â ≠ 0


def test_dro_small_beta_is_gpg():
    b1, b2 = random_batch(seed=11, dtype=F64), random_batch(seed=11, dtype=F64)
    close(grad_of(get_rule("dro", beta=1e-12)(b1), b1), grad_of(get_rule("gpg")(b2), b2))


# ------------------------------------------------------------------ sapo
def test_sapo_hand():
    # anchor old; τ_pos = 1, τ_neg = 1.05. Token 0: r = 1, Â = 1 → loss −4σ(0) = −2, gradient −1.
    # Token 1: r = 2, Â = 1 → loss −4σ(1), gradient −r·4σ(1)(1 − σ(1)).
    # Token 2: r = 0.5, Â = −1 → τ = 1.05: loss (4/1.05)σ(−0.525), gradient r·4σ(1 − σ) at −0.525.
    def sig(x):
        return 1 / (1 + math.exp(-x))

    r = [[1.0, 2.0, 0.5]]
    b = mk(r, [[1.0, 1.0, -1.0]], old_ratio=r)
    out = get_rule("sapo")(b)
    s1, s2 = sig(1.0), sig(1.05 * -0.5)
    close(out.loss, [[-2.0, -4 * s1, 4 / 1.05 * s2]])
    close(grad_of(out, b), [[-1.0, -2 * 4 * s1 * (1 - s1), 0.5 * 4 * s2 * (1 - s2)]])
    assert out.kept.all() and out.metrics["masked_frac"] == 0.0  # g = 0.79 and 0.94: neither halved
    b = mk([[4.0]], [[1.0]], old_ratio=[[4.0]])  # g = 4σ(3)(1 − σ(3)) = 0.18 < ½: limited
    assert get_rule("sapo")(b).metrics["masked_frac"] == 1.0


def test_sapo_small_temperature_is_the_importance_weighted_gradient():
    # (4/τ)σ(τ(r − 1)) = 2/τ + (r − 1) + O(τ²): its gradient tends to that of −Â r (pg_is, anchor old)
    b1, b2 = random_batch(seed=12, dtype=F64), random_batch(seed=12, dtype=F64)
    g_sapo = grad_of(get_rule("sapo", tau_pos=1e-4, tau_neg=1e-4)(b1), b1)
    g_pg = grad_of(get_rule("pg_is", anchor="old")(b2), b2)
    torch.testing.assert_close(g_sapo, g_pg, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ geo_mean (GMPO)
def test_geo_mean_hand():
    from cppo.rules import aggregate_loss

    # one sequence, Â = 1, ε = 0.2 (log space): ℓ = [0.1, 0.3] → token 1 clipped, ℓ̃ = [0.1, 0.2],
    # R = e^0.15; seq-mean-token-mean gives −R·(kept/|y|) = −R/2 and gradient [−R/2, 0]
    ell = torch.tensor([[0.1, 0.3]], dtype=F64)
    b = mk(ell.exp().tolist(), [[1.0]], old_ratio=ell.exp().tolist())
    out = get_rule("geo_mean")(b)
    R = math.exp(0.15)
    assert out.kept.tolist() == [[True, False]]
    loss = aggregate_loss(out.loss, b.mask, "seq-mean-token-mean")
    loss.backward()
    close(loss, -R / 2)
    close(b.logp.grad, [[-R / 2, 0.0]])
    # Â = −1: ℓ = [0.1, 0.3] are both on the free side (the floor is −0.2): R = e^0.2, nothing clipped
    b = mk(ell.exp().tolist(), [[-1.0]], old_ratio=ell.exp().tolist())
    out = get_rule("geo_mean")(b)
    assert out.kept.all()
    close(aggregate_loss(out.loss, b.mask, "seq-mean-token-mean"), math.exp(0.2))


@pytest.mark.parametrize("params", [{}, {"eps_low": 0.05, "eps_high": 0.1, "anchor": "rollout"}])
def test_geo_mean_equals_its_sequence_loop(params):
    from baselines.geo_mean import GeoMeanParams, reference_geo_mean
    from cppo.rules import aggregate_loss

    b = random_batch(B=9, T=13, seed=13, dtype=F64, drift=0.3)
    out = get_rule("geo_mean", **params)(b)
    loss = aggregate_loss(out.loss, b.mask, "seq-mean-token-mean")
    loss.backward()
    ref_losses, ref_grads = reference_geo_mean(b, GeoMeanParams(**params))
    rows = [i for i in range(9) if b.mask[i].any()]
    close(b.logp.grad.masked_fill(~b.mask, 0.0), torch.tensor(ref_grads, dtype=F64) / len(rows))
    assert (~out.kept & b.mask & (b.advantages != 0)).any()  # the loop's clipping branch was exercised
    # values agree on rows where nothing was clipped (elsewhere the contract's zero loss on dropped tokens)
    clean = [i for i in rows if bool(out.kept[i][b.mask[i]].all())]
    per_row = out.loss.sum(1) / b.mask.sum(1)
    close(per_row[clean], torch.tensor(ref_losses, dtype=F64)[clean])


# ------------------------------------------------------------------ clip_cov
def test_clip_cov_cuts_a_draw_of_its_candidates():
    from baselines.clip_cov import ClipCovParams, reference_clip_cov_candidates

    b = random_batch(B=8, T=16, seed=14, dtype=F64)
    cand = set(reference_clip_cov_candidates(b, ClipCovParams(clip_cov_lb=0.2)))
    ppo = get_rule("ppo_clip")(b)  # same ε, anchor old
    assert len(cand) > 3
    # ratio 1: every candidate is cut
    out = get_rule("clip_cov", clip_cov_ratio=1.0, clip_cov_lb=0.2)(b)
    cut = {tuple(x) for x in (ppo.kept & ~out.kept).nonzero().tolist()}
    assert cut == cand and not (out.kept & ~ppo.kept).any()  # only candidates are cut, beyond PPO's clip
    # ratio 0.05 of N tokens, seeded: a draw of ⌊0.05 N⌋ candidates, the same for the same seed
    n = int(b.mask.sum())
    draws = []
    for seed in (1, 1, 2):
        out = get_rule("clip_cov", clip_cov_ratio=0.05, clip_cov_lb=0.2, seed=seed)(b)
        draws.append({tuple(x) for x in (ppo.kept & ~out.kept).nonzero().tolist()})
    assert all(len(d) == int(0.05 * n) and d <= cand for d in draws)
    assert draws[0] == draws[1] and draws[0] != draws[2]


def test_clip_cov_with_an_empty_band_is_ppo_clip():
    b1, b2 = random_batch(seed=15, dtype=F64), random_batch(seed=15, dtype=F64)
    c = get_rule("clip_cov", clip_cov_lb=1e6, clip_cov_ub=2e6)(b1)
    p = get_rule("ppo_clip")(b2)
    assert torch.equal(c.kept, p.kept)
    close(c.loss, p.loss)
    close(grad_of(c, b1), grad_of(p, b2))


# ------------------------------------------------------------------ kl_cov
def test_kl_cov_penalises_its_top_covariance_tokens():
    from baselines.kl_cov import KLCovParams, reference_kl_cov_penalised

    b = random_batch(B=8, T=16, seed=16, dtype=F64)
    p = KLCovParams(kl_cov_ratio=0.1, ppo_kl_coef=0.5)
    top = reference_kl_cov_penalised(b, p)
    n = int(b.mask.sum())
    assert len(top) == int(0.1 * n) > 1
    out = get_rule("kl_cov", kl_cov_ratio=0.1, ppo_kl_coef=0.5)(b)
    assert {tuple(x) for x in out.limited.nonzero().tolist()} == top
    # gradient: −Â r everywhere, plus k·sign(log r) on the penalised tokens
    g = grad_of(out, b)
    ell = (b.logp.detach() - b.old_logp).masked_fill(~b.mask, 0.0)
    adv = b.advantages.masked_fill(~b.mask, 0.0)
    expect = -adv * ell.exp() + 0.5 * ell.sign() * out.limited
    close(g.masked_fill(~b.mask, 0.0), expect.masked_fill(~b.mask, 0.0))


def test_kl_cov_without_penalty_is_pg_is_against_pi_old():
    b1, b2 = random_batch(seed=17, dtype=F64), random_batch(seed=17, dtype=F64)
    k = get_rule("kl_cov", ppo_kl_coef=0.0)(b1)
    p = get_rule("pg_is", anchor="old")(b2)
    close(k.loss, p.loss)
    close(grad_of(k, b1), grad_of(p, b2))
