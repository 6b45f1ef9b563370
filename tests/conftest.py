"""Shared test set-up: offline, the benchmark data (from ``CPPO_DATA_DIR`` only), a private MLflow store per test.

Tests that read the benchmark JSONL files take the ``data_dir`` fixture. It is the folder named by
``CPPO_DATA_DIR`` (``cppo data download DIR`` writes one); when that variable is unset they skip
with a one-line reason, unless ``CPPO_REQUIRE_DATA=1``, which turns the skip into a failure (CI sets
both, so data tests cannot silently stop running). Nothing here looks beside the checkout.
The real vLLM tests (tests/test_vllm_real.py) follow the same pattern with ``.venv-vllm`` and
``CPPO_REQUIRE_VLLM=1``.

Tests that need SLURM take the ``slurm_cluster`` fixture: a one-node cluster on localhost (munged,
slurmctld, slurmd; ``tests/slurm_cluster.py``), started once per session and stopped at its end. Where
it cannot start (SLURM not installed: ``scripts/bootstrap-slurm`` installs it as root with apt-get;
not root) those tests skip with the reason, unless ``CPPO_REQUIRE_SLURM=1`` (CI), which makes it a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "CPPO_REQUIRE_DATA"
REQUIRE_SLURM_ENV = "CPPO_REQUIRE_SLURM"

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data folder (``CPPO_DATA_DIR``); skip (or fail with ``CPPO_REQUIRE_DATA=1``) without it."""
    from cppo.data import DATA_ENV

    env = os.environ.get(DATA_ENV)
    if not env:
        reason = f"needs the benchmark data: set {DATA_ENV} (e.g. after `cppo data download DIR`)"
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE_ENV} is set, so this is a failure", pytrace=False)
        pytest.skip(reason)
    d = Path(env).expanduser()
    if not d.is_dir():
        pytest.fail(f"{DATA_ENV}={env} is not a folder", pytrace=False)
    return d


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM cluster (tests/slurm_cluster.py); skip (or fail with ``CPPO_REQUIRE_SLURM=1``) where none can start."""
    import slurm_cluster as sc

    reason = sc.unavailable_reason()
    if reason:
        if os.environ.get(REQUIRE_SLURM_ENV, "") not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE_SLURM_ENV} is set, so this is a failure", pytrace=False)
        pytest.skip(reason)
    cluster = sc.Cluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.alive(), f"SLURM daemons still running after stop: {cluster.alive()}"
