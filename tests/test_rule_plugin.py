"""The "Adding a new rule" example of docs/rules.md, followed literally from a separate package.

A throw-away package is built in tmp_path from the page's own text: its module is the example's
Python block, its pyproject.toml carries the example's `[project.entry-points."cppo.rules"]` block,
and it is installed with pip (no index, no build isolation) into a folder that only this test puts
on the path. A copy of config/tiny.yaml then gets the example's method line; Snakemake must plan the
method's runs and `cppo train` must train one, while no file of this repository changes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _worked_example() -> dict[str, str]:
    """The example's module source, entry-point block and method line, as docs/rules.md prints them."""
    page = (REPO / "docs" / "rules.md").read_text()
    section = page.split("## Adding a new rule (worked example)", 1)[1].split("\n## ", 1)[0]
    step1, rest = section.split("**2. Register the name.**", 1)
    step2, step3 = rest.split("**3. ", 1)
    module = re.search(r"```python\n(.*?)```", step1, re.S)
    toml = re.search(r"```toml\n(.*?)```", step2, re.S)
    method = re.search(r"`(\w+): (\{rule: ratio_band[^`]*\})`", step3)
    assert module and toml and method, "docs/rules.md's worked example lost its module, entry point or method line"
    return {"module": module.group(1), "entry_points": toml.group(1), "method": method.group(1),
            "params": method.group(2)}


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


def _install_package(tmp_path: Path, ex: dict[str, str]) -> Path:
    """Build and install the example as its own distribution into tmp_path/site; return that folder."""
    target = re.search(r'^ratio_band = "([\w.]+)\.(\w+):(\w+)"$', ex["entry_points"], re.M)
    assert target, ex["entry_points"]
    package, module = target.group(1), target.group(2)
    src = tmp_path / "pkg"
    (src / package).mkdir(parents=True)
    (src / package / "__init__.py").write_text("")
    (src / package / f"{module}.py").write_text(ex["module"])
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{package.replace("_", "-")}"\nversion = "0.0.1"\n\n'
        f'[tool.setuptools]\npackages = ["{package}"]\n\n' + ex["entry_points"])
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    eps = list(site.glob("*.dist-info/entry_points.txt"))
    assert eps and "[cppo.rules]" in eps[0].read_text()
    return site


@pytest.mark.timeout(600)  # about 15 s on 2 cores (pip, a Snakemake dry run, 2 RL steps): not marked slow
def test_a_rule_from_another_package_is_planned_and_trained(tmp_path, monkeypatch, capsys):
    from cppo.cli import main
    from cppo.models import build_model, build_tokenizer, save_checkpoint
    from cppo.rules import registry
    from cppo.schema import ConfigError, check_config
    from cppo.tasks.chain import ChainTask

    before = _git_status()
    ex = _worked_example()
    name = ex["method"]

    # step 3 in a user's own profile: a copy of config/tiny.yaml with the method, on a small grid
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg["profile"] = "plugin"
    cfg["methods"][name] = yaml.safe_load(ex["params"])
    scale = cfg["grid"]["scales"][0]
    cfg["grid"].update(methods=[name], scales=[scale], seeds=[1], runs_per_job=1)  # one train job per run
    (cfg.get("report") or {}).pop("comparisons", None)  # they name the profile's methods, absent from this grid
    settings = cfg["grid"].get("settings") or ["default"]
    ref = cfg["grid"].get("reference")  # the on-policy rung is trained with the reference method only
    planned_settings = [s for s in settings if not ref or s != ref["setting"]]
    profile = tmp_path / "plugin.yaml"
    profile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError, match="'ratio_band' is not one of the registered rules"):
        check_config(cfg)  # not installed yet: the check can fail

    site = _install_package(tmp_path, ex)

    # Snakemake plans the method's runs (its own process finds the entry point through PYTHONPATH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "--configfile",
                          str(profile)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    planned = set(re.findall(rf"results/plugin/runs/setting~([^/]+)/method~{name}/scale~{scale}/seed~1/done", out))
    assert planned == set(planned_settings), out[-3000:]
    train_jobs = re.search(r"^train\s+(\d+)$", out.split("Job stats:", 1)[1], re.M)
    assert train_jobs and int(train_jobs.group(1)) == len(settings)  # + the reference run

    # in this process: the same package on the path; undone (registry, modules) after the test
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    modules = set(sys.modules)
    try:
        assert main(["rules", "ratio_band"]) == 0
        shown = capsys.readouterr().out
        assert "low" in shown and "high" in shown

        # `cppo train ... --steps 2` from an untrained model of the scale; a random model never solves the
        # chain task, so reward odd-length responses to give groups variance and make the rule act
        tok = build_tokenizer()
        save_checkpoint(build_model(cfg["scales"][scale], tok, seed=0), tok, tmp_path / "init")
        monkeypatch.setattr(ChainTask, "rewards", lambda self, responses, answers, stopped=None:
                            [float(len(r) % 2) for r in responses])
        run = tmp_path / "run"
        setting = [] if settings == ["default"] else ["--setting", planned_settings[-1]]
        rc = main(["train", str(profile), "--method", name, "--scale", scale, "--seed", "1", *setting,
                   "--steps", "2", "--run-dir", str(run), "--init", str(tmp_path / "init"), "--no-mlflow",
                   "--no-progress", "--set", "rl.eval_every=0", "--set", "rl.eval_n=4",
                   "--set", "rl.prompts_per_rollout=4", "--set", "rl.samples_per_prompt=4",
                   "--set", "rl.updates_per_rollout=2"])
        assert rc == 0, capsys.readouterr().err
    finally:
        for m in set(sys.modules) - modules:
            if m.split(".")[0] not in ("cppo", "baselines", "evals", "torch", "transformers"):
                sys.modules.pop(m, None)
    assert (run / "done").is_file()
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["method"]["rule"] == "ratio_band" and resolved["method"]["name"] == name
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if "train/updates" in s]
    assert [s["step"] for s in trained] == [1, 2]
    assert trained[-1]["train/updates"] > 0 and "rule/masked_frac" in trained[-1]

    assert _git_status() == before, "the test changed files of the repository"
