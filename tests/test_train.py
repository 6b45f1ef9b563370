"""RL trainer: advantages, config resolution, determinism, SIGKILL + resume, PG equivalence, bad configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cppo.config import ConfigError, config_from_dict, load_config, resolve_run, resolve_sft
from cppo.rules.registry import builtin_rules
from cppo.train.advantages import group_advantages

REPO = Path(__file__).resolve().parents[1]

CFG = {
    "profile": "unit",
    "task": {"name": "chain", "K": 4, "modulus": 10, "max_operand": 3, "ood_K": 6},
    "scales": {"xs": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "intermediate_size": 128}},  # 80k params
    "sft": {"batch_size": 64, "lr": 3.0e-3, "warmup_steps": 10, "max_steps": 400, "eval_every": 10,
            "val_n": 128, "target_sampled_acc": 0.3},
    "rl": {"prompts_per_rollout": 4, "samples_per_prompt": 4, "updates_per_rollout": 2, "steps": 6,
           "max_new_tokens": 8, "eval_every": 3, "eval_n": 16, "save_every": 2, "lr": 1.0e-3},
    "settings": {"fresh": {"grad_clip": None, "staleness": 0}, "stale": {"grad_clip": 1.0, "staleness": 2}},
    "methods": {"grpo": {"rule": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28},
                "cppo": {"rule": "cppo", "delta": 0.15, "delta_b": 0.02, "w_min": 0.8, "divergence": "binary_tv"}},
    "grid": {"methods": ["grpo", "cppo"], "scales": ["xs"], "seeds": [1], "settings": ["fresh", "stale"]},
}


def write_cfg(tmp_path: Path, **changes) -> Path:
    cfg = json.loads(json.dumps(CFG))
    for k, v in changes.items():
        cfg[k] = v
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="session")
def base_ckpt(tmp_path_factory) -> Path:
    """A short SFT of the xs model on K=4 chains: a base with mixed rewards (so groups have variance)."""
    from cppo.train.sft import run_sft

    out = tmp_path_factory.mktemp("base") / "xs"
    cfg = config_from_dict(json.loads(json.dumps(CFG)))
    m = run_sft(cfg, "xs", resolve_sft(cfg, "xs"), out, progress=False)
    assert 0.05 < m["val_sampled_acc"] < 0.95, m
    return out


@pytest.fixture
def varied_rewards(monkeypatch):
    """Rewards 0, 1, 0, 1, ... within every group, whatever the responses: every rollout step updates.

    For tests of the update path (determinism, mini-batches, the non-finite guard, rungs), not of
    learning. With the task's own reward they depend on the base's accuracy, which moves with the
    host's float kernels: a base that solves nothing on the rollout leaves every group without reward
    variance, so nothing is updated and no `rule/*` or `train/grad_norm` is logged.
    """
    from cppo.tasks.chain import ChainTask

    monkeypatch.setattr(ChainTask, "rewards",
                        lambda self, responses, answers, stopped=None: [float(i % 2) for i in range(len(responses))])


def train(cfg_path: Path, run_dir: Path, base: Path, *extra: str, method: str = "grpo", mlflow: bool = False,
          seed: int = 3) -> int:
    from cppo.cli import main

    args = ["train", str(cfg_path), "--method", method, "--scale", "xs", "--seed", str(seed), "--run-dir", str(run_dir),
            "--init", str(base), "--no-progress", *extra]
    return main(args + ([] if mlflow else ["--no-mlflow"]))


# --------------------------------------------------------------------------- advantages
def test_group_advantages_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # two groups of 4
    adv, keep = group_advantages(r, 4, std_norm=False)
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    assert keep.tolist() == [True] * 4 + [False] * 4  # the all-ones group carries no signal
    adv, _ = group_advantages(r, 4, std_norm=True, eps=0.0)
    assert torch.allclose(adv[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]))  # population std = 0.5
    with pytest.raises(ValueError, match="G\\*n"):
        group_advantages(torch.zeros(7), 4)


# --------------------------------------------------------------------------- config
def test_resolve_settings_per_scale_and_overrides(tmp_path):
    p = write_cfg(tmp_path, rl={**CFG["rl"], "steps": {"xs": 9}})
    cfg = load_config(p, ["rl.lr=3e-4", "settings.stale.staleness=3"])
    run = resolve_run(cfg, "grpo", "xs", 1, "stale")
    assert run.rl.steps == 9 and run.rl.lr == 3e-4 and isinstance(run.rl.lr, float)
    assert run.rl.staleness == 3 and run.rl.grad_clip == 1.0
    assert run.method.rule == "ppo_clip" and run.method.params == {"eps_low": 0.2, "eps_high": 0.28}
    assert resolve_run(cfg, "grpo", "xs", 1, "stale", steps=2).rl.steps == 2
    # every registered rule is runnable by name, with its defaults
    from cppo.rules import list_rules

    for rule in list_rules():
        assert resolve_run(cfg, rule, "xs", 1).method.rule == rule
    d = run.to_dict()
    assert d["rl"]["staleness"] == 3 and d["method"]["name"] == "grpo"


@pytest.mark.parametrize("changes,overrides,match", [  # the profile schema (cppo.schema) speaks first
    ({}, ["rl.steps=-1"], "config key rl.steps: -1 is less than the minimum of 0"),
    ({}, ["rl.lr=0"], "config key rl.lr: 0 is less than or equal to the minimum of 0"),
    ({}, ["rl.loss_agg=mean"], "config key rl.loss_agg: 'mean' is not one of"),
    ({}, ["rl.bogus=1"], "unknown config key rl.bogus"),
    ({}, ["methods.grpo.eps_hgih=0.3"], "method 'grpo'"),
    ({}, ["rl.samples_per_prompt=1"], "group"),
    ({}, ["rl.lr=fast"], "config key rl.lr: 'fast' is not of type 'number'"),
    ({"grid": {**CFG["grid"], "seeds": [1, "two", 3]}}, [], r"config key grid.seeds.1: 'two' is not of type 'integer'"),
])
def test_bad_values_raise_clear_errors(tmp_path, changes, overrides, match):
    with pytest.raises(ConfigError, match=match):
        cfg = load_config(write_cfg(tmp_path, **changes), overrides)
        resolve_run(cfg, "grpo", "xs", 1)


def test_unknown_names(tmp_path):
    cfg = load_config(write_cfg(tmp_path))
    with pytest.raises(ConfigError, match="unknown method 'nope'.*registered rules"):
        resolve_run(cfg, "nope", "xs", 1)
    with pytest.raises(ConfigError, match="unknown scale"):
        resolve_run(cfg, "grpo", "xl", 1)
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_run(cfg, "grpo", "xs", 1, "async")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_tiny_profile_resolves_every_method_and_cell():
    cfg = load_config(REPO / "config" / "tiny.yaml")
    for method in cfg.methods:
        for scale in cfg.grid.scales:
            for setting in cfg.grid.settings:
                run = resolve_run(cfg, method, scale, 1, setting)
                assert run.rl.steps >= 1
    assert set(cfg.grid.methods) <= set(cfg.methods)


@pytest.mark.parametrize("argv,match", [
    (["--method", "nope"], "unknown method"),
    (["--method", "grpo", "--steps", "-3"], "rl.steps must be >= 0"),
    (["--method", "grpo", "--set", "methods.grpo.eps_low=-1"], "method 'grpo'"),
    (["--method", "grpo"], "base checkpoint of scale 'xs' not found"),  # no --init, no base
])
def test_bad_cli_call_stops_before_creating_the_run_folder(tmp_path, capsys, argv, match):
    from cppo.cli import main

    p = write_cfg(tmp_path, results_dir=str(tmp_path / "results"))
    run_dir = tmp_path / "run"
    rc = main(["train", str(p), "--scale", "xs", "--seed", "1", "--run-dir", str(run_dir), "--no-mlflow", *argv])
    assert rc == 2
    assert match in capsys.readouterr().err
    assert not run_dir.exists() and not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- runs
def test_same_seed_gives_identical_metrics(tmp_path, base_ckpt, varied_rewards):
    p = write_cfg(tmp_path)
    for name in ("a", "b"):
        assert train(p, tmp_path / name, base_ckpt, "--setting", "stale") == 0
    a = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert a == (tmp_path / "b" / "metrics.jsonl").read_text()
    recs = [json.loads(ln) for ln in a.splitlines()]
    assert [r["step"] for r in recs] == list(range(7))
    assert all(r["rollout/zero_var_frac"] == 0 for r in recs[1:])
    assert recs[-1]["train/updates"] == 6 * 2  # 2 mini-batches of whole groups per rollout
    assert "eval/chain_id/greedy_acc" in recs[0] and "eval/chain_id/sampled_acc" in recs[3]
    assert {"rule/masked_frac", "rule/div_mean", "train/grad_norm", "rollout/reward_mean"} <= set(recs[1])
    for f in ("config.yaml", "final/config.json", "final/model.safetensors", "position_profile.json", "done"):
        assert (tmp_path / "a" / f).exists(), f
    assert train(p, tmp_path / "c", base_ckpt, "--setting", "stale", seed=4) == 0
    assert (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[1:] != a.splitlines()[1:]  # seed matters
    prof = json.loads((tmp_path / "a" / "position_profile.json").read_text())
    assert prof["rule"] == "ppo_clip" and len(prof["div_mean"]) == 8 and sum(prof["tokens"]) > 0


SKIP_METHODS = {"pg_is": {"rule": "pg_is"}, "dppo": {"rule": "dppo", "delta": 0.15, "divergence": "topk_tv"},
                "gpg": {"rule": "gpg"}}


@pytest.mark.parametrize("method", ["cppo", "pg_is", "dppo", "gpg"])
def test_skipping_pi_old_changes_no_logged_value(tmp_path, base_ckpt, varied_rewards, method):
    """rl.recompute_old_logp auto skips π_old's forward for a rule that does not read it (μ samples with
    the trainer's model): every logged metric, the position profile and the final weights are
    byte-identical to `always`; `rule/k3_old_mu` is then logged at the evaluated steps only, with the
    same value. And the skipping run is deterministic: the same seed twice gives the same file."""
    p = write_cfg(tmp_path, methods={**CFG["methods"], **SKIP_METHODS})
    for mode in ("auto", "always"):
        assert train(p, tmp_path / mode, base_ckpt, "--setting", "fresh", "--set", f"rl.recompute_old_logp={mode}",
                     method=method) == 0
    auto, always = ((tmp_path / m / "metrics.jsonl").read_text() for m in ("auto", "always"))
    evaluated = {3, 6}  # eval_every 3, 6 steps
    n_old = 0
    for a, b in zip(map(json.loads, auto.splitlines()), map(json.loads, always.splitlines()), strict=True):
        if "train/updates" not in b or "rule/div_mean" not in b:  # step 0, or a step without an update
            assert a == b
            continue
        n_old += "rule/k3_old_mu" in a
        assert ("rule/k3_old_mu" in a) == (a["step"] in evaluated), a["step"]
        assert a == (b if a["step"] in evaluated else {k: v for k, v in b.items() if k != "rule/k3_old_mu"})
    assert n_old == 2
    for f in ("position_profile.json", "final/model.safetensors", "done"):
        assert (tmp_path / "auto" / f).read_bytes() == (tmp_path / "always" / f).read_bytes(), f
    if method == "cppo":  # one-host determinism of the skipping path
        assert train(p, tmp_path / "again", base_ckpt, "--setting", "fresh", method=method) == 0
        assert (tmp_path / "again" / "metrics.jsonl").read_text() == auto


def test_pi_old_is_kept_where_it_is_read_or_measures_a_mismatch(tmp_path, base_ckpt):
    """auto still computes π_old every step for a rule that reads it (grpo: ppo_clip, anchor old), with
    rollout correction, and when μ is not the trainer's own model (lag, precision, another engine)."""
    from cppo.train.rl import Trainer

    p = write_cfg(tmp_path)
    cases = [("grpo", "fresh", [], True), ("cppo", "fresh", [], False), ("cppo", "stale", [], True),
             ("cppo", "fresh", ["rl.rollout_dtype=bfloat16"], True),
             ("cppo", "fresh", ["rl.rollout_correction={rollout_is: token}"], True),
             ("cppo", "fresh", ["rl.recompute_old_logp=always"], True)]
    for method, setting, sets, every_step in cases:
        tr = Trainer(resolve_run(load_config(p, sets), method, "xs", 3, setting=setting), tmp_path / "r",
                     str(base_ckpt), progress=False)
        assert [tr.needs_old(s) for s in range(1, 7)] == ([True] * 6 if every_step else
                                                          [False, False, True, False, False, True]), (method, sets)
        tr.rl.engine = "vllm"  # an engine that is not the trainer's model: the mismatch is the point
        assert all(tr.needs_old(s) for s in range(1, 7))
    with pytest.raises(ConfigError, match="recompute_old_logp"):
        resolve_run(load_config(p, ["rl.recompute_old_logp=never"]), "cppo", "xs", 1)


