"""Trust-region rules for RL fine-tuning of language models: CPPO and the baselines, one contract.

    from cppo.rules import PolicyBatch, get_rule, aggregate_loss
    rule = get_rule("cppo", delta=0.15, delta_b=0.02, w_min=0.8)
    out = rule(PolicyBatch(logp=..., old_logp=..., rollout_logp=..., advantages=..., mask=...))
    loss = aggregate_loss(out.loss, batch.mask, "seq-mean-token-sum-norm", norm_constant=max_len)

See the README's "Rules" section for the list of rules and how to add one.
"""

from cppo.rules.aggregation import AGG_MODES, aggregate_loss
from cppo.rules.registry import Rule, RuleSpec, get_rule, list_rules, register_rule, rule_param_defaults
from cppo.rules.types import PolicyBatch, RuleOutput

__all__ = [
    "AGG_MODES", "PolicyBatch", "Rule", "RuleOutput", "RuleSpec", "aggregate_loss", "get_rule", "list_rules",
    "register_rule", "rule_param_defaults",
]
