"""Every `cppo` entry point that reads a profile runs the pipeline's schema check (cppo/schema.py):
a profile Snakemake rejects fails here too, with the same one-line message and no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cppo.cli import main

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "config key grid.seeds.1: 'two' is not of type 'integer'"


@pytest.fixture
def bad_profile(tmp_path) -> Path:
    """config/tiny.yaml with a seed Snakemake rejects (`grid.seeds: [1, two, 3]`)."""
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg["grid"]["seeds"] = [1, "two", 3]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _any(cfg: dict, key: str) -> str:
    return str(cfg[key][0] if isinstance(cfg[key], list) else next(iter(cfg[key])))


@pytest.mark.parametrize("command", ["train", "sft", "eval", "report", "mlflow-init", "verl-cmd"])
def test_every_entry_point_rejects_what_the_pipeline_rejects(command, bad_profile, tmp_path, capsys, mlflow_uri):
    cfg = yaml.safe_load(bad_profile.read_text())
    method, scale = _any(cfg["grid"], "methods"), _any(cfg["grid"], "scales")
    run = ["--method", method, "--scale", scale, "--seed", "1"]
    argv = {
        "train": ["train", str(bad_profile), *run, "--run-dir", str(tmp_path / "run"), "--no-mlflow"],
        "sft": ["sft", str(bad_profile), "--scale", scale, "--out", str(tmp_path / "base")],
        "eval": ["eval", "oracle", "--backend", "oracle", "--config", str(bad_profile), "--out", str(tmp_path / "e.json")],
        "report": ["report", str(bad_profile), "--out", str(tmp_path / "rep"), "--no-mlflow"],
        "mlflow-init": ["mlflow-init", str(bad_profile)],
        "verl-cmd": ["verl-cmd", str(bad_profile), *run],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^cppo {command}: (error: )?{re.escape(MESSAGE)}$", err, re.M), err
    assert "Traceback" not in err
    assert not any(p.name != "bad.yaml" for p in tmp_path.iterdir() if p.suffix != ".db"), "nothing written"


def test_cppo_train_command_line_prints_one_line(bad_profile, tmp_path):
    """The installed command, as a user runs it."""
    res = subprocess.run([str(Path(sys.executable).parent / "cppo"), "train", str(bad_profile), "--method", "cppo",
                          "--scale", "s", "--seed", "1", "--run-dir", str(tmp_path / "run"), "--no-mlflow"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == f"cppo train: error: {MESSAGE}"


def test_overrides_are_checked_too(tmp_path, capsys):
    assert main(["train", str(REPO / "config" / "tiny.yaml"), "--method", "cppo", "--scale", "s", "--seed", "1",
                 "--run-dir", str(tmp_path / "run"), "--no-mlflow", "--set", "rl.lr=fast"]) == 2
    assert "cppo train: error: config key rl.lr: 'fast' is not of type 'number'" in capsys.readouterr().err


def test_config_check_script_uses_the_same_check(bad_profile):
    script = REPO / "workflow" / "scripts" / "config_check.py"
    ok = subprocess.run([sys.executable, str(script), str(REPO / "config" / "tiny.yaml")], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("tiny.yaml: ok")
    bad = subprocess.run([sys.executable, str(script), str(bad_profile)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip() == f"{bad_profile}: {MESSAGE}"