def test_done_run_is_left_alone_and_changed_config_refused(tmp_path, base_ckpt, capsys):
    p = write_cfg(tmp_path)
    run_dir = tmp_path / "r"
    assert train(p, run_dir, base_ckpt, "--steps", "1") == 0
    before = (run_dir / "metrics.jsonl").read_text()
    assert train(p, run_dir, base_ckpt, "--steps", "1") == 0
    assert (run_dir / "metrics.jsonl").read_text() == before
    (run_dir / "done").unlink()
    assert train(p, run_dir, base_ckpt, "--steps", "2") == 2  # resolved config differs from config.yaml
    assert "different resolved config" in capsys.readouterr().err


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, base_ckpt, mlflow_uri):
    from cppo import tracking

    p = write_cfg(tmp_path, rl={**CFG["rl"], "steps": 12, "save_every": 3, "eval_every": 4}, eval={"every": 4})
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert train(p, full, base_ckpt, "--setting", "stale", method="cppo") == 0

    cmd = [sys.executable, "-m", "cppo.cli", "train", str(p), "--method", "cppo", "--scale", "xs", "--seed", "3",
           "--setting", "stale", "--run-dir", str(killed), "--init", str(base_ckpt), "--no-progress"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_3").exists():
        assert proc.poll() is None and time.time() < deadline, "trainer ended before its first checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "done").exists()
    assert subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0

    assert (killed / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    run_id = (killed / "mlflow_run_id").read_text().strip()
    steps = [s for s, _ in tracking.metric_history(run_id, "rollout/reward_mean")]
    assert steps == list(range(1, 13))  # every step exactly once
    assert [s for s, _ in tracking.metric_history(run_id, "eval/chain_id/greedy_acc")] == [0, 4, 8, 12]

    # eval.every 4: the weights of steps 0, 4, 8, 12 are kept, the same whether the run was killed or not;
    # step 0 is the starting checkpoint and step 12 the final one
    from safetensors.torch import load_file

    def weights(d):
        return load_file(str(d / "model.safetensors"))

    def same(a, b):
        wa, wb = weights(a), weights(b)
        return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    for run in (full, killed):
        assert sorted(p.name for p in (run / "steps").iterdir()) == ["step_0", "step_12", "step_4", "step_8"]
    for n in (0, 4, 8, 12):
        assert same(full / "steps" / f"step_{n}", killed / "steps" / f"step_{n}"), n
    assert same(full / "steps" / "step_0", base_ckpt) and same(full / "steps" / "step_12", full / "final")
    # the kept weights follow the updates: they differ exactly when the run updated in between (a base that
    # solves nothing on this host's rollouts updates nothing, so a plain "they differ" would depend on the host)
    updates = {r["step"]: r["train/updates"] for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines())
               if "train/updates" in r}
    assert same(full / "steps" / "step_4", full / "steps" / "step_8") == (updates[8] == updates[4]), updates


# --------------------------------------------------------------------------- several runs per process
GROUP_EVAL = {"benchmarks": ["chain_id"], "n": 2, "temperature": 0.7, "top_p": 0.95, "max_tokens": 12, "limit": 8,
              "every": 2}


def _eval_files(run_dir: Path) -> dict[str, object]:
    """The comparison benchmarks/pipeline_cost.py makes of two runs' evaluation files (one definition)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pipeline_cost", REPO / "benchmarks" / "pipeline_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.eval_files(run_dir)


@pytest.mark.slow  # three fresh processes and four short runs: about half a minute unloaded
def test_runs_in_one_process_equal_runs_alone(tmp_path, base_ckpt, mlflow_uri, capsys):
    """The same seed trained and evaluated the old way (one fresh `cppo train` process, then `cppo eval --run`
    and split_eval.py, as the pipeline's evaluate job does) and after another run in a group (in this test
    process, whose torch threads and random streams earlier tests have used): byte-identical metrics.jsonl,
    the same evaluation files; each grouped run has its own MLflow child with its evaluations."""
    from cppo import tracking
    from cppo.cli import main

    p = write_cfg(tmp_path, eval=GROUP_EVAL)
    alone = tmp_path / "alone" / "seed~5"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    old_way = [
        ["-m", "cppo.cli", "train", str(p), "--method", "cppo", "--scale", "xs", "--seed", "5", "--setting", "stale",
         "--steps", "4", "--run-dir", str(alone), "--init", str(base_ckpt), "--no-progress", "--no-mlflow"],
        ["-m", "cppo.cli", "eval", "--run", str(alone), "--config", str(p), "--out", str(alone / "eval" / "_all.json"),
         "--no-progress"],
        [str(REPO / "workflow" / "scripts" / "split_eval.py"), str(alone / "eval" / "_all.json"), str(alone / "eval")],
    ]
    for cmd in old_way:
        res = subprocess.run([sys.executable, *cmd], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]

    template = str(tmp_path / "group" / "seed~{seed}")
    argv = ["train", str(p), "--method", "cppo", "--scale", "xs", "--seed", "7", "5", "--setting", "stale",
            "--steps", "4", "--run-dir", template, "--init", str(base_ckpt), "--no-progress", "--eval"]
    torch.set_num_threads(2)  # state a previous run could leave behind: the group must not inherit it
    torch.manual_seed(123)
    assert main(argv) == 0
    grouped = tmp_path / "group" / "seed~5"
    assert (grouped / "metrics.jsonl").read_bytes() == (alone / "metrics.jsonl").read_bytes()
    files = _eval_files(grouped)
    assert sorted(files) == ["eval/_all.json", "eval/chain_id.json", "eval/steps/step_0.json",
                             "eval/steps/step_2.json", "eval/steps/step_4.json"]
    assert files == _eval_files(alone)
    assert (tmp_path / "group" / "seed~7" / "metrics.jsonl").read_text() != (alone / "metrics.jsonl").read_text()

    ids = {s: (tmp_path / "group" / f"seed~{s}" / "mlflow_run_id").read_text().strip() for s in (7, 5)}
    assert len(set(ids.values())) == 2
    for s, run_id in ids.items():
        assert [st for st, _ in tracking.metric_history(run_id, "eval/chain_id/avg_at_2")] == [0, 2, 4]
        assert [st for st, _ in tracking.metric_history(run_id, "rollout/reward_mean")] == [1, 2, 3, 4]
        assert tracking.client().get_run(run_id).info.status == "FINISHED"
        assert json.loads((tmp_path / "group" / f"seed~{s}" / "eval" / "_all.json").read_text())["mlflow"] == \
            {"run_id": run_id, "step": 4}

    # again: both runs are done and evaluated, so nothing is trained, scored or logged twice
    stamps = {f: f.stat().st_mtime_ns for f in (tmp_path / "group").rglob("*.json")}
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("evaluation already complete") == 2
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "group").rglob("*.json")} == stamps
    assert len(tracking.metric_history(ids[5], "eval/chain_id/avg_at_2")) == 3


def test_a_failing_run_fails_alone(tmp_path, base_ckpt, capsys):
    p = write_cfg(tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "seed~2").write_text("not a folder")  # this run cannot create its folder
    from cppo.cli import main

    rc = main(["train", str(p), "--method", "grpo", "--scale", "xs", "--seed", "2", "3", "--steps", "1",
               "--run-dir", str(tmp_path / "g" / "seed~{seed}"), "--init", str(base_ckpt), "--no-progress",
               "--no-mlflow"])
    err = capsys.readouterr().err
    assert rc == 1 and "1 of 2 runs failed" in err and "seed~2 failed: FileExistsError" in err
    assert (tmp_path / "g" / "seed~3" / "done").is_file()  # the run after it still ran


@pytest.mark.parametrize("argv,match", [
    (["--seed", "1", "2", "--run-dir", "{tmp}/run"], "--run-dir {tmp}/run: with several seeds it must hold {seed}"),
    (["--seed", "1", "1", "--run-dir", "{tmp}/r{seed}"], "--seed: a seed is given twice (1 1)"),
    (["--seed", "1", "--run-dir", "{tmp}/r{seed}", "--eval", "--set", "eval.benchmarks=[nope]"], "--eval: "),
])
def test_bad_group_call_is_one_line_before_any_run(tmp_path, capsys, base_ckpt, argv, match):
    from cppo.cli import main

    p = write_cfg(tmp_path, eval=GROUP_EVAL)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(["train", str(p), "--method", "grpo", "--scale", "xs", "--init", str(base_ckpt), "--no-mlflow", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and match.replace("{tmp}", str(tmp_path)) in err and len(err.splitlines()) == 1, err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["cfg.yaml"]


# clip_cov is left out: it cuts covariance-selected tokens even on-policy (tests/test_rules_contract.py)
@pytest.mark.parametrize("rule", [r for r in builtin_rules() if r != "clip_cov"])
def test_first_update_equals_plain_policy_gradient(tmp_path, base_ckpt, rule):
    """One update per rollout, no staleness: μ = π_old = π, so every rule's gradient is −Â ∇log π."""
    from cppo.rules import aggregate_loss
    from cppo.train.rl import Trainer, build_sequences, minibatch_loss, policy_logprobs

    cfg = load_config(write_cfg(tmp_path), ["rl.updates_per_rollout=1", "rl.staleness=0", "rl.prompts_per_rollout=8"])
    run = resolve_run(cfg, rule, "xs", 5)
    tr = Trainer(run, tmp_path / "r", str(base_ckpt), progress=False)
    rb, _ = tr.rollout()
    # rewards with variance in every group, whatever the base solves: the subject is the gradient, not the reward
    rewards = torch.tensor([float(i % 2) for i in range(rb.response_ids.shape[0])])
    adv, keep = group_advantages(rewards, run.rl.samples_per_prompt)
    assert keep.all()
    sb = build_sequences(rb, adv, keep, tr.tok.pad_token_id)
    with torch.no_grad():
        old_logp, old_topk, _ = policy_logprobs(tr.model, sb, 1.0, tr.rule.needs_topk, False)
    params = list(tr.model.parameters())
    loss, out, _ = minibatch_loss(tr.rule, tr.model, sb, old_logp, old_topk, run.rl)
    g_rule = torch.autograd.grad(loss, params)
    logp, _, _ = policy_logprobs(tr.model, sb, 1.0, False, False)
    pg = aggregate_loss(torch.where(sb.mask, -sb.advantages * logp, 0.0), sb.mask, run.rl.loss_agg,
                        norm_constant=float(run.rl.max_new_tokens))
    g_pg = torch.autograd.grad(pg, params)
    assert out.kept[sb.mask].all()  # nothing masked at the first mini-batch
    num = sum(float((a - b).norm() ** 2) for a, b in zip(g_rule, g_pg)) ** 0.5
    den = sum(float(b.norm() ** 2) for b in g_pg) ** 0.5
    assert den > 0 and num / den < 1e-4, (rule, num, den)


def test_nonfinite_guard_skips_and_stops(tmp_path, base_ckpt, monkeypatch, varied_rewards):
    from cppo.train import rl as rl_mod

    real = rl_mod.minibatch_loss

    def poisoned(*a, **k):
        loss, out, batch = real(*a, **k)
        return loss * float("nan"), out, batch

    monkeypatch.setattr(rl_mod, "minibatch_loss", poisoned)
    p = write_cfg(tmp_path)
    assert train(p, tmp_path / "r", base_ckpt, "--set", "rl.max_bad_steps=3") == 0
    done = json.loads((tmp_path / "r" / "done").read_text())
    assert done["bad_steps"] == 3 and "non-finite" in done["stopped_reason"] and done["step"] == 2
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "r" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(base_ckpt).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)  # no poisoned update reached the weights


