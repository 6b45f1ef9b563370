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


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not an exact pin (name==version)"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_every_dependency_within_pyproject():
    """requirements.lock (scripts/lock) holds a version of each runtime and test dependency that
    pyproject.toml allows: a dependency changed without re-running scripts/lock fails here."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _locked()
    assert "cppo-bench" not in pins, "the project itself is installed by scripts/bootstrap, not pinned"
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        r = Requirement(spec)
        name = r.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a dependency but not in requirements.lock: run scripts/lock"
        assert r.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {r.specifier}: run scripts/lock"
