"""Contract suite run over every registered rule (and the non-default options of each).

Properties (docs/contracts.md §Rules): padding does not change results; tokens not kept and padding get exactly zero
gradient; permuting the batch permutes the output; float32 agrees with float64; with π = μ = π_old every
rule gives the plain policy gradient −Â ∇log π.
"""

from __future__ import annotations

import math

import pytest
import torch

from cppo.rules import PolicyBatch, get_rule, list_rules
from cppo.rules.diagnostics import ALL_METRIC_NAMES, METRIC_NAMES
from cppo.rules.registry import builtin_rules, get_spec
from cppo.rules.testing import random_batch

BUILTIN = builtin_rules()  # the registry's list: a new built-in rule is in every contract test below

# defaults, with thresholds loosened where the default would drop (or keep) every random token, so the
# zero-gradient checks see both kept and dropped tokens
# (clip_cov: every candidate is cut, so its random draw plays no part and batch permutations commute with it)
BASE_PARAMS = {"trm_max": {"delta": 0.3}, "trm_avg": {"delta": 0.09}, "gspo": {"eps_low": 0.05, "eps_high": 0.05},
               "clip_cov": {"clip_cov_ratio": 1.0}}
VARIANTS = [(name, BASE_PARAMS.get(name, {})) for name in BUILTIN] + [
    ("pg_is", {"trunc_cap": 1.5}),
    ("ppo_clip", {"eps_high": 0.28, "dual_clip": 3.0, "anchor": "rollout"}),
    ("dppo", {"divergence": "binary_tv", "anchor": "old", "delta_low": 0.05, "delta_high": 0.1}),
    ("dppo", {"divergence": "binary_kl", "delta": 0.05, "trunc_cap": None}),
    ("dppo", {"divergence": "topk_kl", "delta": 0.1}),
    ("trm_max", {"kl": "topk", "delta": 0.3, "trunc_cap": 5.0}),
    ("cispo", {"eps_low": 0.3, "anchor": "old"}),
    ("minpro", {"clip": "hard"}),
    ("cppo", {"mask_mode": "soft"}),
    ("cppo", {"divergence": "binary_tv", "delta_b_mode": "fixed", "trunc_cap": None, "delta": 0.05}),
    ("cppo", {"divergence": "binary_kl", "anchor": "old", "delta": 0.1, "delta_b": 0.002}),
    ("cppo", {"divergence": "topk_tv", "anchor": "old"}),
    ("cppo", {"horizon": "max", "max_horizon": 40}),
    ("cppo", {"ablation": "no_position_weight"}),
    ("cppo", {"ablation": "no_prefix_budget"}),
    ("sapo", {"tau_pos": 3.0, "tau_neg": 6.0, "anchor": "rollout"}),
    ("clip_cov", {"clip_cov_ratio": 1.0, "eps_high": 0.28, "clip_cov_lb": 0.5, "anchor": "rollout"}),
    ("kl_cov", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 1.0, "anchor": "rollout"}),
    ("geo_mean", {"eps_low": 0.4, "eps_high": 0.4, "anchor": "rollout"}),
    ("dro", {"beta": 1.0, "anchor": "rollout"}),
]
IDS = [f"{n}-" + ",".join(f"{k}={v}" for k, v in p.items()) for n, p in VARIANTS]
ALWAYS_KEEP = {"pg_is", "cispo", "sapo", "gpg", "kl_cov", "dro"}  # rules that never drop a token (minpro soft as well)
# clip_cov cuts covariance-selected tokens even on-policy (the covariance of log π and Â is not 0 at π = π_old)
NOT_PG_ON_POLICY = {"clip_cov"}


def _run(name, params, batch):
    out = get_rule(name, **params)(batch)
    return out


def test_registry_lists_every_builtin():
    assert len(BUILTIN) >= 9 and list_rules()[: len(BUILTIN)] == BUILTIN
    for name in BUILTIN:  # each entry of the registry's table imports a module that registers that name
        assert get_spec(name).name == name


