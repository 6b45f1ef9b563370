"""Parity of cppo-bench rules with verl 0.9.1, run inside .venv-verl (scripts/bootstrap-verl).

    .venv-verl/bin/python tests/verl_parity/check.py [--out results.json]

Prints one JSON object {"verl_version", "discovered", "checks": {name: {ok, max_diff, detail}}} and
exits 1 when a check fails. tests/test_verl_parity.py runs it from the main suite and turns each check
into its own test item.

Checks, all on fixed random inputs (seeded, float64, ragged lengths, a length-1 row, a zero-advantage
row, finite junk on padding):
- discovery: importing verl alone (entry-point group `verl.plugins`) registers our losses.
- ppo_clip/<agg>: our `ppo_clip` (ε_low 0.2, ε_high 0.28, dual clip 3, anchor old) + our
  `aggregate_loss` against verl's `compute_policy_loss_vanilla` (+ its `agg_loss`). The gradient with
  respect to log π must agree everywhere. Loss *values* agree when no token is clipped (checked on an
  in-band batch); on clipped tokens our contract sets the loss to 0 where verl keeps the constant
  clipped branch (same gradient), so values are compared on the in-band batch only.
- dppo/<agg>: our `dppo` (binary TV, anchor old, δ_low 0.15, δ_high 0.2, cap 20) against verl's
  `dppo_tv` (clip_ratio_low/high, clip_ratio_c = 20): loss values and gradients.
- registry/<rule>: every registered rule called through verl's registry (`get_policy_loss_fn`) with a
  real verl `FSDPActorConfig` holding our `CPPOPolicyLossConfig` gives the numbers of calling the rule
  directly (loss value under each aggregation mode, gradient, and the metrics), and the non-default
  `rule_params` demonstrably reach the rule.
- loss_fn_inputs: an OmegaConf config works like the dataclass; rollout IS weights multiply the
  per-token loss; a rule left on a top-K divergence is refused with a clear error.
- ppo_loss_path/<agg>: `cppo` called the way verl's actor calls every policy loss
  (`verl.workers.utils.losses.ppo_loss`: packed log-probs, TensorDict batch, global batch info) gives the
  direct numbers and carries the rule metrics.
- data_parallel/<agg>: with verl's global batch info, two ranks' losses average to the whole batch's.
- verl/<loss>/<agg>: each other loss verl 0.9.1 registers (dppo_kl, gspo, cispo, sapo, gpg, clip_cov,
  kl_cov, geo_mean, dro; vanilla and dppo_tv are ppo_clip/ and dppo/ above) against our rule with verl's
  settings (`VERL_LOSSES`), in every aggregation mode: gradients on wide batches where the rule limits
  tokens; loss values on every batch, or, for the rules whose contract sets the loss of a dropped token
  to 0 where verl keeps a constant, on an in-band batch. verl's sapo and geo_mean ignore loss_agg_mode
  (seq-mean-token-mean and a mean over rows): ours runs seq-mean-token-mean against verl's every mode.
  clip_cov draws its cut tokens at random: torch.manual_seed(s) before verl, `seed=s` for ours.
- rollout_corr/<case>: cppo.rules.rollout_correction against verl's
  `compute_rollout_correction_and_rejection_mask` on the same (π_old, μ): the IS weights, the mask after
  rejection and the diagnostics, for TIS and IcePop at token and sequence level (with and without
  batch normalisation) and every rejection option; rollout_corr/applied: a verl loss given the corrected
  mask and weights equals our rule on the corrected batch with the weights on its per-token loss.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback

import torch

from cppo.rules.aggregation import AGG_MODES

TOL = 1e-9  # float64 throughout


def make_inputs(seed: int, spread: float, B: int = 48, T: int = 16):
    """(old_logp, logp, adv, mask) with ragged right padding; spread = std of log π − log π_old.

    Row 0 has full length, row 1 length 1, row 2 zero advantage; other lengths are random in [1, T].
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = T, 1
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
    p_old = torch.rand(B, T, generator=g, dtype=torch.float64) * 0.97 + 0.02
    old = p_old.log()
    logp = (old + spread * torch.randn(B, T, generator=g, dtype=torch.float64)).clamp(max=-1e-6)
    adv_row = torch.randn(B, generator=g, dtype=torch.float64)
    adv_row[2] = 0.0  # a group with zero advantage
    adv = adv_row[:, None].expand(B, T).clone()
    # finite junk on padding: both implementations must ignore it
    junk = ~mask
    old[junk] = -3.0
    logp[junk] = -0.5
    adv[junk] = 7.0
    return old, logp, adv, mask