@pytest.mark.slow
def test_sft_then_rl_improves_reward(tmp_path, base_ckpt):
    """SFT (the session base) → 40 RL steps on the smallest scale: greedy accuracy and reward rise."""
    rl = {**CFG["rl"], "steps": 40, "prompts_per_rollout": 16, "samples_per_prompt": 8, "updates_per_rollout": 4,
          "lr": 1.0e-4, "eval_every": 40, "eval_n": 256, "save_every": 0}
    p = write_cfg(tmp_path, rl=rl)
    assert train(p, tmp_path / "r", base_ckpt) == 0
    recs = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    start, end = recs[0], recs[-1]
    assert end["eval/chain_id/greedy_acc"] > start["eval/chain_id/greedy_acc"] + 0.08, (start, end)
    first = sum(r["rollout/reward_mean"] for r in recs[1:11]) / 10
    last = sum(r["rollout/reward_mean"] for r in recs[-10:]) / 10
    assert last > first, (first, last)


def test_sequence_minibatches_keep_the_update_count(tmp_path, base_ckpt, varied_rewards):
    p = write_cfg(tmp_path)
    assert train(p, tmp_path / "r", base_ckpt, "--set", "rl.minibatch_by=sequence") == 0
    recs = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout/seqs_used"] for r in recs[1:]] == [16] * 6
    assert recs[-1]["train/updates"] == 2 * 6


