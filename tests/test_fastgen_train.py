"""`cppo train` end to end with the `hf_fast` engine, a top-K rule, a few steps on a tiny model: rollouts
with no lag (the engine samples with the trainer's model) and lagged ones (a private copy synced from state dicts)."""

from __future__ import annotations

import json
import math

import pytest

import cppo.train.fastgen  # noqa: F401  (registers the hf_fast engine)
from cppo.cli import main
from cppo.models import build_model, build_tokenizer, save_checkpoint
from cppo.tasks.chain import ChainTask

REPO_CONFIG = "config/tiny.yaml"


@pytest.mark.parametrize("setting", ["upd8", "upd8_lag1"])
def test_train_runs_with_hf_fast_engine(setting, tmp_path, monkeypatch):
    from pathlib import Path

    tok = build_tokenizer()
    save_checkpoint(build_model("xs", tok, seed=0), tok, tmp_path / "init")
    # a random model never solves the chain task; reward odd-length responses instead, so that groups have
    # reward variance and the run really updates the policy from hf_fast batches
    monkeypatch.setattr(ChainTask, "rewards", lambda self, responses, answers, stopped=None:
                        [float(len(r) % 2) for r in responses])
    run = tmp_path / "run"
    config = str(Path(__file__).resolve().parents[1] / REPO_CONFIG)
    rc = main(["train", config, "--method", "dppo", "--scale", "s", "--seed", "1", "--setting", setting,
               "--steps", "3", "--run-dir", str(run), "--init", str(tmp_path / "init"), "--no-mlflow",
               "--no-progress", "--set", "rl.engine=hf_fast", "--set", "methods.dppo.divergence=topk_tv",
               "--set", "rl.eval_every=1000", "--set", "rl.eval_n=4"])
    assert rc == 0 and (run / "done").exists()
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [s for s in steps if "train/updates" in s]
    assert [s["step"] for s in train] == [1, 2, 3]
    assert train[-1]["train/updates"] > 0  # the rule saw hf_fast batches and the optimizer stepped
    rule = {k: v for s in train for k, v in s.items() if k.startswith("rule/")}
    assert "rule/div_mean" in rule and all(math.isfinite(v) for v in rule.values())
    k3_old_mu = [s["rule/k3_old_mu"] for s in train if "rule/k3_old_mu" in s]
    if setting == "upd8":  # no lag: mu (hf_fast's log-probs) = pi_old (the trainer's forward) up to float32 noise
        assert max(k3_old_mu) < 1e-8
    else:  # rollouts from the weights of one rollout ago: mu != pi_old once the policy has moved
        assert max(k3_old_mu) > 1e-7
