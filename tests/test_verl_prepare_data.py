"""`cppo prepare-data`: verl parquet from the local benchmark JSONL and a DAPO-Math-17k-shaped file (no network)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cppo.data import read_jsonl
from cppo.integrations.prepare_data import dapo_problem, prepare
from cppo.tasks.math import DEFAULT_TEMPLATE

DAPO_WRAP = ("Solve the following math problem step by step. The last line of your response should be of the form "
             "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{p}\n\n"
             "Remember to put your answer on its own line after \"Answer:\".")


def test_local_jsonl_to_verl_parquet(tmp_path, data_dir):
    path = prepare("aime24", tmp_path, split="test")
    assert path == tmp_path / "aime24.parquet"
    df = pd.read_parquet(path)
    src = read_jsonl(data_dir / "aime24.jsonl")
    assert len(df) == len(src) == 30
    assert list(df.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    row, first = df.iloc[0], src[0]
    assert row["data_source"] == "aime24" and row["ability"] == "math"
    msgs = list(row["prompt"])
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    assert msgs[0]["content"] == DEFAULT_TEMPLATE.format(problem=first["problem"])  # the math task's prompt
    assert row["reward_model"]["ground_truth"] == first["answer"]
    assert row["extra_info"]["id"] == first["id"] and row["extra_info"]["split"] == "test"
    assert [r["ground_truth"] for r in df["reward_model"]] == [r["answer"] for r in src]


def test_dapo_file_is_unwrapped_and_deduplicated(tmp_path):
    rows = []
    for rep in range(3):  # the hub file repeats every problem
        for i, (p, a) in enumerate([("What is $1+1$?", "2"), ("Find $x$ if $2x=6$.", "3")]):
            rows.append({"data_source": "math_dapo", "prompt": [{"role": "user", "content": DAPO_WRAP.format(p=p)}],
                         "ability": "MATH", "reward_model": {"ground_truth": a, "style": "rule-lighteval/MATH_v2"},
                         "extra_info": {"index": f"u{i}-{rep}"}})
    src = tmp_path / "raw.parquet"
    pd.DataFrame(rows).to_parquet(src)
    out = prepare("dapo-math-17k", tmp_path / "out", input_path=src)
    df = pd.read_parquet(out)
    assert out.name == "dapo-math-17k.parquet" and len(df) == 2
    assert [m[0]["content"] for m in df["prompt"]] == [DEFAULT_TEMPLATE.format(problem="What is $1+1$?"),
                                                       DEFAULT_TEMPLATE.format(problem="Find $x$ if $2x=6$.")]
    assert [r["ground_truth"] for r in df["reward_model"]] == ["2", "3"]
    assert "Answer:" not in df["prompt"][0][0]["content"]


def test_dapo_problem_extraction():
    assert dapo_problem(DAPO_WRAP.format(p="Line 1\n\nLine 2")) == "Line 1\n\nLine 2"
    assert dapo_problem("  just a problem ") == "just a problem"  # no wrapper: unchanged (stripped)


@pytest.mark.usefixtures("data_dir")
def test_limit_template_and_errors(tmp_path):
    df = pd.read_parquet(prepare("aime25", tmp_path, limit=4, template="Q: {problem}\nA:"))
    assert len(df) == 4 and df["prompt"][0][0]["content"].startswith("Q: ")
    with pytest.raises(ValueError, match="no nope.jsonl"):
        prepare("nope", tmp_path)
    with pytest.raises(ValueError, match="must contain"):
        prepare("aime25", tmp_path, template="no field")


@pytest.mark.usefixtures("data_dir")
def test_cli(tmp_path, capsys):
    from cppo.cli import main

    assert main(["prepare-data", "--source", "aime26", "--out", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {"path": str(tmp_path / "aime26.parquet"), "rows": 30, "source": "aime26", "split": "test"}
    assert main(["prepare-data", "--source", "missing_set", "--out", str(tmp_path)]) == 2
