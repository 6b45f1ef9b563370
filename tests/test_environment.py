"""environment.yml must list exactly the dependencies of pyproject.toml (runtime + test extra)."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _norm(spec: str) -> tuple[str, str]:
    r = Requirement(spec)
    return r.name.lower().replace("_", "-"), str(r.specifier)


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_norm(s) for s in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_norm(s) for s in pip_section if not s.startswith("-e")}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"
    assert any(s.strip() == "-e ." for s in pip_section), "environment.yml must install the project itself"
