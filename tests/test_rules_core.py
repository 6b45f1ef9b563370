"""Shared pieces of the rule library: divergences, aggregation, registry, diagnostics, position profile, CLI."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from cppo.rules import AGG_MODES, PolicyBatch, aggregate_loss, get_rule, list_rules, register_rule, rule_param_defaults
from cppo.rules import registry
from cppo.rules.diagnostics import ALL_METRIC_NAMES, METRIC_NAMES, position_profile, shared_metrics
from cppo.rules.divergence import k1, k2, k3, token_divergence
from cppo.rules.testing import random_batch

F64 = torch.float64


# ------------------------------------------------------------------ divergences
@pytest.mark.parametrize("anchor", ["rollout", "old"])
def test_topk_with_k_equal_vocab_is_exact(anchor):
    batch, full = random_batch(B=5, T=7, V=10, K=10, seed=1, dtype=F64, return_full=True)
    ref = full.logp_mu if anchor == "rollout" else full.logp_old
    m = batch.mask
    tv = token_divergence(batch, "topk_tv", anchor)
    exact_tv = 0.5 * (full.logp_pi.exp() - ref.exp()).abs().sum(-1)
    torch.testing.assert_close(tv[m], exact_tv[m])
    kl = token_divergence(batch, "topk_kl", anchor)
    exact_kl = (ref.exp() * (ref - full.logp_pi)).sum(-1)
    torch.testing.assert_close(kl[m], exact_kl[m])
    assert (tv[~m] == 0).all() and (kl[~m] == 0).all()


def test_topk_tv_hand_with_sampled_token_outside_topk():
    # μ = [0.5, 0.3, 0.15, 0.05], π = [0.3, 0.3, 0.1, 0.3], K = 2 → S = {0, 1}
    # y = 0 ∈ S:  ½(|0.5−0.3| + |0.3−0.3| + |0.2−0.4|) = 0.2
    # y = 3 ∉ S:  y replaces the K-th entry, S = {0, 3}: ½(0.2 + 0.25 + |0.45−0.4|) = 0.25 (= exact TV here)
    mu = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=F64).log()
    pi = torch.tensor([0.3, 0.3, 0.1, 0.3], dtype=F64).log()
    ids = torch.tensor([0, 1]).expand(1, 2, 2)
    y = torch.tensor([[0, 3]])

    def batch(with_ids):
        return PolicyBatch(logp=pi[y], old_logp=mu[y], rollout_logp=mu[y], advantages=torch.ones(1, 2, dtype=F64),
                           mask=torch.ones(1, 2, dtype=torch.bool), rollout_topk_ids=ids, rollout_topk_logp=mu[ids],
                           policy_topk_logp=pi[ids], token_ids=y if with_ids else None)

    for with_ids in (True, False):  # exact membership by id, or by comparing μ(y) with the K-th value
        d = token_divergence(batch(with_ids), "topk_tv")
        torch.testing.assert_close(d, torch.tensor([[0.2, 0.25]], dtype=F64))
    # binary TV and KL of the same tokens
    torch.testing.assert_close(token_divergence(batch(True), "binary_tv"), torch.tensor([[0.2, 0.25]], dtype=F64))
    bkl = 0.05 * math.log(0.05 / 0.3) + 0.95 * math.log(0.95 / 0.7)
    assert token_divergence(batch(True), "binary_kl")[0, 1].item() == pytest.approx(bkl)


def test_topk_membership_by_value_matches_by_id_on_random_data():
    batch = random_batch(B=8, T=20, V=12, K=3, seed=5, dtype=F64)
    no_ids = batch.map(lambda t: t)
    no_ids.token_ids = None
    for kind in ("topk_tv", "topk_kl"):
        torch.testing.assert_close(token_divergence(batch, kind), token_divergence(no_ids, kind))
    outside = ~(batch.rollout_topk_ids == batch.token_ids.unsqueeze(-1)).any(-1) & batch.mask
    assert outside.any(), "the data should contain sampled tokens outside μ's top-K"


@pytest.mark.parametrize("anchor", ["rollout", "old"])
def test_topk_swap_correction_matches_explicit_replacement(anchor):
    # token_divergence corrects the sums instead of materialising the swapped set; compare it with the
    # explicit construction: overwrite μ's smallest top-K entry with y_t wherever y_t ∉ S
    from cppo.rules.divergence import topk_kl, topk_tv

    batch = random_batch(B=8, T=20, V=12, K=3, seed=6, dtype=F64, garbage=False)
    ref_t = batch.rollout_logp if anchor == "rollout" else batch.old_logp
    ref_k = batch.rollout_topk_logp if anchor == "rollout" else batch.old_topk_logp
    out = ~(batch.rollout_topk_ids == batch.token_ids.unsqueeze(-1)).any(-1)  # (B, T)
    assert out[batch.mask].float().mean() > 0.1  # plenty of sampled tokens outside the top-3
    slot = (torch.arange(3) == batch.rollout_topk_logp.argmin(-1, keepdim=True)) & out.unsqueeze(-1)
    pi_k = torch.where(slot, batch.logp.detach().unsqueeze(-1), batch.policy_topk_logp)
    ref_k = torch.where(slot, ref_t.unsqueeze(-1), ref_k)
    m = batch.mask
    torch.testing.assert_close(token_divergence(batch, "topk_tv", anchor)[m], topk_tv(pi_k, ref_k)[m])
    torch.testing.assert_close(token_divergence(batch, "topk_kl", anchor)[m], topk_kl(pi_k, ref_k)[m])


def test_kl_estimators():
    log_r = torch.tensor([0.0, 0.5, -1.0], dtype=F64)
    torch.testing.assert_close(k1(log_r), -log_r)
    torch.testing.assert_close(k2(log_r), torch.tensor([0.0, 0.125, 0.5], dtype=F64))
    torch.testing.assert_close(k3(log_r), torch.tensor([0.0, math.exp(0.5) - 1.5, math.exp(-1) - 1 + 1], dtype=F64))
    with pytest.raises(ValueError, match="divergence"):
        token_divergence(random_batch(), "tv")


# ------------------------------------------------------------------ aggregation
def test_aggregation_modes_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), float("inf")], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])  # row 2: empty
    assert aggregate_loss(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate_loss(loss, mask, "token-sum").item() == pytest.approx(10)
    assert aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum-norm", 10).item() == pytest.approx(5 / 10)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(5 / 3)  # C = T
    # gradients: token-mean weights every token 1/4
    x = torch.zeros(3, 3, requires_grad=True)
    aggregate_loss(x, mask, "token-mean").backward()
    torch.testing.assert_close(x.grad, mask.float() / 4)
    x = torch.zeros(3, 3, requires_grad=True)
    aggregate_loss(x, mask, "seq-mean-token-mean").backward()
    torch.testing.assert_close(x.grad, torch.tensor([[1 / 6] * 3, [1 / 2, 0, 0], [0, 0, 0]]))
    assert aggregate_loss(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool), "token-mean").item() == 0.0
    with pytest.raises(ValueError, match="token-mean"):
        aggregate_loss(loss, mask, "sum")
    with pytest.raises(ValueError):
        aggregate_loss(loss, mask, "seq-mean-token-sum-norm", 0)
    assert len(AGG_MODES) == 5


# ------------------------------------------------------------------ registry
def test_registry_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="cppo") as e:
        get_rule("nope")
    assert "ppo_clip" in str(e.value)
    with pytest.raises(ValueError, match="eps_high") as e:
        get_rule("ppo_clip", eps=0.2)
    assert "unknown parameter" in str(e.value)
    with pytest.raises(ValueError, match="binary_tv"):
        get_rule("dppo", divergence="tv")
    with pytest.raises(ValueError):
        get_rule("ppo_clip", eps_low=1.5)


def test_rule_objects_are_plain_callables():
    r = get_rule("cppo", delta=0.1)
    assert r.name == "cppo" and r.params["delta"] == 0.1 and r.params["w_min"] == 0.8 and r.needs_topk
    assert not get_rule("ppo_clip").needs_topk and get_rule("trm_avg", kl="topk").needs_topk
    assert rule_param_defaults("cppo") == {k: v for k, v in get_rule("cppo").params.items()}
    assert rule_param_defaults("ppo_clip") == {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": None, "anchor": "old"}
    assert "cppo" in repr(r)
    for name in list_rules():
        assert set(rule_param_defaults(name)) == set(get_rule(name).params)


def test_entry_point_rules_are_loaded_lazily(monkeypatch):
    from dataclasses import dataclass

    loaded = []

    @dataclass
    class P:
        scale: float = registry.param(2.0, "multiplier")

    def load():
        loaded.append(1)

        @register_rule("ext_double_pg", P, paper="test")
        def ext(batch, p):
            out = get_rule("pg_is")(batch)
            out.loss = out.loss * p.scale
            return out

        return ext

    ep = SimpleNamespace(name="ext_double_pg", value="ext_pkg:ext", load=load)
    monkeypatch.setattr(registry, "_entry_points", lambda: {"ext_double_pg": ep})
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert "ext_double_pg" in list_rules() and loaded == []  # listed without importing it
    batch = random_batch(seed=2)
    out = get_rule("ext_double_pg", scale=3.0)(batch)
    assert loaded == [1]
    torch.testing.assert_close(out.loss, 3.0 * get_rule("pg_is")(batch).loss)
    # an entry point that registers nothing is a clear error
    bad = SimpleNamespace(name="ext_bad", value="ext_pkg:bad", load=lambda: object())
    monkeypatch.setattr(registry, "_entry_points", lambda: {"ext_bad": bad})
    with pytest.raises(ValueError, match="did not register"):
        get_rule("ext_bad")


def test_policy_batch_validation():
    ok = random_batch()
    with pytest.raises(ValueError, match="shape"):
        PolicyBatch(logp=ok.logp, old_logp=ok.old_logp[:, :-1], rollout_logp=ok.rollout_logp,
                    advantages=ok.advantages, mask=ok.mask)
    with pytest.raises(ValueError, match="bool"):
        PolicyBatch(logp=ok.logp, old_logp=ok.old_logp, rollout_logp=ok.rollout_logp,
                    advantages=ok.advantages, mask=ok.mask.float())
    with pytest.raises(ValueError, match="top-K"):
        PolicyBatch(logp=ok.logp, old_logp=ok.old_logp, rollout_logp=ok.rollout_logp, advantages=ok.advantages,
                    mask=ok.mask, rollout_topk_logp=ok.rollout_topk_logp, policy_topk_logp=ok.policy_topk_logp[..., :2])


# ------------------------------------------------------------------ diagnostics
def test_shared_metrics_by_hand():
    # 2 rows × 3 tokens; row 1's last token is padding. μ = 0.2; ρ = [[1, 2, 0.5], [4, 1, pad]]
    # Â = [[1, 1, 1], [-1, -1, pad]]; kept = [[T, F, F], [F, F, ·]]
    mu = torch.full((2, 3), math.log(0.2), dtype=F64)
    rho = torch.tensor([[1.0, 2.0, 0.5], [4.0, 1.0, 1.0]], dtype=F64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    b = PolicyBatch(logp=mu + rho.log(), old_logp=mu, rollout_logp=mu,
                    advantages=torch.tensor([[1.0], [-1.0]], dtype=F64).expand(2, 3), mask=mask,
                    entropy=torch.full((2, 3), 0.7, dtype=F64))
    kept = torch.tensor([[True, False, False], [False, False, False]])
    m = shared_metrics(b, kept)
    assert m["masked_frac"] == pytest.approx(4 / 5)
    assert m["masked_frac_pos"] == pytest.approx(2 / 3) and m["masked_frac_neg"] == pytest.approx(1.0)
    assert m["seq_fully_masked_frac"] == pytest.approx(1 / 2)
    assert m["ratio_max"] == pytest.approx(4.0)
    assert m["ess"] == pytest.approx((1 + 2 + 0.5 + 4 + 1) ** 2 / (5 * (1 + 4 + 0.25 + 16 + 1)))
    k3s = [0.0, 2 - 1 - math.log(2), 0.5 - 1 - math.log(0.5), 4 - 1 - math.log(4), 0.0]
    assert m["k3_pi_mu"] == pytest.approx(sum(k3s) / 5) and m["k3_old_mu"] == 0.0
    tvs = [0.0, 0.2, 0.1, 0.6, 0.0]  # binary TV |π − μ| with π = ρ μ
    assert m["div_mean"] == pytest.approx(sum(tvs) / 5) and m["div_max"] == pytest.approx(0.6)
    assert m["entropy"] == pytest.approx(0.7)
    assert set(m) == set(METRIC_NAMES) | {"k3_old_mu", "entropy"}
    # no eligible token (all Â = 0): fractions are 0, never nan
    b0 = PolicyBatch(logp=b.logp, old_logp=mu, rollout_logp=mu, advantages=torch.zeros(2, 3, dtype=F64), mask=mask)
    m0 = shared_metrics(b0, kept)
    assert m0["masked_frac"] == 0.0 and m0["seq_fully_masked_frac"] == 0.0 and "entropy" not in m0
    assert {"prefix_reject_frac", "token_reject_frac", "entropy"} <= set(ALL_METRIC_NAMES)


def test_position_profile_by_hand():
    # one row of 4 tokens (D = binary TV = [0.1, 0.2, 0.3, 0.4]) + one of 2 tokens (D = [0.5, 0.6]), 2 buckets
    mu = torch.full((2, 4), math.log(0.1), dtype=F64)
    pi = torch.tensor([[0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.1, 0.1]], dtype=F64)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    b = PolicyBatch(logp=pi.log(), old_logp=mu, rollout_logp=mu, advantages=torch.ones(2, 4, dtype=F64), mask=mask)
    out = get_rule("dppo", divergence="binary_tv", delta=0.35)(b)  # masks D > 0.35: tokens 0.4, 0.5, 0.6
    prof = position_profile(b, out, n_buckets=2)
    assert prof["tokens"] == [3.0, 3.0]  # relative buckets: row 0 → [0,0,1,1], row 1 → [0,1]
    assert prof["div_mean"] == pytest.approx([(0.1 + 0.2 + 0.5) / 3, (0.3 + 0.4 + 0.6) / 3])
    assert prof["masked_frac"] == pytest.approx([1 / 3, 2 / 3])
    absolute = position_profile(b, out, n_buckets=2, by="absolute", bucket_width=1)
    assert absolute["tokens"] == [2.0, 4.0]  # position 0, then everything later
    assert absolute["div_sum"] == pytest.approx([0.6, 0.2 + 0.3 + 0.4 + 0.6])
    with pytest.raises(ValueError):
        position_profile(b, out, by="percent")


def test_cli_lists_every_rule(capsys):
    from cppo.cli import main
    from cppo.rules.registry import builtin_rules

    assert main(["rules"]) == 0
    text = capsys.readouterr().out
    for name in list_rules():
        assert name in text
    assert "delta_b" in text and "w_min" in text
    assert main(["rules", "cppo", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["cppo"]["params"]["w_min"]["default"] == 0.8
    # every built-in rule names its source with an arXiv id, except the control pg_is (no paper of its own)
    assert main(["rules", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [n for n in builtin_rules() if n != "pg_is" and "arXiv" not in info[n]["paper"]] == []


def test_benchmark_script_runs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "rules.py"
    spec = importlib.util.spec_from_file_location("bench_rules", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--sizes", "4x16", "--repeat", "1", "--devices", "cpu"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| cpu")]
    assert len(rows) == len(mod.variants())
    from cppo.rules import list_rules

    timed = {line.split("|")[3].strip() for line in rows}
    assert set(list_rules()) <= timed  # every registered rule, from the registry
    assert rows[0].startswith("| cpu | 4×16 | ppo_clip |") and rows[0].endswith("| 1.00 |")
