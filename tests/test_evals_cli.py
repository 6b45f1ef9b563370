"""`cppo eval`: JSON result, per-sample log, profile defaults, MLflow eval/<benchmark>/<metric> at the step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cppo.cli import main as cppo_main

REPO = Path(__file__).resolve().parents[1]


def _mlflow_run(uri: str) -> str:
    import mlflow

    c = mlflow.MlflowClient(uri)
    exp = c.create_experiment("evals-cli-test")
    return c.create_run(exp).info.run_id


@pytest.mark.usefixtures("data_dir")
def test_eval_writes_json_samples_log_and_mlflow(tmp_path, mlflow_uri):
    run_id = _mlflow_run(mlflow_uri)
    out, log = tmp_path / "eval" / "res.json", tmp_path / "samples.jsonl"
    rc = cppo_main(["eval", "oracle", "--backend", "oracle", "--benchmarks", "chain_id,aime25",
                    "--config", str(REPO / "config" / "tiny.yaml"), "--limit", "3", "--out", str(out),
                    "--samples-log", str(log), "--mlflow-run-id", run_id, "--step", "7"])
    assert rc == 0
    res = json.loads(out.read_text())
    # n, temperature, top_p and max_tokens come from the profile's eval section
    assert res["settings"]["n"] == 4 and res["settings"]["max_tokens"] == 40
    assert res["settings"]["chain"]["ood_K"] == 32
    for name in ("chain_id", "aime25"):
        b = res["benchmarks"][name]
        assert b["metrics"]["avg@4"] == 1.0 and b["n_problems"] == 3 and b["samples_log"] == str(log)
        assert "samples" not in b
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 2 * 3 * 4
    assert set(rows[0]) == {"benchmark", "problem_id", "sample", "prompt", "response", "extracted", "gold", "correct"}
    aime = [r for r in rows if r["benchmark"] == "aime25"]
    assert all(r["correct"] and r["extracted"] == r["gold"] for r in aime)
    assert res["mlflow"] == {"run_id": run_id, "step": 7}
    assert "git_commit" in res["provenance"]

    import mlflow

    from cppo.tracking import sanitize_key

    c = mlflow.MlflowClient(mlflow_uri)
    for name in ("chain_id", "aime25"):
        for metric in ("avg@4", "pass@1", "pass@4", "maj@4"):
            hist = c.get_metric_history(run_id, sanitize_key(f"eval/{name}/{metric}"))
            assert [(m.step, m.value) for m in hist] == [(7, 1.0)], (name, metric)


@pytest.mark.usefixtures("data_dir")
def test_eval_embeds_samples_without_samples_log_and_uses_paper_defaults(tmp_path):
    out = tmp_path / "r.json"
    assert cppo_main(["eval", "x", "--backend", "oracle", "--benchmarks", "amc23", "--limit", "2",
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (res["settings"]["n"], res["settings"]["temperature"], res["settings"]["top_p"]) == (16, 0.7, 0.95)
    b = res["benchmarks"]["amc23"]
    assert len(b["samples"]) == 2 * 16 and b["metrics"]["avg@16"] == 1.0
    assert list(b["metrics"]) == ["avg@16", "pass@1", "pass@2", "pass@4", "pass@8", "pass@16", "maj@16"]


@pytest.mark.parametrize("argv, msg", [
    (["eval", "m", "--benchmarks", "aime24"], "--out"),
    (["eval", "m", "--out", "x.json"], "--benchmarks"),
    (["eval", "m", "--benchmarks", "nope", "--out", "x.json"], "unknown benchmark"),
    (["eval", "m", "--benchmarks", "aime24", "--out", "x.json", "--mlflow-run-id", "abc"], "--step"),
    (["eval", "m", "--benchmarks", "aime24", "--out", "x.json", "--n", "0"], "n must be"),
])
def test_bad_invocations_fail_with_a_message(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cppo_main(argv) == 2
    assert msg in capsys.readouterr().err


def test_missing_checkpoint_folder_is_one_line(tmp_path, capsys):
    """A mistyped folder is reported as such, not as a 78-line traceback about hub repo ids."""
    rc = cppo_main(["eval", "/no/such/folder", "--benchmarks", "math500", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "/no/such/folder does not exist" in err
    assert not (tmp_path / "r.json").exists()


def test_hub_model_without_network_is_one_line_within_seconds(tmp_path):
    """A hub name that is neither cached nor reachable: one line saying what to do, not 2 minutes of retries.
    Offline mode and an empty cache, so nothing here touches the network."""
    import os
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "cppo.cli", "eval", "Qwen/Qwen3-0.6B", "--benchmarks", "gsm8k",
                        "--out", str(tmp_path / "o.json")], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=60)
    took = time.perf_counter() - t0
    err = p.stderr.strip()
    assert p.returncode == 2 and len(err.splitlines()) == 1, err
    assert "not in the local Hugging Face cache" in err and "HF_HUB_OFFLINE" in err and "local checkpoint folder" in err
    assert took < 20 and not (tmp_path / "o.json").exists()


def test_unreachable_hub_is_one_line(monkeypatch):
    """Hub mode on, but the one request to the hub fails (here: a stand-in session that refuses)."""
    from huggingface_hub import constants
    import huggingface_hub.utils as hf_utils

    from cppo.models import check_hub_model

    class Refusing:
        def head(self, url, timeout):
            assert timeout <= 5
            raise ConnectionError("no route to host")

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(hf_utils, "get_session", lambda: Refusing())
    with pytest.raises(FileNotFoundError, match=r"cannot reach the hub .*ConnectionError.* local checkpoint folder"):
        check_hub_model("nobody/no-such-model")


def test_eval_defaults_have_one_source():
    """`cppo eval` without flags or profile values samples exactly as the typed profile section defaults say."""
    import argparse

    from cppo.config import EvalConfig
    from evals.cli import add_arguments, settings_from_args
    from evals.harness import EvalSettings

    p = argparse.ArgumentParser()
    add_arguments(p)
    ec, es = EvalConfig(), EvalSettings()
    cli = settings_from_args(p.parse_args(["m"]), {})
    assert (cli.n, cli.temperature, cli.top_p) == (ec.n, ec.temperature, ec.top_p) == (es.n, es.temperature, es.top_p)
    assert cli.max_tokens is None and ec.max_tokens is None  # each benchmark's own budget
    partial = settings_from_args(p.parse_args(["m", "--top-p", "0.5"]), {"eval": {"temperature": 0}})
    assert (partial.n, partial.temperature, partial.top_p) == (ec.n, 0.0, 0.5)


def test_list_and_help_are_fast_and_light():
    """`cppo eval --help` / `--list` must not import torch, lm-eval or MLflow."""
    code = ("import sys; from cppo.cli import main; rc = main(['eval', '--list']); "
            "heavy = [m for m in ('torch', 'lm_eval', 'mlflow', 'transformers') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "aime24" in p.stdout and "chain_ood" in p.stdout
    assert "HEAVY []" in p.stdout


def _run_folder(root: Path, kept: list[int], final: int) -> Path:
    """A finished run folder with the weights of `kept` steps (a config.json stands for the weights)."""
    for n in kept:
        (root / "steps" / f"step_{n}").mkdir(parents=True)
        (root / "steps" / f"step_{n}" / "config.json").write_text("{}")
    (root / "steps" / ".step_9.tmp-x").mkdir(parents=True)  # a killed write: not a checkpoint
    (root / "final").mkdir()
    (root / "done").write_text(json.dumps({"step": final, "stopped_reason": None}))
    return root


def test_run_checkpoints_lists_kept_steps_base_and_final(tmp_path):
    from evals.cli import run_checkpoints

    run = _run_folder(tmp_path / "r", [0, 5, 10, 15], final=10)
    # step 10 is evaluated from final/ (the same weights); step 15 lies past the final step (a stale folder)
    assert run_checkpoints(run) == [(0, str(run / "steps" / "step_0")), (5, str(run / "steps" / "step_5")),
                                    (10, str(run / "final"))]
    assert run_checkpoints(run, base="org/model")[0] == (0, str(run / "steps" / "step_0"))  # a kept step 0 wins
    hub = _run_folder(tmp_path / "v", [20, 40], final=60)  # verl: no step 0 kept, the hub model stands for it
    assert [s for s, _ in run_checkpoints(hub, base="org/model")] == [0, 20, 40, 60]
    assert run_checkpoints(hub, base="org/model")[0] == (0, "org/model")
    with pytest.raises(FileNotFoundError, match="final not found"):
        run_checkpoints(tmp_path)


def test_eval_run_scores_every_checkpoint_logs_each_step_and_reuses_results(tmp_path, mlflow_uri, capsys):
    run_id = _mlflow_run(mlflow_uri)
    run = _run_folder(tmp_path / "run", [0, 5], final=10)
    out = run / "eval" / "_all.json"
    argv = ["eval", "--run", str(run), "--backend", "oracle", "--benchmarks", "chain_id", "--n", "2", "--limit", "3",
            "--out", str(out), "--mlflow-run-id", run_id, "--no-progress"]
    assert cppo_main(argv) == 0
    files = {n: run / "eval" / "steps" / f"step_{n}.json" for n in (0, 5, 10)}
    assert sorted((run / "eval" / "steps").iterdir()) == sorted(files.values())
    for n, f in files.items():
        r = json.loads(f.read_text())
        assert r["step"] == n and r["benchmarks"]["chain_id"]["metrics"]["avg@2"] == 1.0
    assert json.loads(files[10].read_text())["model"] == str(run / "final")
    res = json.loads(out.read_text())
    assert sorted(res["steps"], key=int) == ["0", "5", "10"] and res["model"] == str(run / "final")
    assert res["mlflow"] == {"run_id": run_id, "step": 10}

    import mlflow

    hist = mlflow.MlflowClient(mlflow_uri).get_metric_history(run_id, "eval/chain_id/avg_at_2")
    assert sorted(m.step for m in hist) == [0, 5, 10]

    # a second call reuses the per-step results of the same settings; other settings evaluate again
    stamps = {n: f.stat().st_mtime_ns for n, f in files.items()}
    assert cppo_main(argv[:-3] + ["--no-progress"]) == 0
    assert {n: f.stat().st_mtime_ns for n, f in files.items()} == stamps
    assert cppo_main([a if a != "2" else "3" for a in argv[:-3]] + ["--no-progress"]) == 0
    assert json.loads(files[5].read_text())["settings"]["n"] == 3


@pytest.mark.parametrize("argv, match", [
    (["eval", "m", "--run", "r"], "not both"),
    (["eval", "--run", "r", "--step", "3"], "--step is not used with --run"),
    (["eval", "m", "--base", "b"], "--base goes with --run"),
])
def test_eval_run_bad_calls_are_one_line(tmp_path, capsys, argv, match):
    assert cppo_main(argv + ["--out", str(tmp_path / "o.json"), "--backend", "oracle", "--benchmarks", "chain_id"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_missing_vllm_is_one_line_before_any_model_is_loaded(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    rc = cppo_main(["eval", str(tmp_path / "nowhere"), "--backend", "vllm", "--benchmarks", "chain_id",
                    "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("cppo eval: backend 'vllm' needs vLLM") and len(err.splitlines()) == 1
    assert not (tmp_path / "o.json").exists()


def test_eval_run_isolates_each_checkpoint_of_a_gpu_engine_in_its_own_process(tmp_path, monkeypatch):
    """vLLM keeps GPU memory per engine: with --run each checkpoint is scored in a spawned child process.
    Shown with the oracle backend marked as isolated: one child per checkpoint, the same results."""
    import evals.cli as cli

    run = _run_folder(tmp_path / "run", [0], final=3)
    argv = ["eval", "--run", str(run), "--backend", "oracle", "--benchmarks", "chain_id", "--n", "2", "--limit", "2",
            "--no-progress"]
    assert cppo_main(argv + ["--out", str(tmp_path / "a.json")]) == 0
    inline = json.loads((tmp_path / "a.json").read_text())
    calls = []
    real = cli._evaluate_isolated
    monkeypatch.setattr(cli, "ISOLATED_BACKENDS", {"oracle"})
    monkeypatch.setattr(cli, "_evaluate_isolated", lambda *a: calls.append(a[0]) or real(*a))
    monkeypatch.setattr(cli, "_reusable", lambda *a: None)  # score again
    assert cppo_main(argv + ["--out", str(tmp_path / "b.json")]) == 0
    assert calls == [str(run / "steps" / "step_0"), str(run / "final")]
    assert json.loads((tmp_path / "b.json").read_text())["steps"] == inline["steps"]