# --------------------------------------------------------------------------- the pressure ladder's knobs
def test_on_policy_rung_two_rules_give_the_same_run(tmp_path, base_ckpt, varied_rewards):
    """Rung 0 (one update per rollout, no lag): pg_is and cppo make the same updates, so the same
    seed gives the same rewards, accuracies and stability metrics (why the rung is trained once)."""
    from cppo.report.collect import read_metrics_jsonl
    from cppo.report.stats import auc, best_in_run, time_to_collapse

    p = write_cfg(tmp_path, rl={**CFG["rl"], "updates_per_rollout": 1, "steps": 6, "eval_every": 2})
    runs = {}
    for rule in ("pg_is", "cppo", "ppo_clip"):
        assert train(p, tmp_path / rule, base_ckpt, method=rule) == 0
        runs[rule] = read_metrics_jsonl(tmp_path / rule / "metrics.jsonl")
    ref = runs["pg_is"]
    acc = ref["eval/chain_id/greedy_acc"]
    assert len(acc) == 4 and ref["train/updates"][-1][1] == 6  # one update per rollout, every step
    for rule in ("cppo", "ppo_clip"):
        h = runs[rule]
        for key in ("rollout/reward_mean", "eval/chain_id/greedy_acc", "eval/chain_id/sampled_acc", "train/updates"):
            assert h[key] == ref[key], (rule, key)
        # the loss values differ by a constant per rule (surrogate forms); the gradients do not
        assert [v for _, v in h["train/grad_norm"]] == pytest.approx([v for _, v in ref["train/grad_norm"]], rel=1e-4)
        assert all(v == 0 for _, v in h["rule/masked_frac"])
        a = h["eval/chain_id/greedy_acc"]
        assert (time_to_collapse(a, 0.5, 6), auc(a, 6), best_in_run(a)) == (time_to_collapse(acc, 0.5, 6), auc(acc, 6),
                                                                              best_in_run(acc))