def actor_config(policy_loss, **kw):
    from verl.workers.config import FSDPActorConfig

    return FSDPActorConfig(strategy="fsdp", rollout_n=4, ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2,
                           policy_loss=policy_loss, **kw)


def verl_loss(name, cfg, old, logp, adv, mask, agg):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    lp = logp.clone().requires_grad_(True)
    loss, metrics = get_policy_loss_fn(name)(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask,
                                             loss_agg_mode=agg, config=cfg, rollout_is_weights=None)
    loss.backward()
    return loss.detach(), lp.grad, metrics


def our_loss(rule, old, logp, adv, mask, agg, norm_constant=None):
    from cppo.rules import PolicyBatch, aggregate_loss

    lp = logp.clone().requires_grad_(True)
    out = rule(PolicyBatch(logp=lp, old_logp=old, rollout_logp=old, advantages=adv, mask=mask))
    loss = aggregate_loss(out.loss, mask, agg, norm_constant)
    loss.backward()
    return loss.detach(), lp.grad, out


def diff(a, b) -> float:
    if torch.is_tensor(a):
        return float((a.detach() - torch.as_tensor(b).detach()).abs().max())
    return abs(float(a) - float(b))


def check_ppo_clip(agg: str) -> dict:
    from verl.workers.config import PolicyLossConfig

    from cppo.rules import get_rule

    rule = get_rule("ppo_clip", eps_low=0.2, eps_high=0.28, dual_clip=3.0, anchor="old")
    cfg = actor_config(PolicyLossConfig(loss_mode="vanilla"), clip_ratio=0.2, clip_ratio_low=0.2,
                       clip_ratio_high=0.28, clip_ratio_c=3.0)
    d_grad, d_val, n_clipped = 0.0, 0.0, 0
    for seed, spread in ((0, 0.6), (1, 1.5), (2, 0.6)):  # wide batches: every clip regime occurs
        old, logp, adv, mask = make_inputs(seed, spread)
        _, g_v, _ = verl_loss("vanilla", cfg, old, logp, adv, mask, agg)
        _, g_o, out = our_loss(rule, old, logp, adv, mask, agg)
        d_grad = max(d_grad, diff(g_v, g_o))
        n_clipped += int((mask & ~out.kept & (adv != 0)).sum())
    # in-band batch: |log r| < 0.05 so no token is clipped -> loss values must agree too
    old, logp, adv, mask = make_inputs(3, 0.01)
    l_v, g_v, _ = verl_loss("vanilla", cfg, old, logp, adv, mask, agg)
    l_o, g_o, out = our_loss(rule, old, logp, adv, mask, agg)
    d_val = diff(l_v, l_o)
    d_grad = max(d_grad, diff(g_v, g_o))
    ok = d_grad < TOL and d_val < TOL and n_clipped > 0 and bool(out.kept[mask].all())
    return {"ok": ok, "max_diff": max(d_grad, d_val),
            "detail": f"grad diff {d_grad:.2e}, in-band value diff {d_val:.2e}, clipped tokens exercised {n_clipped}"}


def check_dppo(agg: str) -> dict:
    from verl.workers.config import PolicyLossConfig

    from cppo.rules import get_rule

    rule = get_rule("dppo", divergence="binary_tv", anchor="old", delta=0.15, delta_low=0.15, delta_high=0.2,
                    trunc_cap=20.0)
    cfg = actor_config(PolicyLossConfig(loss_mode="dppo_tv"), clip_ratio=0.15, clip_ratio_low=0.15,
                       clip_ratio_high=0.2, clip_ratio_c=20.0)
    worst, n_masked, n_capped = 0.0, 0, 0
    for seed, spread in ((10, 0.3), (11, 1.0), (12, 3.0)):
        old, logp, adv, mask = make_inputs(seed, spread)
        l_v, g_v, _ = verl_loss("dppo_tv", cfg, old, logp, adv, mask, agg)
        l_o, g_o, out = our_loss(rule, old, logp, adv, mask, agg)
        worst = max(worst, diff(l_v, l_o), diff(g_v, g_o))
        n_masked += int((mask & ~out.kept & (adv != 0)).sum())
        n_capped += int((mask & ((logp - old) > math.log(20.0))).sum())
    return {"ok": worst < TOL and n_masked > 0, "max_diff": worst,
            "detail": f"max |loss|,|grad| diff {worst:.2e}; masked tokens exercised {n_masked}, capped {n_capped}"}


