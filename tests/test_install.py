"""A non-editable install works from any folder: the schema is package data, nothing is read from
(or written beside) the checkout the package was built from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_non_editable_install_validates_a_profile_from_another_folder(tmp_path):
    src, site, work = tmp_path / "src", tmp_path / "site", tmp_path / "work"
    # a copy of what the wheel is built from, so the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("cppo", "evals", "baselines"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    # the project only, no dependencies (they come from this environment) and no network (no build isolation)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-compile", "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert (site / "cppo" / "config.schema.yaml").is_file()

    work.mkdir()
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    (work / "good.yaml").write_text(yaml.safe_dump(cfg))
    cfg["rl"]["lerning_rate"] = 1e-3
    (work / "bad.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(site)  # ahead of this environment's own (editable) cppo

    def cppo(*argv):
        return subprocess.run([str(site / "bin" / "cppo"), *argv], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import cppo, cppo.schema as s; print(cppo.__file__, s.SCHEMA)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.split() == [str(site / "cppo" / "__init__.py"), str(site / "cppo" / "config.schema.yaml")]
    run = ["--method", "cppo", "--scale", "s", "--seed", "1", "--run-dir", "run", "--no-mlflow"]
    bad = cppo("train", "bad.yaml", *run)
    assert bad.returncode == 2 and "unknown config key rl.lerning_rate" in bad.stderr, bad.stderr
    good = cppo("train", "good.yaml", *run)  # past the schema check, it stops at the missing base model
    assert good.returncode == 2 and "base checkpoint of scale 's' not found at results/tiny/base" in good.stderr, \
        good.stderr
    assert sorted(p.name for p in work.iterdir()) == ["bad.yaml", "good.yaml"]
