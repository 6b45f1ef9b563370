"""Parity of our rules with verl 0.9.1 (issue 2): runs tests/verl_parity/check.py in .venv-verl.

verl pins transformers < 5.11, so it lives in its own environment, built by `scripts/bootstrap-verl`.
The check runs once per session in a subprocess; each of its checks is one test item here:
- discovery: importing verl registers our losses through the `verl.plugins` entry point;
- ppo_clip/<agg>: our ppo_clip + aggregation == verl's compute_policy_loss_vanilla + agg_loss;
- dppo/<agg>: our dppo (binary TV, anchor old) == verl's dppo_tv;
- registry/<rule>: each rule called through verl's registry == the rule called directly;
- verl/<loss>/<agg>: every other policy loss verl 0.9.1 registers (bypass_mode aside: a mode, not a loss)
  == our rule at verl's settings (issue 20);
- rollout_corr/<case>: our rollout correction == verl's on the same (π_old, μ), and composed with a loss.

Skipped (with the reason) only when .venv-verl is missing and CI is not set; under CI=true a missing
environment is a failure, so CI cannot pass without running the parity checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cppo.rules import AGG_MODES, list_rules

REPO = Path(__file__).resolve().parents[1]
VERL_PY = REPO / ".venv-verl" / "bin" / "python"
CHECK = REPO / "tests" / "verl_parity" / "check.py"

pytestmark = pytest.mark.verl

# verl's policy losses besides vanilla (ppo_clip/) and dppo_tv (dppo/), each against our rule
VERL_LOSSES = ("dppo_kl", "gspo", "cispo", "sapo", "gpg", "clip_cov", "kl_cov", "geo_mean", "dro")
ROLLOUT_CORR = (["is_token_tis", "is_sequence_tis", "is_token_icepop", "is_sequence_icepop", "is_token_tis_normalized",
                 "is_sequence_tis_normalized"]
                + [f"rs_{o}" for o in ("token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2", "seq_sum_k3",
                                       "seq_mean_k1", "seq_mean_k2", "seq_mean_k3", "seq_max_k2", "seq_max_k3")]
                + ["is_and_rs_chained", "applied"])
EXPECTED = (["discovery"] + [f"ppo_clip/{a}" for a in AGG_MODES] + [f"dppo/{a}" for a in AGG_MODES]
            + [f"registry/{r}" for r in list_rules()] + ["loss_fn_inputs"]
            + [f"ppo_loss_path/{a}" for a in AGG_MODES] + [f"data_parallel/{a}" for a in AGG_MODES]
            + [f"verl/{m}/{a}" for m in VERL_LOSSES for a in AGG_MODES]
            + [f"rollout_corr/{c}" for c in ROLLOUT_CORR])


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def parity() -> dict:
    if not VERL_PY.exists():
        msg = f"{VERL_PY.parent.parent} is missing: run scripts/bootstrap-verl (about 1.5 min, 1.4 GB)"
        if _in_ci():
            pytest.fail(f"CI is set but the verl parity environment is absent. {msg}")
        pytest.skip(msg)
    env = dict(os.environ)
    # the working tree's cppo, whatever checkout .venv-verl was built from
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("VERL_USE_EXTERNAL_PLUGINS", None)  # discovery must use verl's default ("auto")
    proc = subprocess.run([str(VERL_PY), str(CHECK)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"check.py did not print JSON (rc={proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("name", EXPECTED)
def test_verl_parity(parity: dict, name: str) -> None:
    checks = parity["checks"]
    assert name in checks, f"check {name!r} was not run; ran: {sorted(checks)}"
    c = checks[name]
    assert c["ok"], f"{name}: {c['detail']} (max diff {c['max_diff']})"


def test_verl_version_pinned(parity: dict) -> None:
    from cppo.integrations.verl import VERL_VERSION

    assert parity["verl_version"] == VERL_VERSION


def test_no_unexpected_checks(parity: dict) -> None:
    # a rule registered only in the verl env (or a renamed check) would otherwise go unnoticed
    assert sorted(parity["checks"]) == sorted(EXPECTED)


@pytest.mark.parametrize("python", ["main", "verl"])
def test_importing_cppo_does_not_import_verl(python: str) -> None:
    # meaningful in .venv-verl, where verl is importable; in the main env it checks the imports work without it
    exe = sys.executable if python == "main" else str(VERL_PY)
    if python == "verl" and not VERL_PY.exists():
        pytest.skip(".venv-verl is missing")
    code = ("import sys, cppo, cppo.rules, cppo.integrations.verl, cppo.integrations.verl_backend, "
            "cppo.integrations.prepare_data; cppo.rules.get_rule('cppo'); print('verl' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([exe, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_register_all_without_verl_is_a_clear_error() -> None:
    import importlib.util

    if importlib.util.find_spec("verl") is not None:
        pytest.skip("verl is installed in this environment")
    from cppo.integrations.verl import register_all

    with pytest.raises(ImportError, match="verl==0.9.1"):
        register_all()


def test_verl_loss_names_round_trip() -> None:
    from cppo.integrations.verl import rule_from_verl_name, verl_loss_name

    assert verl_loss_name("cppo") == "cppo" and verl_loss_name("dppo") == "cppo_dppo"
    assert all(rule_from_verl_name(verl_loss_name(r)) == r for r in list_rules())
    with pytest.raises(ValueError):
        rule_from_verl_name("dppo_tv")  # verl's own loss, not ours


def test_compute_score_uses_math_verify() -> None:
    from cppo.integrations.verl import compute_score

    assert compute_score("aime24", "so the answer is \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    assert compute_score("aime24", "so the answer is \\boxed{3}", "25") == 0.0
    assert compute_score("aime24", "Answer: 25", "25") == 0.0  # no boxed answer: not verified