def test_staleness_in_rollouts_samples_with_the_weights_of_k_rollouts_ago(tmp_path, base_ckpt, varied_rewards):
    from cppo.train.rl import Trainer, _clone_state

    cfg = load_config(write_cfg(tmp_path), ["rl.staleness_rollouts=2", "rl.updates_per_rollout=2"])
    tr = Trainer(resolve_run(cfg, "grpo", "xs", 3), tmp_path / "r", str(base_ckpt), progress=False)
    starts = []
    for _ in range(4):
        starts.append(_clone_state(tr.model))  # the weights at the start of this rollout step
        tr.train_step()
        tr.step += 1
        mu = tr.engine.model.state_dict()
        expect = starts[max(0, len(starts) - 1 - 2)]  # two rollouts back (the initial weights at first)
        assert all(torch.equal(mu[k], expect[k]) for k in expect), len(starts)
    assert not all(torch.equal(starts[0][k], starts[-1][k]) for k in starts[0])  # the policy did move
    with pytest.raises(ConfigError, match="exclusive"):
        resolve_run(load_config(write_cfg(tmp_path), ["rl.staleness=1", "rl.staleness_rollouts=1"]), "grpo", "xs", 1)


def test_rollout_dtype_bf16_makes_mu_differ_from_pi_old(tmp_path, base_ckpt):
    """μ sampled by a bfloat16 copy differs from the float32 π_old by precision alone.

    Measured on one rollout batch of the trainer, every sequence kept, with the rule's own `k3_old_mu`
    (the metric the trainer logs): a training run logs it only when some group has reward variance,
    which depends on what the base solves on this host."""
    from cppo.train.rl import Trainer, build_sequences, minibatch_loss, policy_logprobs

    p = write_cfg(tmp_path)
    k3 = {}
    for dtype in ("float32", "bfloat16"):
        run = resolve_run(load_config(p, [f"rl.rollout_dtype={dtype}"]), "cppo", "xs", 3, setting="fresh")
        tr = Trainer(run, tmp_path / dtype, str(base_ckpt), progress=False)
        rb, _ = tr.rollout()
        n = rb.response_ids.shape[0]
        sb = build_sequences(rb, torch.zeros(n), torch.ones(n, dtype=torch.bool), tr.tok.pad_token_id)
        with torch.no_grad():
            old_logp, old_topk, _ = policy_logprobs(tr.model, sb, run.rl.temperature, tr.rule.needs_topk, False)
            _, out, _ = minibatch_loss(tr.rule, tr.model, sb, old_logp, old_topk, run.rl)
        assert int(sb.mask.sum()) > 0
        k3[dtype] = out.metrics["k3_old_mu"]
    assert k3["float32"] < 1e-7 and k3["bfloat16"] > max(100 * k3["float32"], 1e-6), k3  # the precision mismatch alone
    with pytest.raises(ConfigError, match="rollout_dtype"):
        resolve_run(load_config(write_cfg(tmp_path), ["rl.rollout_dtype=int8"]), "grpo", "xs", 1)


