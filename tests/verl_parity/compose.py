"""Compose generated verl overrides with verl 0.9.1's real Hydra config, inside .venv-verl.

    .venv-verl/bin/python tests/verl_parity/compose.py < commands.json

stdin: {"<name>": [override, ...], ...} (the overrides of `cppo verl-cmd`, without the entry point).
stdout: {"<name>": {"ok": bool, "error": str | None, ...facts read back from the composed config}}.

For each command this does what `python -m verl.trainer.main_ppo` does before it needs GPUs: compose
`ppo_trainer` with the overrides (Hydra rejects unknown keys and bad syntax), resolve the config, build
the actor config dataclass the way verl's workers do (`omega_conf_to_dataclass`, Hydra `_target_`s, so
our CPPOPolicyLossConfig is instantiated), then build the rule from `rule_params` and look its loss up
in verl's registry. The facts returned let the main-suite test compare what verl will see with Table 3.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def compose_one(overrides: list[str]) -> dict:
    from hydra import compose
    from omegaconf import OmegaConf

    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.utils.config import omega_conf_to_dataclass

    from cppo.integrations.verl import rule_from_verl_name
    from cppo.rules import get_rule

    cfg = compose(config_name="ppo_trainer", overrides=overrides)
    OmegaConf.resolve(cfg)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    pl = actor.policy_loss
    rule_name = rule_from_verl_name(pl.loss_mode)
    rule = get_rule(rule_name, **dict(pl.rule_params))
    get_policy_loss_fn(pl.loss_mode)
    r = cfg.actor_rollout_ref.rollout
    return {
        "ok": True, "error": None,
        "policy_loss_class": type(pl).__name__, "loss_mode": pl.loss_mode, "rule": rule.name,
        "rule_params": rule.params,
        "loss_agg_mode": actor.loss_agg_mode, "loss_scale_factor": actor.loss_scale_factor,
        "ppo_mini_batch_size": cfg.actor_rollout_ref.actor.ppo_mini_batch_size, "ppo_epochs": actor.ppo_epochs,
        "train_batch_size": cfg.data.train_batch_size, "n": r.n, "max_response_length": cfg.data.max_response_length,
        "max_prompt_length": cfg.data.max_prompt_length, "lr": actor.optim.lr, "clip_grad": actor.optim.clip_grad,
        "bypass_mode": cfg.algorithm.rollout_correction.bypass_mode, "calculate_log_probs": r.calculate_log_probs,
        "temperature": r.temperature, "top_p": r.top_p, "adv_estimator": cfg.algorithm.adv_estimator,
        "use_kl_loss": actor.use_kl_loss, "entropy_coeff": actor.entropy_coeff,
        "filter_groups": cfg.algorithm.filter_groups.enable, "logger": list(cfg.trainer.logger),
        "experiment_name": cfg.trainer.experiment_name, "project_name": cfg.trainer.project_name,
        "total_training_steps": cfg.trainer.total_training_steps, "save_freq": cfg.trainer.save_freq,
        "model_path": cfg.actor_rollout_ref.model.path, "seed": cfg.data.seed,
        "reward_fn": [cfg.reward.custom_reward_function.path, cfg.reward.custom_reward_function.name],
        "save_contents": list(actor.checkpoint.save_contents), "nnodes": cfg.trainer.nnodes,
        "val_files": list(cfg.data.val_files), "train_files": cfg.data.train_files,
    }


def main() -> int:
    from hydra import initialize_config_dir

    import verl

    commands = json.load(sys.stdin)
    out = {}
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):  # once: it is the slow part
        for name, overrides in commands.items():
            try:
                out[name] = compose_one(overrides)
            except Exception as e:  # report every command, not just the first failure
                out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"}
    json.dump(out, sys.stdout, indent=1, default=str)
    return 0 if all(v["ok"] for v in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