# Non-default parameters for the round trip, chosen so that each one changes the result on the test
# inputs (checked: the rule with its defaults must give different numbers), which proves that
# `rule_params` reaches the rule inside verl. Divergences are binary: verl has no top-K log-probs.
REGISTRY_PARAMS: dict[str, dict] = {
    "pg_is": {"trunc_cap": 2.0},
    "ppo_clip": {"eps_low": 0.1, "eps_high": 0.28, "dual_clip": 3.0},
    "dppo": {"divergence": "binary_tv", "delta": 0.1, "trunc_cap": 5.0},
    "trm_max": {"delta": 0.5},
    "trm_avg": {"delta": 0.1},
    "cispo": {"eps_high": 0.5},
    "gspo": {"eps_low": 0.05, "eps_high": 0.1},
    "minpro": {"clip": "hard"},
    "cppo": {"divergence": "binary_tv", "delta": 0.2, "delta_b": 0.03, "delta_b_mode": "fixed", "w_min": 0.7},
    "sapo": {"tau_pos": 2.0, "tau_neg": 3.0},
    "clip_cov": {"clip_cov_ratio": 0.02, "seed": 3},  # seeded: the two calls must draw the same tokens
    "kl_cov": {"kl_cov_ratio": 0.05, "ppo_kl_coef": 1.0},
    "geo_mean": {"eps_low": 0.1, "eps_high": 0.3},
    "dro": {"beta": 0.5},
}


def registry_params(rule: str) -> dict:
    """REGISTRY_PARAMS[rule], or for a third-party rule its defaults with a binary divergence."""
    from cppo.rules import rule_param_defaults

    if rule in REGISTRY_PARAMS:
        return dict(REGISTRY_PARAMS[rule])
    defaults = rule_param_defaults(rule)
    params = {}
    if str(defaults.get("divergence", "")).startswith("topk"):
        params["divergence"] = "binary_tv" if defaults["divergence"] == "topk_tv" else "binary_kl"
    return params


def _binary_defaults(rule: str) -> dict:
    """The rule's defaults, top-K divergences replaced by their binary counterparts."""
    from cppo.rules import rule_param_defaults

    div = str(rule_param_defaults(rule).get("divergence", ""))
    return {"divergence": div.replace("topk", "binary")} if div.startswith("topk") else {}


def check_registry(rule_name: str) -> dict:
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from cppo.integrations.verl import CPPOPolicyLossConfig, METRIC_PREFIX, verl_loss_name
    from cppo.rules import get_rule

    params = registry_params(rule_name)
    rule = get_rule(rule_name, **params)
    default_rule = get_rule(rule_name, **_binary_defaults(rule_name))
    vname = verl_loss_name(rule_name)
    get_policy_loss_fn(vname)  # raises if not registered
    worst, parts, params_matter, n_kept = 0.0, [], False, 0
    for i, agg in enumerate(AGG_MODES):
        old, logp, adv, mask = make_inputs(20 + i, 0.35)
        scale = 16 if agg == "seq-mean-token-sum-norm" else None  # a fixed constant, as in the paper scripts
        cfg = actor_config(CPPOPolicyLossConfig(loss_mode=vname, rule_params=params), loss_scale_factor=scale)
        l_v, g_v, m_v = verl_loss(vname, cfg, old, logp, adv, mask, agg)
        l_o, g_o, out = our_loss(rule, old, logp, adv, mask, agg, norm_constant=scale)
        d_m = max((abs(m_v[METRIC_PREFIX + k] - v) for k, v in out.metrics.items()), default=0.0)
        worst = max(worst, diff(l_v, l_o), diff(g_v, g_o), d_m)
        l_d, g_d, _ = our_loss(default_rule, old, logp, adv, mask, agg, norm_constant=scale)
        params_matter |= diff(l_d, l_o) > 1e-6 or diff(g_d, g_o) > 1e-6
        n_kept += int((out.kept & mask & (adv != 0)).sum())
        parts.append(f"{agg}: loss {float(l_o):+.4f}")
    ok = worst < TOL and n_kept > 0 and (params_matter or not params)
    return {"ok": ok, "max_diff": worst,
            "detail": f"params {params} (change the result: {params_matter}); kept tokens {n_kept}; "
                      + ", ".join(parts)}


