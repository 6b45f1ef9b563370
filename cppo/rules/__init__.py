"""Trust-region rules for RL fine-tuning of language models: CPPO and the baselines, one contract.

    from cppo.rules import PolicyBatch, get_rule, aggregate_loss
    rule = get_rule("cppo", delta=0.15, delta_b=0.02, w_min=0.8)
    out = rule(PolicyBatch(logp=..., old_logp=..., rollout_logp=..., advantages=..., mask=...))
    loss = aggregate_loss(out.loss, batch.mask, "seq-mean-token-sum-norm", norm_constant=max_len)

See docs/rules.md for the list of rules and how to add one.
"""

from __future__ import annotations

import importlib

# exported name -> submodule; imported on first access (PEP 562) so that `list_rules()` (the schema
# check of the pipeline and the CLI) does not pay for importing torch
_EXPORTS = {
    "AGG_MODES": "aggregation", "aggregate_loss": "aggregation",
    "Rule": "registry", "RuleSpec": "registry", "get_rule": "registry", "list_rules": "registry",
    "register_rule": "registry", "rule_param_defaults": "registry",
    "PolicyBatch": "types", "RuleOutput": "types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