def test_reference_setting_must_be_on_policy(tmp_path):
    grid = {"methods": ["grpo"], "scales": ["xs"], "seeds": [1], "settings": ["fresh", "stale"],
            "reference": {"setting": "stale", "method": "grpo"}}
    with pytest.raises(ConfigError, match="not on-policy"):
        load_config(write_cfg(tmp_path, grid=grid))
    settings = {**CFG["settings"], "onpolicy": {"updates_per_rollout": 1}}
    grid = {**grid, "settings": ["onpolicy", "stale"], "reference": {"setting": "onpolicy", "method": "grpo"}}
    assert load_config(write_cfg(tmp_path, grid=grid, settings=settings)).grid.extra["reference"]["setting"] == "onpolicy"


# --------------------------------------------------------------------------- rollout correction
def test_rollout_correction_in_a_5_step_tiny_train_logs_its_diagnostics(tmp_path, base_ckpt):
    """config/tiny.yaml, its bf16-rollout setting (μ samples in bfloat16, π_old is float32), the task sized
    to the unit base, 5 steps with rollout correction on: every step that updated logs the diagnostics,
    the tight k2 bound rejects some tokens but not all, and TIS at 1 truncates some weights."""
    from cppo.cli import main
    from cppo.rules.rollout_correction import CORRECTION_METRICS

    rc = "{rollout_is: token, rollout_is_threshold: 1.0, rollout_rs: 'token_k2,seq_max_k3', rollout_rs_threshold: '2e-5,10'}"
    args = ["train", str(REPO / "config" / "tiny.yaml"), "--method", "grpo", "--scale", "s", "--seed", "1",
            "--setting", "onpolicy_bf16", "--steps", "5", "--run-dir", str(tmp_path / "r"), "--init", str(base_ckpt),
            "--no-progress", "--no-mlflow", "--set", "task.K=4", "--set", "task.ood_K=6",
            "--set", "rl.max_new_tokens=8", "--set", "rl.eval_n=16", "--set", f"rl.rollout_correction={rc}"]
    assert main(args) == 0
    recs = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    updated = [r for r in recs[1:] if r["rollout/seqs_used"] > 0]
    assert len(recs) == 6 and updated
    for r in updated:
        assert {f"rollout_corr/{k}" for k in CORRECTION_METRICS} <= set(r)
        assert 0 < r["rollout_corr/rejected_frac"] < 1 and 0 < r["rollout_corr/is_ess"] <= 1
        assert r["rollout_corr/is_clipped_frac"] > 0
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["rl"]["rollout_correction"]["rollout_rs"] == "token_k2,seq_max_k3"