def check_loss_fn_inputs(_: str) -> dict:
    """The plugin's loss under verl's other call shapes: an OmegaConf config instead of the dataclass,
    rollout IS weights (multiply the per-token loss, as verl's losses do), and a top-K default refused."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from cppo.integrations.verl import CPPOPolicyLossConfig
    from cppo.rules import PolicyBatch, aggregate_loss, get_rule

    params = {"divergence": "binary_tv", "delta": 0.2}
    old, logp, adv, mask = make_inputs(40, 0.35)
    dc = actor_config(CPPOPolicyLossConfig(loss_mode="cppo_dppo", rule_params=params))
    oc = OmegaConf.create({"policy_loss": {"loss_mode": "cppo_dppo", "rule_params": params},
                           "global_batch_info": {}, "loss_scale_factor": None})
    l_dc, g_dc, _ = verl_loss("cppo_dppo", dc, old, logp, adv, mask, "token-mean")
    l_oc, g_oc, _ = verl_loss("cppo_dppo", oc, old, logp, adv, mask, "token-mean")
    worst = max(diff(l_dc, l_oc), diff(g_dc, g_oc))
    w = torch.rand(old.shape, generator=torch.Generator().manual_seed(41), dtype=torch.float64)
    lp = logp.clone().requires_grad_(True)
    l_w, _ = get_policy_loss_fn("cppo_dppo")(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask,
                                             loss_agg_mode="seq-mean-token-sum", config=dc, rollout_is_weights=w)
    out = get_rule("dppo", **params)(PolicyBatch(logp=logp, old_logp=old, rollout_logp=old, advantages=adv, mask=mask))
    worst = max(worst, diff(l_w, aggregate_loss(out.loss * w, mask, "seq-mean-token-sum")))
    refused = False
    try:
        verl_loss("cppo", actor_config(CPPOPolicyLossConfig(loss_mode="cppo")), old, logp, adv, mask, "token-mean")
    except ValueError as e:
        refused = "top-K" in str(e)
    return {"ok": worst < TOL and refused, "max_diff": worst,
            "detail": f"OmegaConf config and IS weights: max diff {worst:.2e}; top-K default refused: {refused}"}


def check_ppo_loss_path(agg: str) -> dict:
    """Our `cppo` loss through verl's actor loss entry point, `verl.workers.utils.losses.ppo_loss`: log π as
    the model's flat (no-padding) output over prompt + response tokens, response tensors in a TensorDict,
    global batch info (dp_size, token and sequence counts) as verl's engine passes them."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from cppo.integrations.verl import METRIC_PREFIX, CPPOPolicyLossConfig
    from cppo.rules import PolicyBatch, aggregate_loss, get_rule

    params = {"divergence": "binary_tv", "delta": 0.2}
    scale = 16 if agg == "seq-mean-token-sum-norm" else None
    old, logp, adv, mask = make_inputs(50, 0.35, B=6, T=9)
    B, T = old.shape
    Lp = 4  # prompt tokens per sequence
    resp = mask.sum(1)  # (B,)
    ends = (Lp + resp).cumsum(0)  # (B,) end offsets of the packed sequences
    starts = [int(ends[b] - resp[b] - 1) for b in range(B)]  # log π of response token t sits at start + t
    flat = torch.zeros(int(ends[-1]), dtype=torch.float64)
    for b in range(B):
        flat[starts[b]:starts[b] + int(resp[b])] = logp[b, :int(resp[b])]
    flat.requires_grad_(True)
    data = TensorDict({"prompts": torch.ones(B, Lp, dtype=torch.long), "responses": torch.ones(B, T, dtype=torch.long),
                       "attention_mask": torch.cat([torch.ones(B, Lp, dtype=torch.long), mask.long()], 1),
                       "response_mask": mask.long(), "old_log_probs": old, "advantages": adv}, batch_size=[B])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=B)
    cfg = actor_config(CPPOPolicyLossConfig(loss_mode="cppo", rule_params=params), loss_agg_mode=agg,
                       loss_scale_factor=scale)
    l_v, metrics = ppo_loss(cfg, {"log_probs": flat}, data)
    l_v.backward()
    g_v = torch.zeros_like(logp)
    for b in range(B):
        g_v[b, :int(resp[b])] = flat.grad[starts[b]:starts[b] + int(resp[b])]
    l_o, g_o, out = our_loss(get_rule("cppo", **params), old, logp, adv, mask, agg, norm_constant=scale)
    worst = max(diff(l_v, l_o), diff(g_v, torch.where(mask, g_o, 0.0)))
    have = all(METRIC_PREFIX + k in metrics for k in out.metrics)
    return {"ok": worst < TOL and have, "max_diff": worst,
            "detail": f"ppo_loss vs direct: max diff {worst:.2e}; rule metrics present: {have}"}


