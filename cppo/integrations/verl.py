"""Every registered trust-region rule as a verl policy loss (verl==0.9.1).

What: for each rule `r` of `cppo.rules.list_rules()`, a function with verl's policy-loss signature
(`verl.trainer.ppo.core_algos.PolicyLossFn`)

    fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights)
        -> (scalar loss, metrics)

registered with `@register_policy_loss(verl_loss_name(r))`, so that a verl run selects it with
`actor_rollout_ref.actor.policy_loss.loss_mode=<name>`. Names: `cppo` for CPPO itself and
`cppo_<rule>` for the others (`cppo_ppo_clip`, `cppo_dppo`, `cppo_trm_max`, ...); the prefix keeps them
apart from verl's own `dppo_tv`, `gspo`, `cispo`.

Why the rule is not re-implemented here: the per-token loss and mask come from the same
`cppo.rules` code the built-in trainer uses; only aggregation is verl's (`agg_loss` with
`config.global_batch_info`), because under data parallelism only verl knows the global token and
sequence counts. On one process the two aggregations agree (tests/verl_parity/check.py).

Rule parameters travel in `policy_loss.rule_params`, a field of `CPPOPolicyLossConfig` (a subclass of
verl's `PolicyLossConfig`); select it with `policy_loss._target_=cppo.integrations.verl.CPPOPolicyLossConfig`
(the command generator `cppo verl-cmd` writes both overrides).

What verl hands a policy loss, and what that means for the rules:
- Only sampled-token log-probs: verl records no top-K of the rollout policy μ, so top-K divergences
  (`topk_tv`, `topk_kl`) cannot run under verl; asking for one raises ValueError. Use `binary_tv` /
  `binary_kl` (`cppo verl-cmd` substitutes them and says so).
- One reference log-prob, `old_log_prob`. In verl's rollout-correction *bypass* mode
  (`algorithm.rollout_correction.bypass_mode=true`) it is the rollout engine's log-prob, i.e. μ, which is
  the anchor CPPO and DPPO are defined with; otherwise it is the recomputed π_old. The rule sees it as
  both `old_logp` and `rollout_logp`, so the `anchor` parameter makes no difference here and the
  `k3_old_mu` diagnostic is 0.
- `rollout_is_weights` (when verl computes them) multiply the per-token loss, as verl's losses do.

Metrics: the shared diagnostics under `rule/<name>` (the names the built-in trainer logs), plus
verl's usual `actor/pg_clipfrac` (= masked_frac) and `actor/ppo_kl`.

Plugin discovery: verl 0.9.1's `verl/__init__.py` loads every entry point of the group `verl.plugins`
(pyproject: `cppo = "cppo.integrations.verl:register_all"`). Loading only *imports* this module and
fetches `register_all`, it does not call it, so the module registers the losses on import whenever
verl is already being imported. verl swallows plugin errors (debug log); if `loss_mode=cppo` is
"Unsupported", run `python -c "import verl, cppo.integrations.verl"` to see the error.

Importing `cppo` never imports verl; this module imports it only inside `register_all()` and when
`CPPOPolicyLossConfig` is first accessed.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

VERL_VERSION = "0.9.1"
"""The verl release this integration is written and tested against."""
CONFIG_TARGET = "cppo.integrations.verl.CPPOPolicyLossConfig"
"""Hydra `_target_` of the policy-loss config class carrying `rule_params`."""
METRIC_PREFIX = "rule/"
"""Prefix of the shared rule diagnostics in verl's metrics: the same names as the built-in trainer logs."""
_NAME_PREFIX = "cppo_"


def verl_loss_name(rule: str) -> str:
    """The name rule `rule` is registered under in verl's POLICY_LOSS_REGISTRY (`cppo` or `cppo_<rule>`)."""
    return "cppo" if rule == "cppo" else _NAME_PREFIX + rule


def rule_from_verl_name(name: str) -> str:
    """Inverse of `verl_loss_name`; ValueError for a name that is not one of ours."""
    if name == "cppo":
        return "cppo"
    if name.startswith(_NAME_PREFIX) and len(name) > len(_NAME_PREFIX):
        return name[len(_NAME_PREFIX):]
    raise ValueError(f"{name!r} is not a cppo-bench verl loss name (expected 'cppo' or 'cppo_<rule>')")


def _import_verl():
    try:
        from verl.trainer.ppo import core_algos
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the verl integration needs verl=={VERL_VERSION} (pip install 'cppo-bench[verl]', or "
            f"scripts/bootstrap-verl for a CPU test environment); importing it failed: {e}") from e
    return core_algos


