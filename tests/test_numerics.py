"""The pinned numeric path (cppo/numerics.py): what it sets, that it cannot be half-set by mistake,
and the golden pipeline, the cross-host check: the digests in tests/golden/digest.json were made on
one host and are recomputed on whatever host runs the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cppo import numerics

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any of the variables the pin sets (as on a fresh shell)."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINNED_ENV and k != numerics.SWITCH}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _golden(tmp: Path, *stages: str, **env: str) -> dict[str, str]:
    out = subprocess.run([sys.executable, str(GOLDEN / "run.py"), str(tmp), *stages], capture_output=True,
                         text=True, env=_clean_env(**env), cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_pin_sets_every_variable_and_overrides_the_callers():
    env = {"MKL_CBWR": "AVX512", "ATEN_CPU_CAPABILITY": "default"}
    assert numerics.pin(env) == "pinned"
    assert env == numerics.PINNED_ENV  # a pinned run is the same everywhere: the caller's values lose


def test_native_leaves_the_environment_alone():
    env = {numerics.SWITCH: "native", "MKL_CBWR": "AVX512"}
    assert numerics.pin(env) == "native"
    assert env == {numerics.SWITCH: "native", "MKL_CBWR": "AVX512"}


def test_a_bad_switch_is_one_line_from_the_cli():
    out = subprocess.run([sys.executable, "-m", "cppo.cli", "rules"], capture_output=True, text=True,
                         env=_clean_env(CPPO_NUMERICS="fast"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "cppo: error: CPPO_NUMERICS='fast': choose one of pinned, native"]


def test_every_cppo_process_starts_on_the_pinned_path():
    """`python -m cppo.cli` (what the pipeline runs) sees the pinned values before torch loads, and
    torch then reports the AVX2 kernels, whatever the host's best."""
    code = ("import cppo, torch, os, json; from cppo.numerics import effective; "
            "print(json.dumps(effective()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), check=True)
    info = json.loads(out.stdout)
    if info["numerics/torch_cpu_capability"] == "DEFAULT":
        pytest.skip("this CPU has no AVX2: the pinned path cannot be reached here")
    assert info["numerics/path"] == "pinned"
    assert info["numerics/torch_cpu_capability"] == "AVX2"
    assert info["numerics/MKL_CBWR"] == "COMPATIBLE,STRICT"


def test_the_host_line_names_the_path():
    from cppo.report.host import host_line

    pinned = host_line({"host/numerics": "pinned"})
    assert "Numeric path: pinned (ATen AVX2, MKL CNR COMPATIBLE+STRICT" in pinned and "bit for bit" in pinned
    assert "agree statistically" in host_line({"host/numerics": "native"})


def test_svg_figures_are_byte_identical_across_renders(tmp_path):
    from cppo.report.plots import _plt, _save

    plt = _plt()
    data = []
    for k in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [0.1, 0.4, 0.2])
        ax.fill_between([0, 1, 2], [0, 0.3, 0.1], [0.2, 0.5, 0.3], alpha=0.3)  # a clip path: ids
        _save(fig, tmp_path / str(k), "f")
        data.append(((tmp_path / str(k) / "f.svg").read_bytes(), (tmp_path / str(k) / "f.png").read_bytes()))
    assert data[0] == data[1]
    assert b"<dc:date>" not in data[0][0]


@pytest.mark.slow
def test_golden_pipeline_reproduces_the_committed_digests(tmp_path):
    """The cross-host check: SFT, RL and a greedy evaluation on the pinned path give the committed
    digests, bit for bit, on this host (whatever its CPU; digest.json names the host they came from)."""
    want = json.loads((GOLDEN / "digest.json").read_text())
    got = _golden(tmp_path)
    for stage in ("sft", "rl", "eval"):  # the first stage that moved is the one to look at
        assert got[stage] == want["digests"][stage], (
            f"stage {stage!r}: {got[stage]} here, {want['digests'][stage]} on {want['host']}")


@pytest.mark.slow
def test_golden_pipeline_detects_other_kernels(tmp_path):
    """The check can fail: torch's default (non-AVX2) kernels, with the pin switched off, move the
    first stage's bits, on any host."""
    want = json.loads((GOLDEN / "digest.json").read_text())
    got = _golden(tmp_path, "sft", CPPO_NUMERICS="native", ATEN_CPU_CAPABILITY="default")
    assert got["sft"] != want["digests"]["sft"]