def check_data_parallel(agg: str) -> dict:
    """Two data-parallel ranks: with verl's global batch info (dp_size, global token and sequence counts)
    in the config, the mean over ranks of the plugin's losses (what DDP/FSDP gradient averaging does)
    equals the one-process loss of the whole batch, for value and gradient. Ranks get unequal token
    counts, so a per-rank normalisation would fail this."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from cppo.integrations.verl import CPPOPolicyLossConfig

    params = {"divergence": "binary_tv", "delta": 0.2}
    scale = 16 if agg == "seq-mean-token-sum-norm" else None
    old, logp, adv, mask = make_inputs(60, 0.35)
    fn = get_policy_loss_fn("cppo")
    whole = actor_config(CPPOPolicyLossConfig(loss_mode="cppo", rule_params=params), loss_scale_factor=scale)
    l_all, g_all, _ = verl_loss("cppo", whole, old, logp, adv, mask, agg)
    lp = logp.clone().requires_grad_(True)
    cut = 10  # rank 0: rows [0, 10), rank 1: the rest
    total = 0.0
    for rows in (slice(0, cut), slice(cut, None)):
        cfg = actor_config(CPPOPolicyLossConfig(loss_mode="cppo", rule_params=params), loss_scale_factor=scale)
        cfg.global_batch_info.update(dp_size=2, batch_num_tokens=int(mask.sum()), global_batch_size=mask.shape[0],
                                     loss_scale_factor=scale)
        loss, _ = fn(old_log_prob=old[rows], log_prob=lp[rows], advantages=adv[rows], response_mask=mask[rows],
                     loss_agg_mode=agg, config=cfg, rollout_is_weights=None)
        total = total + loss / 2  # DDP averages the ranks' gradients
    total.backward()
    worst = max(diff(total, l_all), diff(lp.grad, g_all))
    return {"ok": worst < TOL, "max_diff": worst, "detail": f"mean over 2 ranks vs whole batch: max diff {worst:.2e}"}


# verl loss_mode -> (our rule, its parameters, verl actor settings, verl policy_loss settings, our aggregation
# when verl ignores loss_agg_mode (None: the same mode), loss values compared on every batch (False: on an
# in-band batch only, where the rule drops nothing: its contract zeroes the loss verl keeps as a constant))
VERL_LOSSES: dict[str, tuple] = {
    "dppo_kl": ("dppo", {"divergence": "binary_kl", "anchor": "old", "delta": 0.05, "delta_low": 0.05,
                         "delta_high": 0.1, "trunc_cap": 20.0},
                {"clip_ratio": 0.05, "clip_ratio_low": 0.05, "clip_ratio_high": 0.1, "clip_ratio_c": 20.0}, {}, None, True),
    "gspo": ("gspo", {"eps_low": 3e-4, "eps_high": 4e-4}, {"clip_ratio_low": 3e-4, "clip_ratio_high": 4e-4}, {},
             None, False),
    "cispo": ("cispo", {"eps_low": 0.2, "eps_high": 0.28, "anchor": "old"},
              {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}, {}, None, True),
    "sapo": ("sapo", {"tau_pos": 1.0, "tau_neg": 1.05}, {"tau_pos": 1.0, "tau_neg": 1.05}, {}, "seq-mean-token-mean",
             False),
    "gpg": ("gpg", {}, {}, {}, None, True),
    "clip_cov": ("clip_cov", {"clip_cov_ratio": 0.02, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0, "seed": 7},
                 {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2},
                 {"clip_cov_ratio": 0.02, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0}, None, False),
    "kl_cov": ("kl_cov", {"kl_cov_ratio": 0.02, "ppo_kl_coef": 0.1}, {}, {"kl_cov_ratio": 0.02, "ppo_kl_coef": 0.1},
               None, True),
    "geo_mean": ("geo_mean", {"eps_low": 0.2, "eps_high": 0.2}, {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2}, {},
                 "seq-mean-token-mean", False),
    # β = 1 (the rule's default is 0.05) so that tokens past the penalty's stopping point ℓ = Â/β occur
    "dro": ("dro", {"beta": 1.0}, {}, {"dro_beta": 1.0}, None, True),
}


def check_verl_loss(job: tuple[str, str]) -> dict:
    from verl.workers.config import PolicyLossConfig

    from cppo.rules import get_rule

    mode, agg = job
    rule_name, params, actor_kw, loss_kw, our_agg, all_values = VERL_LOSSES[mode]
    rule = get_rule(rule_name, **params)
    cfg = actor_config(PolicyLossConfig(loss_mode=mode, **loss_kw), **actor_kw)
    seed = params.get("seed")

    def both(old, logp, adv, mask):
        if seed is not None:
            torch.manual_seed(seed)  # verl's draw uses the global generator; ours a private one seeded alike
        lv = verl_loss(mode, cfg, old, logp, adv, mask, agg)
        return lv, our_loss(rule, old, logp, adv, mask, our_agg or agg)

    d_grad, d_val, n_limited = 0.0, 0.0, 0
    for i, spread in enumerate((0.3, 1.0, 0.6)):  # wide batches: the rule limits tokens
        old, logp, adv, mask = make_inputs(70 + i, spread)
        (l_v, g_v, _), (l_o, g_o, out) = both(old, logp, adv, mask)
        d_grad = max(d_grad, diff(g_v, g_o))
        if all_values:
            d_val = max(d_val, diff(l_v, l_o))
        limited = out.limited if out.limited is not None else mask & ~out.kept
        n_limited += int((mask & (adv != 0) & (limited | ~out.kept)).sum())
    old, logp, adv, mask = make_inputs(73, 3e-5)  # in band: no ratio leaves any clip range
    (l_v, g_v, _), (l_o, g_o, out) = both(old, logp, adv, mask)
    d_val, d_grad = max(d_val, diff(l_v, l_o)), max(d_grad, diff(g_v, g_o))
    ok = d_grad < TOL and d_val < TOL and (n_limited > 0 or rule_name == "gpg")
    ours = f"{rule_name}({', '.join(f'{k}={v}' for k, v in params.items())}), {our_agg or agg}"
    return {"ok": ok, "max_diff": max(d_grad, d_val),
            "detail": f"verl {mode} vs {ours}: grad diff {d_grad:.2e}, value diff {d_val:.2e} "
                      f"({'every batch' if all_values else 'in-band batch'}); limited tokens exercised {n_limited}"}


# rollout-correction settings (verl's option names) checked against verl; thresholds chosen so that each
# option rejects some tokens but not all on the test inputs (log π_old − log μ ~ N(0, 0.3²) per token)
ROLLOUT_CORR_CASES: dict[str, dict] = {
    "is_token_tis": {"rollout_is": "token", "rollout_is_threshold": 1.5},
    "is_sequence_tis": {"rollout_is": "sequence", "rollout_is_threshold": 3.0},
    "is_token_icepop": {"rollout_is": "token", "rollout_is_threshold": "0.7_1.4"},
    "is_sequence_icepop": {"rollout_is": "sequence", "rollout_is_threshold": "0.3_3.0"},
    "is_token_tis_normalized": {"rollout_is": "token", "rollout_is_threshold": 1.5, "rollout_is_batch_normalize": True},
    "is_sequence_tis_normalized": {"rollout_is": "sequence", "rollout_is_threshold": 3.0,
                                   "rollout_is_batch_normalize": True},
    "rs_token_k1": {"rollout_rs": "token_k1", "rollout_rs_threshold": "0.7_1.6"},
    "rs_token_k2": {"rollout_rs": "token_k2", "rollout_rs_threshold": 0.05},
    "rs_token_k3": {"rollout_rs": "token_k3", "rollout_rs_threshold": 0.05},
    "rs_seq_sum_k1": {"rollout_rs": "seq_sum_k1", "rollout_rs_threshold": "0.5_3.0"},
    "rs_seq_sum_k2": {"rollout_rs": "seq_sum_k2", "rollout_rs_threshold": 0.4},
    "rs_seq_sum_k3": {"rollout_rs": "seq_sum_k3", "rollout_rs_threshold": 0.4},
    "rs_seq_mean_k1": {"rollout_rs": "seq_mean_k1", "rollout_rs_threshold": "0.9_1.2"},
    "rs_seq_mean_k2": {"rollout_rs": "seq_mean_k2", "rollout_rs_threshold": 0.04},
    "rs_seq_mean_k3": {"rollout_rs": "seq_mean_k3", "rollout_rs_threshold": 0.04},
    "rs_seq_max_k2": {"rollout_rs": "seq_max_k2", "rollout_rs_threshold": 0.15},
    "rs_seq_max_k3": {"rollout_rs": "seq_max_k3", "rollout_rs_threshold": 0.15},
    "is_and_rs_chained": {"rollout_is": "sequence", "rollout_is_threshold": "0.3_3.0",
                          "rollout_rs": "token_k3,seq_mean_k2", "rollout_rs_threshold": "0.2,0.06"},
}
# verl's masked means add 1e-8 to their denominators: the ESS and batch-normalised weights agree to ~1e-8
# (relative), everything else to rounding (TOL)
TOL_METRIC = 1e-7


def _rollout_inputs(seed: int):
    """(π_old, μ, mask) with log π_old − log μ ~ N(0, 0.3²) per token, no empty row."""
    mu, old, _, mask = make_inputs(seed, 0.3)
    return old, mu, mask


def _verl_correction(old, mu, mask, opts: dict):
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_rejection_mask

    kw = {"rollout_is": None, **opts}
    proto, new_mask, metrics = compute_rollout_correction_and_rejection_mask(
        old_log_prob=old, rollout_log_prob=mu, response_mask=mask.to(old.dtype), **kw)
    w = None if proto is None else proto.batch["rollout_is_weights"]
    return w, new_mask > 0.5, {k.removeprefix("rollout_corr/"): v for k, v in metrics.items()}


def check_rollout_correction(case: str) -> dict:
    from cppo.rules.rollout_correction import parse, rollout_correction

    opts = ROLLOUT_CORR_CASES[case]
    d_w, d_m, same_mask, n_rej, n_clip, n_tok, compared = 0.0, 0.0, True, 0, 0.0, 0, set()
    for seed in (80, 81):
        old, mu, mask = _rollout_inputs(seed)
        w_v, mask_v, m_v = _verl_correction(old, mu, mask, opts)
        out = rollout_correction(old, mu, mask, parse(**opts))
        same_mask &= bool(torch.equal(out.mask, mask_v))
        if (w_v is None) != (out.weights is None):
            return {"ok": False, "max_diff": None, "detail": "IS weights present in one implementation only"}
        if w_v is not None:
            d_w = max(d_w, diff(w_v, out.weights))
        pairs = {"rejected_frac": "rollout_rs_masked_fraction", "rejected_seq_frac": "rollout_rs_seq_masked_fraction",
                 "is_mean": "rollout_is_mean", "is_ess": "rollout_is_eff_sample_size"}
        if "_" in str(opts.get("rollout_is_threshold", "")):
            pairs["is_clipped_frac"] = "rollout_is_oob_ratio"
        elif opts.get("rollout_is") == "token":
            pairs["is_clipped_frac"] = "rollout_is_ratio_fraction_high"
        for ours, theirs in pairs.items():
            if theirs in m_v:
                d_m = max(d_m, abs(out.metrics[ours] - m_v[theirs]))
                compared.add(ours)
        n_rej += int((mask & ~out.mask).sum())
        n_tok += int(mask.sum())
        n_clip += out.metrics["is_clipped_frac"]
    exercised = (0 < n_rej < n_tok) if "rollout_rs" in opts else n_clip > 0
    ok = same_mask and d_w < (TOL_METRIC if opts.get("rollout_is_batch_normalize") else TOL) and d_m < TOL_METRIC \
        and exercised
    return {"ok": ok, "max_diff": max(d_w, d_m),
            "detail": f"{opts}: weights diff {d_w:.2e}, same mask {same_mask}, metrics {sorted(compared)} diff "
                      f"{d_m:.2e}; rejected {n_rej}/{n_tok} tokens, clipped-weight fraction {n_clip / 2:.3f}"}


def check_rollout_correction_applied(_: str) -> dict:
    """The trainer's composition: rejection shrinks the mask the rule and the aggregation see, the weights
    multiply the rule's per-token loss. verl's dppo_tv given the corrected mask and `rollout_is_weights`
    == our dppo (binary TV, anchor old) on the corrected batch, loss times the weights, in every mode."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import PolicyLossConfig

    from cppo.rules import PolicyBatch, aggregate_loss, get_rule
    from cppo.rules.rollout_correction import parse, rollout_correction

    opts = ROLLOUT_CORR_CASES["is_and_rs_chained"]
    rule = get_rule("dppo", divergence="binary_tv", anchor="old", delta=0.15, trunc_cap=20.0)
    cfg = actor_config(PolicyLossConfig(loss_mode="dppo_tv"), clip_ratio=0.15, clip_ratio_low=0.15,
                       clip_ratio_high=0.15, clip_ratio_c=20.0)
    old, mu, mask = _rollout_inputs(82)
    _, logp, adv, _ = make_inputs(82, 0.3)
    logp = (old + 0.2 * torch.randn(old.shape, generator=torch.Generator().manual_seed(83), dtype=old.dtype)).clamp(max=-1e-6)
    w_v, mask_v, _ = _verl_correction(old, mu, mask, opts)
    corr = rollout_correction(old, mu, mask, parse(**opts))
    worst = 0.0
    for agg in AGG_MODES:
        lp = logp.clone().requires_grad_(True)
        l_v, _ = get_policy_loss_fn("dppo_tv")(old_log_prob=old, log_prob=lp, advantages=adv,
                                                response_mask=mask_v.to(old.dtype), loss_agg_mode=agg, config=cfg,
                                                rollout_is_weights=w_v)
        l_v.backward()
        lo = logp.clone().requires_grad_(True)
        out = rule(PolicyBatch(logp=lo, old_logp=old, rollout_logp=old, advantages=adv, mask=corr.mask))
        l_o = aggregate_loss(out.loss * corr.weights, corr.mask, agg)
        l_o.backward()
        worst = max(worst, diff(l_v, l_o), diff(lp.grad, lo.grad))
    n_rej = int((mask & ~corr.mask).sum())
    return {"ok": worst < TOL and n_rej > 0, "max_diff": worst,
            "detail": f"dppo_tv with verl's corrected mask and weights vs ours ({opts}), every mode: max diff "
                      f"{worst:.2e}; rejected tokens {n_rej}"}