def _plain(obj: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (rule parameters must be plain values)."""
    if obj is None:
        return {}
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(obj)


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """`cfg.key` for dataclass configs (verl BaseConfig), DictConfigs and dicts alike."""
    if cfg is None:
        return default
    if hasattr(cfg, "get"):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


_RULE_CACHE: dict[tuple, Any] = {}


def _configured_rule(name: str, params: dict[str, Any]):
    """get_rule(name, **params), cached on the parameter values (the loss runs once per micro-batch)."""
    from cppo.rules import get_rule

    key = (name, tuple(sorted((k, repr(v)) for k, v in params.items())))
    rule = _RULE_CACHE.get(key)
    if rule is None:
        rule = get_rule(name, **params)
        if rule.needs_topk:
            raise ValueError(
                f"rule {name!r} with {rule.params} uses a top-K divergence, which verl cannot feed (it records no "
                "top-K log-probs of the rollout policy); set rule_params.divergence to binary_tv or binary_kl")
        _RULE_CACHE[key] = rule
    return rule


def make_policy_loss(rule_name: str) -> Callable:
    """A verl policy-loss function (PolicyLossFn signature) running rule `rule_name` of `cppo.rules`."""

    def policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode: str = "token-mean",
                    config=None, rollout_is_weights=None):
        import torch

        from cppo.rules import PolicyBatch

        core_algos = _import_verl()
        policy_cfg = _cfg_get(config, "policy_loss")
        params = _plain(_cfg_get(policy_cfg, "rule_params", None))
        rule = _configured_rule(rule_name, params)
        mask = response_mask.bool()  # (B, T)
        # verl gives one reference log-prob: μ in bypass mode, π_old otherwise (see module docstring)
        ref = old_log_prob.detach()  # (B, T)
        out = rule(PolicyBatch(logp=log_prob, old_logp=ref, rollout_logp=ref, advantages=advantages, mask=mask))
        loss_mat = out.loss  # (B, T), zero where not kept or padded
        if rollout_is_weights is not None:
            loss_mat = loss_mat * rollout_is_weights
        batch_info = dict(_cfg_get(config, "global_batch_info", None) or {})
        if batch_info.get("loss_scale_factor") is None and _cfg_get(config, "loss_scale_factor") is not None:
            batch_info["loss_scale_factor"] = _cfg_get(config, "loss_scale_factor")
        pg_loss = core_algos.agg_loss(loss_mat=loss_mat.to(log_prob.dtype), loss_mask=mask,
                                      loss_agg_mode=loss_agg_mode, **batch_info)
        with torch.no_grad():
            n = mask.sum().clamp_min(1)
            ppo_kl = ((ref - log_prob.detach()) * mask).sum() / n
        metrics = {METRIC_PREFIX + k: float(v) for k, v in out.metrics.items()}
        metrics["actor/pg_clipfrac"] = float(out.metrics.get("masked_frac", 0.0))
        metrics["actor/ppo_kl"] = float(ppo_kl)
        return pg_loss, metrics

    policy_loss.__name__ = f"compute_policy_loss_{verl_loss_name(rule_name)}"
    policy_loss.__qualname__ = policy_loss.__name__
    policy_loss.__doc__ = f"verl policy loss running cppo-bench rule {rule_name!r} (see cppo.integrations.verl)."
    return policy_loss


def register_all(rules: Optional[list[str]] = None) -> dict[str, str]:
    """Register rules (default: all of `list_rules()`) in verl's policy-loss registry. Idempotent.

    Returns:
        verl loss name -> rule name, for the rules registered.
    """
    from cppo.rules import list_rules

    core_algos = _import_verl()
    names = list_rules() if rules is None else list(rules)
    done = {}
    for rule in names:
        vname = verl_loss_name(rule)
        existing = core_algos.POLICY_LOSS_REGISTRY.get(vname)
        if existing is None or getattr(existing, "cppo_rule", None) != rule:
            fn = make_policy_loss(rule)
            fn.cppo_rule = rule
            core_algos.register_policy_loss(vname)(fn)
        done[vname] = rule
    return done


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None,
                  **kwargs: Any) -> float:
    """verl reward function (`reward.custom_reward_function`): 1.0 iff the last \\boxed{} of the response
    is equivalent to the ground truth under math-verify (`evals.scoring.is_correct`), else 0.0.

    The same check as the built-in math task and `cppo eval`, so training reward and evaluation agree.
    `cppo verl-cmd` points verl at it with `path=pkg://cppo.integrations.verl`, `name=compute_score`.
    """
    from evals.scoring import is_correct

    return 1.0 if is_correct(str(solution_str), str(ground_truth)) else 0.0


_CONFIG_CLS = None


def _config_class():
    """Build (once) the PolicyLossConfig subclass; needs verl, hence built lazily."""
    global _CONFIG_CLS
    if _CONFIG_CLS is None:
        from dataclasses import dataclass, field

        _import_verl()
        from verl.workers.config import PolicyLossConfig

        @dataclass
        class CPPOPolicyLossConfig(PolicyLossConfig):
            """verl's PolicyLossConfig plus the parameters of the cppo-bench rule named by `loss_mode`.

            Args:
                rule_params: keyword arguments of `cppo.rules.get_rule(<rule>, **rule_params)`, e.g.
                    {delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv}; unknown keys raise
                    ValueError on the first loss call, naming the valid ones.
            """

            rule_params: dict = field(default_factory=dict)

        CPPOPolicyLossConfig.__module__ = __name__
        CPPOPolicyLossConfig.__qualname__ = "CPPOPolicyLossConfig"
        _CONFIG_CLS = CPPOPolicyLossConfig
    return _CONFIG_CLS


def __getattr__(name: str):
    # PEP 562: `CPPOPolicyLossConfig` is created on first access (Hydra's _target_ lookup), so that
    # importing this module does not import verl.
    if name == "CPPOPolicyLossConfig":
        return _config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# verl's plugin loader imports this module while `verl` is being imported and never calls
# register_all(), so register here; without verl loaded, importing this module stays verl-free.
if "verl" in sys.modules:
    register_all()
