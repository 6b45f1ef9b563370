"""Golden tests of `cppo verl-cmd`: the verl command line of every method × model of the paper protocol.

The fixture profile tests/verl_parity/paper_fixture.yaml writes the paper's Table 3 (docs/methods.md §Protocol) in the keys the
generator reads. The expectations below are typed in by hand from that table (not computed by the code
under test); the full command lines are also pinned in tests/verl_parity/golden_commands.json
(regenerate after an intended change with CPPO_UPDATE_GOLDEN=1 and review the diff).
A last test composes a sample of the commands with verl's real Hydra config in .venv-verl.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cppo.config import apply_overrides, config_from_dict, load_config
from cppo.integrations.verl_backend import GRAD_CLIP_OFF, hydra_value, verl_command

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "verl_parity" / "paper_fixture.yaml"
GOLDEN = REPO / "tests" / "verl_parity" / "golden_commands.json"
VERL_PY = REPO / ".venv-verl" / "bin" / "python"
FIXED = ["verl.data_dir=/data/cppo", "results_dir=/runs"]  # absolute, machine-independent paths
URI = "sqlite:////mlflow/mlflow.db"

# the paper's Table 3 (docs/methods.md §Protocol): prompts/rollout, n, mini-batch (prompts), updates/rollout, max response, δ, δ_b, steps
TABLE3 = {
    "qwen3_1p7b": dict(hub="Qwen/Qwen3-1.7B", prompts=64, n=8, mini=32, updates=2, resp=8192, delta=0.15,
                       delta_b=0.015, delta_b_mode="fixed", steps=1120),
    "qwen3_1p7b_base": dict(hub="Qwen/Qwen3-1.7B-Base", prompts=64, n=8, mini=32, updates=2, resp=8192, delta=0.15,
                            delta_b=0.02, delta_b_mode="p90", steps=680),
    "qwen3_8b_base": dict(hub="Qwen/Qwen3-8B-Base", prompts=128, n=8, mini=32, updates=4, resp=8192, delta=0.15,
                          delta_b=0.02, delta_b_mode="p90", steps=490),
    "qwen3_30b_a3b_base": dict(hub="Qwen/Qwen3-30B-A3B-Base", prompts=256, n=16, mini=32, updates=8, resp=16384,
                               delta=0.20, delta_b=0.02, delta_b_mode="p90", steps=560),
}
# method -> (verl loss_mode, rule parameters every scale must carry)
METHODS = {
    "grpo": ("cppo_ppo_clip", {"eps_low": "0.2", "eps_high": "0.28"}),
    "minpro": ("cppo_minpro", {"eps_low": "0.2", "eps_high": "0.28", "clip": "soft"}),
    "cispo": ("cppo_cispo", {"eps_high": "0.2"}),
    "dppo": ("cppo_dppo", {"divergence": "binary_tv", "trunc_cap": "20"}),
    "trm_max": ("cppo_trm_max", {"delta": "0.1"}),
    "trm_avg": ("cppo_trm_avg", {"delta": "0.002"}),
    "cppo": ("cppo", {"w_min": "0.8", "divergence": "binary_tv", "trunc_cap": "20"}),
}
A = "actor_rollout_ref.actor"
RP = f"+{A}.policy_loss.rule_params"


@pytest.fixture(scope="module")
def cfg():
    return load_config(FIXTURE, FIXED)


def _cmd(cfg, method, scale, seed=1, **kw):
    return verl_command(cfg, method, scale, seed, tracking_uri=URI, **kw)


@pytest.mark.parametrize("scale", list(TABLE3))
@pytest.mark.parametrize("method", list(METHODS))
def test_table3_command(cfg, method, scale):
    t = TABLE3[scale]
    cmd = _cmd(cfg, method, scale, seed=3)
    o = cmd.override_map()
    assert cmd.argv[:3] == ["python3", "-m", "verl.trainer.main_ppo"]
    # model and Table 3 batch sizes
    assert o["actor_rollout_ref.model.path"] == t["hub"]
    assert o["data.train_batch_size"] == str(t["prompts"])
    assert o["actor_rollout_ref.rollout.n"] == str(t["n"])
    assert o[f"{A}.ppo_mini_batch_size"] == str(t["mini"])
    assert t["prompts"] // t["mini"] == t["updates"]  # updates per rollout = mini-batches per rollout
    assert o[f"{A}.ppo_epochs"] == "1"
    assert o["data.max_response_length"] == str(t["resp"])
    assert o["data.max_prompt_length"] == "1024"
    assert o["trainer.total_training_steps"] == str(t["steps"])
    # the protocol: lr 1e-6, μ sampled at T=1/top-p 1, no KL, no entropy bonus, zero-variance groups skipped
    assert float(o[f"{A}.optim.lr"]) == 1e-6
    assert o["actor_rollout_ref.rollout.temperature"] == "1.0" and o["actor_rollout_ref.rollout.top_p"] == "1.0"
    assert o[f"{A}.use_kl_loss"] == "false" and o["algorithm.use_kl_in_reward"] == "false"
    assert o[f"{A}.entropy_coeff"] == "0"
    assert o["algorithm.adv_estimator"] == "grpo" and o["algorithm.filter_groups.enable"] == "true"
    # the anchor: bypass mode (old_log_prob = rollout log-prob), log-probs recorded by the engine
    assert o["algorithm.rollout_correction.bypass_mode"] == "true"
    assert o["algorithm.rollout_correction.rollout_is"] == "null"
    assert o["trainer.use_v1"] == "true"  # the trainer whose bypass mode leaves loss_mode alone
    assert o["actor_rollout_ref.rollout.calculate_log_probs"] == "true"
    # aggregation: Dr. GRPO's fixed constant = max response length
    assert o[f"{A}.loss_agg_mode"] == "seq-mean-token-sum-norm"
    assert o[f"{A}.loss_scale_factor"] == str(t["resp"])
    # the rule through our plugin
    mode, params = METHODS[method]
    assert o[f"{A}.policy_loss.loss_mode"] == mode
    assert o[f"{A}.policy_loss._target_"] == "cppo.integrations.verl.CPPOPolicyLossConfig"
    for k, v in params.items():
        assert o[f"{RP}.{k}"] == v, k
    if method == "cppo":
        assert float(o[f"{RP}.delta"]) == t["delta"]
        assert float(o[f"{RP}.delta_b"]) == t["delta_b"]
        assert o[f"{RP}.delta_b_mode"] == t["delta_b_mode"]
    if method == "dppo":
        assert float(o[f"{RP}.delta"]) == t["delta"]  # DPPO baseline: same δ as CPPO
    if method in ("cppo", "dppo"):
        assert any("topk_tv -> binary_tv" in n for n in cmd.notes)  # the deviation is stated
    # evaluation sampling (Avg@16 at T=0.7, top-p 0.95) and the validation sets
    assert o["actor_rollout_ref.rollout.val_kwargs.n"] == "16"
    assert o["actor_rollout_ref.rollout.val_kwargs.temperature"] == "0.7"
    assert o["actor_rollout_ref.rollout.val_kwargs.top_p"] == "0.95"
    assert o["data.val_files"] == "[/data/cppo/aime24.parquet,/data/cppo/aime25.parquet,/data/cppo/aime26.parquet]"
    assert o["data.train_files"] == "/data/cppo/dapo-math-17k.parquet"
    # seeds, checkpoints (with HF weights), MLflow naming
    for k in ("data.seed", f"{A}.data_loader_seed", "actor_rollout_ref.rollout.seed", f"{A}.fsdp_config.seed"):
        assert o[k] == "3", k
    assert o["trainer.save_freq"] == "20" and o["trainer.test_freq"] == "20"
    assert o[f"{A}.checkpoint.save_contents"] == "[model,optimizer,extra,hf_model]"
    assert o["trainer.default_local_dir"] == (
        f"'/runs/paper_fixture/runs/setting~default/method~{method}/scale~{scale}/seed~3/checkpoints'")
    assert o["trainer.resume_mode"] == "auto" and o["trainer.max_actor_ckpt_to_keep"] == "1"  # rl default
    assert o["trainer.logger"] == "[console,mlflow]"
    assert o["trainer.project_name"] == "paper_fixture"
    assert o["trainer.experiment_name"] == f"default/{method}/{scale}/seed3"
    assert o["reward.custom_reward_function.path"] == "pkg://cppo.integrations.verl"
    assert cmd.env == {"MLFLOW_TRACKING_URI": URI}


def test_golden_command_lines(cfg):
    got = {f"{s}/{m}": _cmd(cfg, m, s).argv for s in TABLE3 for m in METHODS}
    if os.environ.get("CPPO_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == want[key], f"{key}: command changed; if intended, rerun with CPPO_UPDATE_GOLDEN=1"


def test_grad_clip_off_and_token_mean(cfg):
    cmd = _cmd(load_config(FIXTURE, FIXED + ["rl.grad_clip=null", "rl.loss_agg=token-mean"]), "cppo", "qwen3_8b_base")
    o = cmd.override_map()
    assert float(o[f"{A}.optim.clip_grad"]) == GRAD_CLIP_OFF
    assert o[f"{A}.loss_agg_mode"] == "token-mean"
    assert f"{A}.loss_scale_factor" not in o  # only the -norm mode takes a constant


def test_errors_are_clear(cfg):
    with pytest.raises(ValueError, match="top-K"):
        _cmd(load_config(FIXTURE, FIXED + ["verl.topk_fallback=error"]), "cppo", "qwen3_1p7b")
    with pytest.raises(ValueError, match="not divisible"):
        _cmd(load_config(FIXTURE, FIXED + ["scales.qwen3_8b_base.rl.updates_per_rollout=3"]), "cppo", "qwen3_8b_base")
    with pytest.raises(ValueError, match=r"unknown config key verl\.n_gpu \(allowed here: .*n_gpus_per_node"):
        load_config(FIXTURE, FIXED + ["verl.n_gpu=8"])  # the profile schema (cppo.schema) stops it
    with pytest.raises(ValueError, match="config key scales.qwen3_8b_base.hub: None is not of type 'string'"):
        load_config(FIXTURE, FIXED + ["scales.qwen3_8b_base.hub=null"])
    no_hub = apply_overrides(yaml.safe_load(FIXTURE.read_text()), FIXED + ["scales.qwen3_8b_base.hub=null"])
    with pytest.raises(ValueError, match="needs `hub`"):  # a dict built in code skips the schema: the generator checks
        _cmd(config_from_dict(no_hub), "cppo", "qwen3_8b_base")
    with pytest.raises(ValueError, match="unknown parameter"):
        _cmd(load_config(FIXTURE, FIXED + ["methods.cppo.deltaa=0.1"]), "cppo", "qwen3_8b_base")
    with pytest.raises(ValueError, match="rl.rollout_correction is a builtin-trainer option"):
        _cmd(load_config(FIXTURE, FIXED + ["rl.rollout_correction={rollout_is: token}"]), "cppo", "qwen3_8b_base")


def test_binary_divergence_needs_no_note_and_extra_overrides_win(cfg):
    c = load_config(FIXTURE, FIXED + ["methods.cppo.divergence=binary_kl", "verl.extra_overrides=[trainer.nnodes=9]"])
    cmd = _cmd(c, "cppo", "qwen3_1p7b")
    assert cmd.override_map()[f"{RP}.divergence"] == "binary_kl"
    assert not any("binary" in n for n in cmd.notes)
    assert cmd.overrides[-1] == "trainer.nnodes=9"  # appended last: Hydra applies it over the generated one


def test_hydra_values():
    assert hydra_value(None) == "null" and hydra_value(True) == "true" and hydra_value(0.15) == "0.15"
    assert hydra_value(["a", 1, 2.5, None]) == "[a,1,2.5,null]"
    assert hydra_value("a b") == "'a b'" and hydra_value("x~y") == "'x~y'" and hydra_value("null") == "'null'"
    assert hydra_value("pkg://cppo.integrations.verl") == "pkg://cppo.integrations.verl"


def test_cli_script_and_json(tmp_path, capsys):
    from cppo.cli import main

    script = tmp_path / "run.sh"
    rc = main(["verl-cmd", str(FIXTURE), "--method", "cppo", "--scale", "qwen3_1p7b", "--seed", "2",
               "--run-dir", str(tmp_path / "run"), "--format", "script", "--out", str(script)])
    assert rc == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and os.access(script, os.X_OK)
    assert "# NOTE: method 'cppo': divergence topk_tv -> binary_tv" in text
    assert f"ckpt={tmp_path / 'run' / 'checkpoints'}\n" in text
    assert '"$ckpt/global_step_${step}/actor/huggingface"' in text
    assert f"touch {tmp_path / 'run' / 'done'}" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # valid bash
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())  # the resolved run, as docs/contracts.md §Runs asks
    assert saved["method"]["rule"] == "cppo" and saved["method"]["params"]["delta_b"] == 0.015
    assert saved["rl"]["prompts_per_rollout"] == 64 and saved["seed"] == 2
    assert saved["verl"]["version"] == "0.9.1" and saved["verl"]["argv"][1:3] == ["-m", "verl.trainer.main_ppo"]
    assert "ray start" not in text  # one node: verl starts its own local Ray
    multi = _cmd(cfg_multi := load_config(FIXTURE, FIXED), "cppo", "qwen3_30b_a3b_base").script()
    assert cfg_multi.scales["qwen3_30b_a3b_base"]["verl"]["nnodes"] == 4
    assert 'this run needs 4 nodes' in multi and "ray start --head" in multi and 'nodes[@]:1:3' in multi
    assert 'squeue -h -j "${SLURM_JOB_ID' in multi  # the job step's environment may lack SLURM_JOB_NODELIST
    assert multi.index('export RAY_ADDRESS=') < multi.index("-m verl.trainer.main_ppo")
    rc = main(["verl-cmd", str(FIXTURE), "--method", "grpo", "--scale", "qwen3_8b_base", "--seed", "1",
               "--format", "json", "--set", "verl.data_dir=/d"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verl"] == "verl==0.9.1"
    assert "data.train_files=/d/dapo-math-17k.parquet" in out["argv"]
    assert main(["verl-cmd", str(FIXTURE), "--method", "nope", "--scale", "qwen3_8b_base", "--seed", "1"]) == 2


def test_cli_mlflow_attaches_to_child_run(tmp_path, mlflow_uri, capsys):
    from cppo.cli import main

    run_dir = tmp_path / "run"
    rc = main(["verl-cmd", str(FIXTURE), "--method", "cppo", "--scale", "qwen3_1p7b", "--seed", "1",
               "--run-dir", str(run_dir), "--mlflow", "--format", "json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert out["env"] == {"MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_RUN_ID": run_id}
    import mlflow

    run = mlflow.MlflowClient(mlflow_uri).get_run(run_id)
    assert run.data.tags["mlflow.runName"] == "default/cppo/qwen3_1p7b/seed1"
    assert run.data.tags["method"] == "cppo" and run.data.tags["seed"] == "1"


# --------------------------------------------------------------------------- against verl's own config
COMPOSE_SAMPLE = [(s, "cppo") for s in TABLE3] + [("qwen3_8b_base", m) for m in METHODS if m != "cppo"]


@pytest.mark.verl
def test_commands_compose_with_verl_config(cfg):
    """Hydra accepts every override against verl 0.9.1's config and builds our policy-loss config."""
    if not VERL_PY.exists():
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("CI is set but .venv-verl is absent: run scripts/bootstrap-verl")
        pytest.skip(".venv-verl is missing: run scripts/bootstrap-verl")
    cmds = {f"{s}/{m}": _cmd(cfg, m, s).overrides for s, m in COMPOSE_SAMPLE}
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([str(VERL_PY), str(REPO / "tests" / "verl_parity" / "compose.py")], input=json.dumps(cmds),
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    res = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    assert res, f"compose.py failed: {proc.stderr[-3000:]}"
    for key, r in res.items():
        assert r["ok"], f"{key}: {r['error']}"
        scale, method = key.split("/")
        t = TABLE3[scale]
        assert r["policy_loss_class"] == "CPPOPolicyLossConfig" and r["loss_mode"] == METHODS[method][0]
        assert (r["train_batch_size"], r["n"], r["ppo_mini_batch_size"]) == (t["prompts"], t["n"], t["mini"])
        assert r["max_response_length"] == t["resp"] and r["loss_scale_factor"] == t["resp"]
        assert r["bypass_mode"] is True and r["calculate_log_probs"] is True
        assert r["use_kl_loss"] is False and r["entropy_coeff"] == 0 and r["lr"] == 1e-6
        if method == "cppo":
            assert r["rule_params"]["delta"] == t["delta"] and r["rule_params"]["delta_b"] == t["delta_b"]
            assert r["rule_params"]["delta_b_mode"] == t["delta_b_mode"]
            assert r["rule_params"]["divergence"] == "binary_tv"


def test_paper_profile_generates_table3():
    """The real config/paper.yaml (pipeline's) gives every grid run a command with Table 3's values."""
    paper = load_config(REPO / "config" / "paper.yaml", FIXED)
    assert paper.backend == "verl"
    by_hub = {t["hub"]: t for t in TABLE3.values()}
    runs = [(m, s, k) for m in paper.grid.methods for s in paper.grid.scales for k in paper.grid.seeds]
    assert len({s for _, s, _ in runs}) == 4 and len({m for m, _, _ in runs}) == 7
    for method, scale, seed in runs:
        cmd = _cmd(paper, method, scale, seed)
        o = cmd.override_map()
        t = by_hub[o["actor_rollout_ref.model.path"]]
        assert (o["data.train_batch_size"], o["actor_rollout_ref.rollout.n"], o[f"{A}.ppo_mini_batch_size"]) == (
            str(t["prompts"]), str(t["n"]), str(t["mini"])), (method, scale)
        assert o["data.max_response_length"] == str(t["resp"]) and o["trainer.total_training_steps"] == str(t["steps"])
        assert o["algorithm.rollout_correction.bypass_mode"] == "true"
        assert o[f"{A}.policy_loss.loss_mode"] == METHODS[method][0]
        if method == "cppo":
            assert (float(o[f"{RP}.delta"]), float(o[f"{RP}.delta_b"]), o[f"{RP}.delta_b_mode"]) == (
                t["delta"], t["delta_b"], t["delta_b_mode"]), scale


# --------------------------------------------------------------------------- resume (pre-emption, retries)
FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for verl: records its arguments, then saves the final checkpoint as verl would
printf '%s\\n' "$@" > "$CALLS/argv.$(ls "$CALLS" | wc -l)"
for a in "$@"; do case "$a" in trainer.default_local_dir=*) d="${a#*=}";; trainer.total_training_steps=*) t="${a#*=}";; esac; done
q="'"; d="${d#$q}"; d="${d%$q}"  # Hydra quotes the value (run folders contain `~`)
mkdir -p "$d/global_step_$t/actor/huggingface" && echo "$t" > "$d/latest_checkpointed_iteration.txt"
"""


def _run_script(tmp_path, run_dir, steps=40, sets=(), fake=FAKE_PYTHON, rc=0):
    c = load_config(FIXTURE, FIXED + [f"scales.qwen3_1p7b.rl.steps={steps}", *sets])
    script = tmp_path / "run.sh"
    script.write_text(_cmd(c, "cppo", "qwen3_1p7b", run_dir=run_dir).script())
    bindir, calls = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir(exist_ok=True)
    calls.mkdir(exist_ok=True)
    (bindir / "python3").write_text(fake)
    (bindir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls),
           "CPPO_HARVEST_EVERY_S": "0.05"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc, proc.stderr
    return proc.stderr, [p.read_text().splitlines() for p in sorted(calls.iterdir())]


def test_script_resumes_from_the_last_checkpoint(tmp_path):
    """A retried job re-runs the same script: with a complete checkpoint, verl gets the run's checkpoint
    folder and resume_mode=auto (it continues from the tracker's step), and the log says which step."""
    run_dir = tmp_path / "runs" / "setting~default" / "seed~1"
    ckpt = run_dir / "checkpoints"
    (ckpt / "global_step_20" / "actor").mkdir(parents=True)  # a pre-empted attempt: step 20 saved
    (ckpt / "latest_checkpointed_iteration.txt").write_text("20")
    log, calls = _run_script(tmp_path, run_dir)
    assert len(calls) == 1
    assert f"trainer.default_local_dir={ckpt}" in calls[0] or f"trainer.default_local_dir='{ckpt}'" in calls[0]
    assert "trainer.resume_mode=auto" in calls[0]
    assert f"resuming from {ckpt}/global_step_20" in log
    assert (run_dir / "final").resolve() == (ckpt / "global_step_40" / "actor" / "huggingface").resolve()
    assert (run_dir / "done").exists()


def test_script_starts_fresh_without_a_complete_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    log, calls = _run_script(tmp_path, run_dir)
    assert len(calls) == 1 and "no checkpoint yet: starting from step 0" in log
    # a step folder without verl's tracker file is a save that never completed: verl starts over, and says so
    run2 = tmp_path / "run2"
    (run2 / "checkpoints" / "global_step_20").mkdir(parents=True)
    log, _ = _run_script(tmp_path, run2)
    assert "no complete checkpoint: starting from step 0" in log


def test_script_does_not_rerun_a_finished_run(tmp_path):
    """Killed after the final checkpoint but before `done`: the retry links the weights, verl does not run."""
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    (ckpt / "global_step_40" / "actor" / "huggingface").mkdir(parents=True)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("40\n")
    log, calls = _run_script(tmp_path, run_dir, steps=40)
    assert calls == [] and "final step 40: not starting verl" in log
    assert (run_dir / "done").exists() and (run_dir / "final").resolve() == (ckpt / "global_step_40" / "actor" / "huggingface")


# --------------------------------------------------------------------------- intermediate steps (eval.every)
FAKE_PRUNING_VERL = """#!/usr/bin/env bash
# stands in for verl: a checkpoint with HF weights every save_freq steps from the tracker's step on, the
# tracker written after each, and retention as verl's: before a save it keeps max_actor_ckpt_to_keep - 1
printf '%s\\n' "$@" > "$CALLS/argv.$(ls "$CALLS" | wc -l)"
for a in "$@"; do case "$a" in trainer.default_local_dir=*) d="${a#*=}";; trainer.total_training_steps=*) t="${a#*=}";;
  trainer.save_freq=*) f="${a#*=}";; trainer.max_actor_ckpt_to_keep=*) k="${a#*=}";; esac; done
q="'"; d="${d#$q}"; d="${d%$q}"
saved=()
for ((s = $(cat "$d/latest_checkpointed_iteration.txt" 2>/dev/null || echo 0) + f; s <= t; s += f)); do
    if [ "${#saved[@]}" -ge "$k" ]; then
        old="${saved[0]}"; saved=("${saved[@]:1}")
        # a real save interval is minutes: give the harvest (polling every 0.05 s here) up to 5 s
        for i in $(seq 100); do [ -e "$d/../steps/step_$old" ] && break; sleep 0.05; done
        rm -rf "$d/global_step_$old/actor"
    fi
    mkdir -p "$d/global_step_$s/actor/huggingface"
    echo "weights of step $s" > "$d/global_step_$s/actor/huggingface/config.json"
    saved+=("$s")
    echo "$s" > "$d/latest_checkpointed_iteration.txt"
done
"""
KEEP = ["eval.every=20", "rl.keep_checkpoints=2"]


def test_script_keeps_the_hf_weights_of_every_evaluated_step(tmp_path):
    """verl with retention 2 deletes step 20 when it saves step 60: the script has hard-linked it to
    steps/step_20 by then, and steps 40 and 60 too (same inode as verl's file: no bytes copied)."""
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    log, calls = _run_script(tmp_path, run_dir, steps=60, sets=KEEP, fake=FAKE_PRUNING_VERL)
    assert len(calls) == 1 and "trainer.max_actor_ckpt_to_keep=2" in calls[0]
    assert not (ckpt / "global_step_20" / "actor").exists()  # pruned as verl would
    for n in (20, 40, 60):
        kept = run_dir / "steps" / f"step_{n}" / "config.json"
        assert kept.read_text() == f"weights of step {n}\n", n
        assert f"kept the HF weights of step {n}" in log
        if n > 20:
            src = ckpt / f"global_step_{n}" / "actor" / "huggingface" / "config.json"
            assert kept.stat().st_ino == src.stat().st_ino
    assert sorted(p.name for p in (run_dir / "steps").iterdir()) == ["step_20", "step_40", "step_60"]  # no .tmp left
    assert "warning" not in log
    assert (run_dir / "final").resolve() == (ckpt / "global_step_60" / "actor" / "huggingface")
    assert (run_dir / "done").exists()


def test_harvest_on_a_finished_run_is_idempotent(tmp_path):
    """The retry of a run killed after its final checkpoint: no verl, the final pass keeps what is left,
    names the step that is gone, and a second pass changes nothing (a killed pass's .tmp is redone)."""
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    for n in (40, 60):
        (ckpt / f"global_step_{n}" / "actor" / "huggingface").mkdir(parents=True)
        (ckpt / f"global_step_{n}" / "actor" / "huggingface" / "config.json").write_text(str(n))
    (ckpt / "global_step_80" / "actor" / "huggingface").mkdir(parents=True)  # not complete: above the tracker
    (ckpt / "latest_checkpointed_iteration.txt").write_text("60")
    (run_dir / "steps" / ".step_40.tmp").mkdir(parents=True)  # a pass killed mid-copy
    for _ in range(2):
        log, calls = _run_script(tmp_path, run_dir, steps=60, sets=KEEP)
        assert calls == [] and "not starting verl" in log
        assert sorted(p.name for p in (run_dir / "steps").iterdir()) == ["step_40", "step_60"]
        assert "no HF weights kept for step 20" in log
        src = ckpt / "global_step_40" / "actor" / "huggingface" / "config.json"
        assert (run_dir / "steps" / "step_40" / "config.json").stat().st_ino == src.stat().st_ino
    assert "kept the HF weights" not in log  # the second pass found both kept


def test_harvest_stops_when_verl_fails(tmp_path):
    """verl crashes after saving step 20: the script fails (the retry resumes) without hanging on the
    background loop, and what the loop kept stays."""
    head = FAKE_PRUNING_VERL.rpartition("done\n")[0]  # stop after the first save, once the loop kept it
    crash = head + ('    break\ndone\n'
                    'for i in $(seq 100); do [ -e "$d/../steps/step_20" ] && break; sleep 0.05; done\nexit 1\n')
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    _run_script(tmp_path, run_dir, steps=60, sets=KEEP, fake=crash, rc=1)
    assert time.monotonic() - t0 < 30
    assert (run_dir / "steps" / "step_20" / "config.json").read_text() == "weights of step 20\n"
    assert not (run_dir / "steps" / "step_40").exists() and not (run_dir / "done").exists()


def test_script_without_eval_every_keeps_no_steps(cfg):
    assert "harvest" not in _cmd(cfg, "cppo", "qwen3_1p7b").script()
    assert _cmd(load_config(FIXTURE, FIXED + KEEP), "cppo", "qwen3_1p7b").keep_every == 20


@pytest.mark.parametrize("sets, words", [
    (["eval.every=20"], ["eval.every=20", "rl.keep_checkpoints >= 2", "has 1"]),
    (KEEP[1:] + ["eval.every=30"], ["eval.every=30", "rl.save_every=20"]),
    (KEEP + ["scales.qwen3_1p7b.rl.save_every=40"], ["eval.every=20", "rl.save_every=40", "qwen3_1p7b"]),
])
def test_eval_every_errors_are_one_line(tmp_path, capsys, sets, words):
    from cppo.cli import main

    argv = ["verl-cmd", str(FIXTURE), "--method", "cppo", "--scale", "qwen3_1p7b", "--seed", "1",
            "--run-dir", str(tmp_path / "run"), "--format", "script", "--out", str(tmp_path / "run.sh")]
    assert main(argv + [a for kv in sets for a in ("--set", kv)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("cppo verl-cmd: "), err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run.sh").exists()


def test_multi_node_script_under_snakemakes_slurm_job_step(tmp_path):
    """The 30B-A3B script in the environment snakemake's SLURM job step leaves (SLURM_JOB_ID, no node
    list, no CPUs per task), with fake squeue / scontrol / srun / sleep / python3 on PATH: Ray starts
    on both nodes with the job's CPUs per task, then verl runs with RAY_ADDRESS."""
    bindir, calls = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    calls.mkdir()
    fakes = {
        "squeue": 'echo "gpu[01-02]"',
        "scontrol": 'if [ "$1 $2" = "show hostnames" ]; then printf "gpu01\\ngpu02\\n"; '
                    'else echo "JobId=7 NumNodes=2 CPUs/Task=64 TRES=cpu=128,gres/gpu=16"; fi',
        "srun": 'echo "$*" >> "$CALLS/srun"; case "$*" in *hostname*) echo 10.0.0.1;; esac',
        "sleep": "true",
        "python3": 'echo "RAY_ADDRESS=$RAY_ADDRESS" > "$CALLS/verl"',
    }
    for name, body in fakes.items():
        (bindir / name).write_text("#!/usr/bin/env bash\n" + body + "\n")
        (bindir / name).chmod(0o755)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "global_step_560" / "actor" / "huggingface").mkdir(parents=True)
    paper = load_config(REPO / "config" / "paper.yaml", FIXED)
    script = tmp_path / "run.sh"
    script.write_text(_cmd(paper, "cppo", "30b-a3b-base", run_dir=run_dir).script())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bindir}{os.pathsep}{env['PATH']}", CALLS=str(calls), SLURM_JOB_ID="7")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert (calls / "verl").read_text().strip() == "RAY_ADDRESS=10.0.0.1:6379"
    for _ in range(50):  # the `ray start` steps run in the background
        steps = (calls / "srun").read_text().splitlines()
        if len(steps) >= 3:
            break
        time.sleep(0.1)
    assert len(steps) == 3 and all("--cpus-per-task=64" in s for s in steps)
    assert "-w gpu01 hostname" in steps[0]
    assert sum("-w gpu01 ray start --head" in s for s in steps) == 1
    assert sum("-w gpu02 ray start --address=10.0.0.1:6379" in s for s in steps) == 1
    assert proc.returncode != 0 and "latest_checkpointed_iteration.txt" in proc.stderr  # no tracker: no `done`
    assert not (run_dir / "done").exists()
    # fewer nodes than verl.nnodes: one clear error before anything starts
    (bindir / "scontrol").write_text('#!/usr/bin/env bash\necho gpu01\n')
    (calls / "srun").unlink()
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "this run needs 2 nodes, the allocation has 1" in proc.stderr
    assert not (calls / "srun").exists()


def test_retries_and_nodes_come_from_the_profile():
    from cppo.config import read_profile
    from cppo.integrations.verl_backend import VerlSettings, settings_for

    paper = read_profile(REPO / "config" / "paper.yaml")
    assert settings_for(paper, "30b-a3b-base").nnodes == 2 and settings_for(paper, "8b-base").nnodes == 1
    assert settings_for(paper, "1.7b").retries == paper["verl"]["retries"] >= 3  # multi-day runs get retried
    assert VerlSettings().retries >= 3
    over = read_profile(REPO / "config" / "paper.yaml", ['scales."30b-a3b-base".verl.retries=9'])
    assert settings_for(over, "30b-a3b-base").retries == 9 and settings_for(over, "1.7b").retries == paper["verl"]["retries"]
    with pytest.raises(ValueError, match=r"verl.retries: -1 is less than the minimum of 0"):  # the profile schema
        settings_for(read_profile(REPO / "config" / "paper.yaml", ["verl.retries=-1"]), "1.7b")
    with pytest.raises(ValueError, match="unknown scale"):
        settings_for(paper, "1.7")


def test_paper_keeps_two_checkpoints_and_quoted_scale_override():
    paper = load_config(REPO / "config" / "paper.yaml", FIXED + ['scales."1.7b".rl.steps=5'])
    o = _cmd(paper, "cppo", "1.7b").override_map()
    assert o["trainer.total_training_steps"] == "5" and o["trainer.max_actor_ckpt_to_keep"] == "2"
    assert _cmd(paper, "cppo", "1.7b-base").override_map()["trainer.total_training_steps"] == "680"