def run_all() -> dict:
    import verl
    import verl.trainer.ppo.core_algos as core_algos

    # before importing cppo.integrations.verl ourselves: what did verl's plugin discovery register?
    discovered = sorted(k for k in core_algos.POLICY_LOSS_REGISTRY if k == "cppo" or k.startswith("cppo_"))

    from cppo.integrations.verl import verl_loss_name
    from cppo.rules import list_rules

    rules = list_rules()
    checks: dict[str, dict] = {}
    expected = sorted(verl_loss_name(r) for r in rules)
    checks["discovery"] = {"ok": discovered == expected, "max_diff": 0.0,
                           "detail": f"registered by entry point: {discovered}; expected {expected}"}
    jobs = [(f"ppo_clip/{a}", check_ppo_clip, a) for a in AGG_MODES]
    jobs += [(f"dppo/{a}", check_dppo, a) for a in AGG_MODES]
    jobs += [(f"registry/{r}", check_registry, r) for r in rules]
    jobs += [("loss_fn_inputs", check_loss_fn_inputs, "")]
    jobs += [(f"ppo_loss_path/{a}", check_ppo_loss_path, a) for a in AGG_MODES]
    jobs += [(f"data_parallel/{a}", check_data_parallel, a) for a in AGG_MODES]
    jobs += [(f"verl/{m}/{a}", check_verl_loss, (m, a)) for m in VERL_LOSSES for a in AGG_MODES]
    jobs += [(f"rollout_corr/{c}", check_rollout_correction, c) for c in ROLLOUT_CORR_CASES]
    jobs += [("rollout_corr/applied", check_rollout_correction_applied, "")]
    for name, fn, arg in jobs:
        try:
            checks[name] = fn(arg)
        except Exception as e:  # one broken rule must not hide the others
            checks[name] = {"ok": False, "max_diff": None,
                            "detail": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"}
    return {"verl_version": verl.__version__, "torch_version": torch.__version__, "discovered": discovered,
            "checks": checks}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the JSON result to this file")
    args = ap.parse_args()
    res = run_all()
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0 if all(c["ok"] for c in res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