def _pad_right(batch: PolicyBatch, extra: int) -> PolicyBatch:
    """Append `extra` padded columns full of garbage."""

    def pad(t):
        if t.dim() == 2:
            fill = False if t.dtype == torch.bool else (7 if not t.is_floating_point() else float("nan"))
            cols = torch.full((t.shape[0], extra), fill, dtype=t.dtype)
        else:
            fill = 3 if not t.is_floating_point() else float("nan")
            cols = torch.full((t.shape[0], extra, t.shape[2]), fill, dtype=t.dtype)
        return torch.cat([t.detach(), cols], dim=1)

    out = batch.map(pad)
    out.logp.requires_grad_(True)
    return out


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_output_shapes_metrics_and_zero_grad(name, params):
    batch = random_batch(B=8, T=16, seed=1)
    out = _run(name, params, batch)
    assert out.loss.shape == batch.mask.shape and out.kept.shape == batch.mask.shape
    assert out.kept.dtype == torch.bool
    assert not (out.kept & ~batch.mask).any(), "padding must never be kept"
    assert torch.isfinite(out.loss).all()
    assert set(METRIC_NAMES) <= set(out.metrics) <= set(ALL_METRIC_NAMES)
    assert "entropy" in out.metrics and all(math.isfinite(v) for v in out.metrics.values())
    out.loss.sum().backward()
    grad = batch.logp.grad
    assert torch.isfinite(grad).all()
    assert (grad[~out.kept] == 0).all(), "tokens not kept (and padding) must get exactly zero gradient"
    assert (out.loss[~out.kept] == 0).all()
    live = out.kept & (batch.advantages != 0) & batch.mask
    assert live.any() and (grad[live] != 0).all(), "kept tokens with Â ≠ 0 must get a gradient"
    if name not in ALWAYS_KEEP and not (name == "minpro" and params.get("clip", "soft") == "soft") \
            and params.get("mask_mode") != "soft":
        assert (batch.mask & ~out.kept).any(), "test data should make this rule drop some tokens"


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_padding_invariance(name, params):
    if params.get("horizon") == "max" and params.get("max_horizon") is None:
        pytest.skip("horizon=max without max_horizon depends on the padded width by definition")
    right = random_batch(B=7, T=13, seed=2, padding="right")
    wide = _pad_right(right, 5)
    a, b = _run(name, params, right), _run(name, params, wide)
    torch.testing.assert_close(b.loss[:, :13], a.loss, rtol=1e-6, atol=1e-7)
    assert torch.equal(b.kept[:, :13], a.kept) and not b.kept[:, 13:].any()
    assert (b.loss[:, 13:] == 0).all()
    for k in a.metrics:
        assert b.metrics[k] == pytest.approx(a.metrics[k], rel=1e-5, abs=1e-7), k
    # left padding: the same responses shifted to the end of each row
    shift = (~right.mask).sum(1)

    def to_left(t):
        t = t.detach()
        return torch.stack([torch.roll(t[i], int(shift[i]), dims=0) for i in range(t.shape[0])])

    left = right.map(to_left)
    left.logp.requires_grad_(True)
    c = _run(name, params, left)
    torch.testing.assert_close(to_left(a.loss), c.loss, rtol=1e-6, atol=1e-7)
    assert torch.equal(to_left(a.kept), c.kept)
    for k in a.metrics:
        assert c.metrics[k] == pytest.approx(a.metrics[k], rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_batch_permutation_equivariance(name, params):
    batch = random_batch(B=9, T=11, seed=3)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    permuted = batch.map(lambda t: t.detach()[perm])
    permuted.logp.requires_grad_(True)
    a, b = _run(name, params, batch), _run(name, params, permuted)
    torch.testing.assert_close(b.loss, a.loss[perm], rtol=1e-6, atol=1e-7)
    assert torch.equal(b.kept, a.kept[perm])
    for k in a.metrics:
        assert b.metrics[k] == pytest.approx(a.metrics[k], rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_float32_matches_float64(name, params):
    b64 = random_batch(B=8, T=14, seed=4, dtype=torch.float64)
    b32 = b64.map(lambda t: t.detach().float() if t.is_floating_point() else t)
    b32.logp.requires_grad_(True)
    a, b = _run(name, params, b64), _run(name, params, b32)
    assert a.loss.dtype == torch.float64 and b.loss.dtype == torch.float32
    assert torch.equal(a.kept, b.kept)
    torch.testing.assert_close(b.loss.double(), a.loss, rtol=1e-4, atol=1e-5)
    a.loss.sum().backward()
    b.loss.sum().backward()
    torch.testing.assert_close(b32.logp.grad.double(), b64.logp.grad, rtol=1e-4, atol=1e-5)
    for k in a.metrics:
        assert b.metrics[k] == pytest.approx(a.metrics[k], rel=1e-3, abs=1e-5), k


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_on_policy_gives_plain_policy_gradient(name, params):
    batch = random_batch(B=6, T=10, seed=5)
    lp = batch.logp.detach()
    on = PolicyBatch(logp=lp.clone().requires_grad_(True), old_logp=lp.clone(), rollout_logp=lp.clone(),
                     advantages=batch.advantages, mask=batch.mask, rollout_topk_ids=batch.rollout_topk_ids,
                     rollout_topk_logp=batch.rollout_topk_logp, policy_topk_logp=batch.rollout_topk_logp.clone(),
                     old_topk_logp=batch.rollout_topk_logp.clone(), token_ids=batch.token_ids)
    out = _run(name, params, on)
    adv = torch.where(batch.mask, batch.advantages, 0.0)
    out.loss.sum().backward()
    if name in NOT_PG_ON_POLICY:  # the plain policy gradient on every token it did not cut, and some cut
        assert (batch.mask & ~out.kept).any() and out.metrics["masked_frac"] > 0
        torch.testing.assert_close(on.logp.grad, torch.where(out.kept, -adv, 0.0), rtol=1e-6, atol=1e-7)
        return
    assert torch.equal(out.kept, batch.mask), "with π = μ = π_old nothing is masked"
    torch.testing.assert_close(on.logp.grad, -adv, rtol=1e-6, atol=1e-7)
    assert out.metrics["masked_frac"] == 0.0 and out.metrics["div_max"] == pytest.approx(0.0, abs=1e-6)
    assert out.metrics["ess"] == pytest.approx(1.0) and out.metrics["ratio_max"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", BUILTIN)
def test_bfloat16_inputs_are_computed_in_float32(name):
    b16 = random_batch(B=5, T=9, seed=6, dtype=torch.bfloat16)
    b32 = b16.map(lambda t: t.detach().float() if t.is_floating_point() else t)
    b32.logp.requires_grad_(True)
    params = BASE_PARAMS.get(name, {})
    a, b = _run(name, params, b16), _run(name, params, b32)
    assert a.loss.dtype == torch.float32
    assert torch.equal(a.kept, b.kept)
    torch.testing.assert_close(a.loss, b.loss)
    a.loss.sum().backward()
    assert b16.logp.grad.dtype == torch.bfloat16 and torch.isfinite(b16.logp.grad.float()).all()


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_reads_old_declaration_is_exact(name, params):
    """`Rule.reads_old` (declared at registration) says whether π_old is an input: a rule declared not to
    read it gives bit-identical loss, gradient and metrics (less `k3_old_mu`) with `old_logp=None`, which
    is how the trainer calls it when it skips π_old; a rule declared to read it changes when π_old does."""
    rule = get_rule(name, **params)
    batch = random_batch(B=8, T=16, seed=5, K=6)

    def run(b):
        b.logp.grad = None
        out = rule(b)
        out.loss.sum().backward()
        return out, b.logp.grad.clone()

    out, grad = run(batch)
    if rule.reads_old:
        moved = batch.map(lambda t: t.detach().clone())
        moved.old_logp = torch.where(moved.mask, moved.old_logp - 0.3, moved.old_logp)
        moved.old_topk_logp = moved.old_topk_logp - 0.3
        moved.logp.requires_grad_(True)
        out2, grad2 = run(moved)
        assert not torch.equal(grad2, grad) or any(out2.metrics[k] != out.metrics[k] for k in out.metrics
                                                    if k != "k3_old_mu"), "declared reads_old, but π_old plays no part"
        return
    assert "k3_old_mu" in out.metrics
    skipped = batch.map(lambda t: t.detach().clone())
    skipped.old_logp = skipped.old_topk_logp = None
    skipped.logp.requires_grad_(True)
    out2, grad2 = run(skipped)
    assert torch.equal(out2.loss, out.loss) and torch.equal(out2.kept, out.kept) and torch.equal(grad2, grad)
    assert out2.metrics == {k: v for k, v in out.metrics.items() if k != "k3_old_mu"}


def test_reads_old_follows_the_anchor():
    for name in BUILTIN:
        spec_params = {f: v for f, v in get_rule(name).params.items()}
        if "anchor" in spec_params:
            assert get_rule(name, anchor="old").reads_old and not get_rule(name, anchor="rollout").reads_old, name
        else:  # gpg: no ratio at all
            assert not get_rule(name).reads_old, name