def test_rollout_correction_weights_multiply_the_per_token_loss(tmp_path, base_ckpt):
    from cppo.train.rl import Trainer, build_sequences, minibatch_loss, policy_logprobs

    cfg = load_config(write_cfg(tmp_path), ["rl.updates_per_rollout=1", "rl.prompts_per_rollout=8"])
    run = resolve_run(cfg, "gpg", "xs", 5)  # −Â log π: a loss value far from 0, unlike −Â ρ on-policy
    tr = Trainer(run, tmp_path / "r", str(base_ckpt), progress=False)
    rb, rows = tr.rollout()
    answers = [r["answer"] for r in rows for _ in range(run.rl.samples_per_prompt)]
    adv, keep = group_advantages(torch.tensor(tr.task.rewards(rb.texts, answers, rb.finished.tolist())), 4)
    assert keep.any()
    sb = build_sequences(rb, adv, keep, tr.tok.pad_token_id)
    with torch.no_grad():
        old_logp, _, _ = policy_logprobs(tr.model, sb, 1.0, False, False)
    plain, _, _ = minibatch_loss(tr.rule, tr.model, sb, old_logp, None, run.rl)
    halved = torch.where(torch.arange(sb.mask.shape[0])[:, None] % 2 == 0, 2.0, 0.0).expand_as(sb.mask)
    weighted, _, _ = minibatch_loss(tr.rule, tr.model, sb, old_logp, None, run.rl, is_weights=halved)
    odd_zero, _, _ = minibatch_loss(tr.rule, tr.model, sb, old_logp, None, run.rl,
                                    is_weights=torch.where(halved > 0, 1.0, 0.0))
    weighted, odd_zero, plain = (float(x.detach()) for x in (weighted, odd_zero, plain))
    assert weighted == pytest.approx(2 * odd_zero, rel=1e-6)  # linear in the weights
    assert abs(weighted - 2 * plain) > 1e-3 * abs(plain)  # and the weights reached the loss
    with pytest.raises(ConfigError, match="rollout_rs_threshold"):
        resolve_run(load_config(write_cfg(tmp_path), ["rl.rollout_correction={rollout_rs: token_k3}"]), "grpo", "xs", 1)
