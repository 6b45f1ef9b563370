"""The data directory: lookup order (no folder beside the checkout), `cppo data download` with a mocked
hub, and the one-line error of a math benchmark that has neither a local file nor a reachable hub."""

from __future__ import annotations

import json
import time

import pytest

from cppo.cli import main as cppo_main
from cppo.data import DataNotFound, data_dir, read_jsonl
from evals import registry
from evals.registry import DATA_FILES, get_benchmark, load_docs, resolve_data_dir

# hub rows in each source's own columns, as `datasets.load_dataset` would return them
FAKE_HUB = {
    "HuggingFaceH4/aime_2024": [{"id": 60, "problem": "Find x.", "answer": "25", "solution": "So $\\boxed{25}$."}],
    "openai/gsm8k": [{"question": "How many?", "answer": "3 + 4 = 7\n#### 1,007"}],
    "DigitalLearningGmbH/MATH-lighteval": [
        {"problem": "Compute 1/2.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1", "type": "Algebra"},
        {"problem": "Pick one.", "solution": "The letter is $\\boxed{}$.", "level": "Level 2", "type": "Algebra"},
    ],
    "Hothan/OlympiadBench": [{"id": 7, "question": "Q?", "final_answer": ["$\\frac{3}{4}$"], "solution": ["a", "b"]}],
}


@pytest.fixture
def fake_hub(monkeypatch):
    """`datasets.load_dataset` answering from FAKE_HUB; records the calls. The hub is 'online'."""
    import datasets

    calls = []

    def load_dataset(path, name=None, split=None, **_):
        calls.append((path, name, split))
        if path not in FAKE_HUB:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")
        return datasets.Dataset.from_list(FAKE_HUB[path])

    def probe_hub(hub):
        if hub.path not in FAKE_HUB:
            raise ConnectionError(f"[Errno -2] Name or service not known: {hub.path}")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(registry, "probe_hub", probe_hub)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    return calls


def test_lookup_order_has_no_folder_beside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("CPPO_DATA_DIR", raising=False)
    assert data_dir() is None and resolve_data_dir() is None  # even where a data folder sits beside the checkout
    assert data_dir({"data_dir": str(tmp_path)}) == tmp_path
    monkeypatch.setenv("CPPO_DATA_DIR", str(tmp_path / "env"))
    assert data_dir({"data_dir": str(tmp_path)}) == tmp_path / "env"  # the variable wins over the profile
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"  # an explicit --data-dir wins over both


def test_every_data_file_has_a_hub_source():
    assert list(DATA_FILES) == ["math500", "aime24", "aime25", "aime26", "amc23", "gsm8k_test", "minerva_math",
                                "olympiadbench", "gsm8k_train", "math_train"]


def test_download_writes_the_expected_layout(tmp_path, fake_hub, capsys):
    out = tmp_path / "data"
    rc = cppo_main(["data", "download", str(out), "--benchmarks", "aime24,gsm8k_train,math_train,olympiadbench"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["aime24.jsonl", "gsm8k_train.jsonl", "math_train.jsonl",
                                                     "olympiadbench.jsonl"]
    aime = read_jsonl(out / "aime24.jsonl")
    assert aime == [{"id": "60", "problem": "Find x.", "answer": "25", "source": "aime24 (HuggingFaceH4/aime_2024:train)",
                     "solution": "So $\\boxed{25}$."}]
    gsm = read_jsonl(out / "gsm8k_train.jsonl")
    assert gsm[0]["id"] == "gsm8k_train-0" and gsm[0]["answer"] == "1007" and gsm[0]["problem"] == "How many?"
    math = read_jsonl(out / "math_train.jsonl")
    assert [r["answer"] for r in math] == ["\\frac{1}{2}"]  # the row with an empty \boxed{} is left out
    assert read_jsonl(out / "olympiadbench.jsonl")[0]["answer"] == "\\frac{3}{4}"
    text = capsys.readouterr().out
    assert "1 rows without an answer left out" in text and f"CPPO_DATA_DIR={out.resolve()}" in text
    # the files are what the registry reads: a downloaded benchmark loads like a local one
    docs = load_docs(get_benchmark("aime24"), out)
    assert docs[0]["answer"] == "25" and docs[0]["benchmark"] == "aime24"
    assert ("openai/gsm8k", "main", "train") in fake_hub

    # a second run keeps what is there; --force rewrites it
    n_calls = len(fake_hub)
    assert cppo_main(["data", "download", str(out), "--benchmarks", "aime24"]) == 0
    assert len(fake_hub) == n_calls and "kept" in capsys.readouterr().out
    assert cppo_main(["data", "download", str(out), "--benchmarks", "aime24", "--force"]) == 0
    assert len(fake_hub) == n_calls + 1


def test_download_failures_are_one_line(tmp_path, fake_hub, capsys, monkeypatch):
    assert cppo_main(["data", "download", str(tmp_path), "--benchmarks", "aime24,math500"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "math500: HuggingFaceH4/MATH-500:test could not be downloaded (ConnectionError" in err[0]
    assert (tmp_path / "aime24.jsonl").is_file() and not (tmp_path / "math500.jsonl").exists()
    assert cppo_main(["data", "download", str(tmp_path), "--benchmarks", "aime99"]) == 2
    assert "unknown benchmark 'aime99'; choose from math500" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cppo_main(["data", "download", str(tmp_path), "--benchmarks", "math500"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def _eval_missing(tmp_path, capsys) -> tuple[int, list[str], float]:
    t0 = time.monotonic()
    rc = cppo_main(["eval", "oracle", "--backend", "oracle", "--benchmarks", "aime24", "--limit", "1",
                    "--out", str(tmp_path / "r.json")])
    return rc, capsys.readouterr().err.strip().splitlines(), time.monotonic() - t0


def test_missing_benchmark_offline_is_one_line_at_once(tmp_path, monkeypatch, capsys):
    import datasets

    def no_network(*a, **k):
        raise AssertionError("offline: the hub must not be asked")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CPPO_DATA_DIR", str(tmp_path))
    rc, err, elapsed = _eval_missing(tmp_path, capsys)
    assert rc == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("cppo eval: aime24: ")
    assert str(tmp_path / "aime24.jsonl") in line and "CPPO_DATA_DIR" in line and "HuggingFaceH4/aime_2024" in line
    assert elapsed < 5.0
    assert not (tmp_path / "r.json").exists()


def test_missing_benchmark_unreachable_hub_is_one_line(tmp_path, monkeypatch, capsys, fake_hub):
    monkeypatch.delenv("CPPO_DATA_DIR", raising=False)
    monkeypatch.delitem(FAKE_HUB, "HuggingFaceH4/aime_2024")  # the fake hub now raises ConnectionError
    rc, err, _ = _eval_missing(tmp_path, capsys)
    assert rc == 2 and len(err) == 1, err
    assert not [c for c in fake_hub if c[0] == "HuggingFaceH4/aime_2024"]  # the probe failed: no download tried
    assert "CPPO_DATA_DIR unset" in err[0] and "aime24.jsonl" in err[0] and "ConnectionError" in err[0]
    assert "HuggingFaceH4/aime_2024" in err[0]


def test_load_docs_raises_data_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataNotFound, match="aime24.jsonl"):
        load_docs(get_benchmark("aime24"), tmp_path)
