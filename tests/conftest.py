"""Shared test set-up: offline, the benchmark data (from ``CPPO_DATA_DIR`` only), a private MLflow store per test.

Tests that read the benchmark JSONL files take the ``data_dir`` fixture. It is the folder named by
``CPPO_DATA_DIR`` (``cppo data download DIR`` writes one); when that variable is unset they skip
with a one-line reason, unless ``CPPO_REQUIRE_DATA=1``, which turns the skip into a failure (CI sets
both, so data tests cannot silently stop running). Nothing here looks beside the checkout.
The real vLLM tests (tests/test_vllm_real.py) follow the same pattern with ``.venv-vllm`` and
``CPPO_REQUIRE_VLLM=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "CPPO_REQUIRE_DATA"

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
