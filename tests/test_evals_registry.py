"""The benchmark registry: sources, document shape, prompts, hub column mapping, task files."""

from __future__ import annotations

import json

import pytest
import yaml

from evals import prompts
from evals.registry import (
    BENCHMARKS,
    ChainSettings,
    get_benchmark,
    hub_answer,
    load_docs,
    local_path,
    make_prompt,
    normalize_doc,
    oracle_response,
    parse_benchmarks,
    scorer_for,
)

MATH = [b for b in BENCHMARKS.values() if b.kind == "math"]
EXPECTED_ROWS = {"math500": 500, "aime24": 30, "aime25": 30, "aime26": 30, "amc23": 40, "gsm8k": 1319,
                 "minerva_math": 272, "olympiadbench": 675}


def test_registry_names():
    assert set(BENCHMARKS) == set(EXPECTED_ROWS) | {"chain_id", "chain_ood"}
    with pytest.raises(ValueError, match="choose from"):
        get_benchmark("aime99")
    assert [b.name for b in parse_benchmarks("aime24, math500,aime24")] == ["aime24", "math500"]
    with pytest.raises(ValueError, match="no benchmark"):
        parse_benchmarks(" , ")


@pytest.mark.parametrize("bench", MATH, ids=lambda b: b.name)
def test_local_files_load_in_our_shape(bench, data_dir):
    path = local_path(bench, data_dir)
    assert path is not None and path.parent == data_dir
    docs = load_docs(bench, data_dir)
    assert len(docs) == EXPECTED_ROWS[bench.name]
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert docs[0]["id"] == first["id"] and docs[0]["problem"] == first["problem"] and docs[0]["answer"] == first["answer"]
    assert all(set(d) == {"id", "problem", "answer", "solution", "benchmark"} for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)
    assert load_docs(bench, data_dir, limit=3) == docs[:3]


def test_gsm8k_reads_the_test_file(data_dir):
    assert local_path(get_benchmark("gsm8k"), data_dir).name == "gsm8k_test.jsonl"


def test_offline_without_local_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="aime24.jsonl"):
        load_docs(get_benchmark("aime24"), tmp_path)


def test_hub_column_mapping():
    gsm = get_benchmark("gsm8k")
    row = {"question": "How many?", "answer": "2 + 2 = <<2+2=4>>4 apples, 1,000 more\n#### 1,004"}
    doc = normalize_doc(gsm, row, 7, gsm.hub.fields, gsm.hub.answer_fn)
    assert doc == {"id": "gsm8k-7", "problem": "How many?", "answer": "1004", "solution": "", "benchmark": "gsm8k"}
    ob = get_benchmark("olympiadbench")
    row = {"id": 2231, "question": "Find x.", "final_answer": ["$\\frac{1}{2}$"], "solution": ["step 1", "step 2"]}
    doc = normalize_doc(ob, row, 0, ob.hub.fields, ob.hub.answer_fn)
    assert doc["answer"] == "\\frac{1}{2}" and doc["id"] == "2231" and doc["solution"] == "step 1\nstep 2"
    assert hub_answer(25, None) == "25"


def test_chain_splits_follow_the_profile(tmp_path):
    c = ChainSettings(K=5, modulus=7, ood_K=9, n_test=12)
    ids = load_docs(get_benchmark("chain_id"), chain=c)
    ood = load_docs(get_benchmark("chain_ood"), chain=c)
    assert len(ids) == len(ood) == 12
    assert all(len(d["solution"]) == 5 for d in ids) and all(len(d["solution"]) == 9 for d in ood)
    assert load_docs(get_benchmark("chain_id"), chain=c, limit=4) == ids[:4]  # a prefix is stable
    assert ChainSettings.from_config({"task": {"name": "chain", "K": 5, "modulus": 7, "ood_K": 9}}).K == 5
    signed = ChainSettings(K=3, n_test=2, op_format="sign", max_operand=2)
    assert ChainSettings.from_config({"task": {"K": 3, "n_test": 2, "op_format": "sign", "max_operand": 2}}) == signed
    docs = load_docs(get_benchmark("chain_id"), chain=signed)
    assert all(len(d["problem"]) == 1 + 2 * 3 + 1 for d in docs)  # "7+1-2+1=": the sign spelling
    assert ChainSettings.from_config(None) == ChainSettings()


def test_prompts():
    doc = {"problem": "What is 1+1?"}
    p = make_prompt(get_benchmark("math500"), doc, "base")
    assert p == "What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
    # the trainer's math prompt is the same text, so evaluation matches training
    from cppo.tasks.math import DEFAULT_TEMPLATE

    assert DEFAULT_TEMPLATE.format(problem="What is 1+1?") == p
    assert make_prompt(get_benchmark("chain_id"), {"problem": "1+2="}, "chat") == "1+2="
    assert make_prompt(get_benchmark("aime24"), doc, "base", base_template="Q: {problem}\nA:") == "Q: What is 1+1?\nA:"
    with pytest.raises(ValueError, match="chat template"):
        make_prompt(get_benchmark("aime24"), doc, "chat", tokenizer=None)
    with pytest.raises(ValueError, match="unknown prompt template"):
        prompts.resolve_template("fancy", None)


def test_chat_template_used_when_the_tokenizer_has_one():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return f"<user>{messages[0]['content']}</user><assistant>"

    assert prompts.resolve_template("auto", Tok()) == "chat"
    assert prompts.resolve_template("auto", object()) == "base"
    p = make_prompt(get_benchmark("aime24"), {"problem": "P"}, "auto", Tok())
    assert p == f"<user>P\n{prompts.MATH_INSTRUCTION}</user><assistant>"


def test_oracle_responses_and_chain_scorer():
    b = get_benchmark("aime25")
    r = oracle_response(b, {"answer": "17", "solution": ""})
    assert r.endswith("$\\boxed{17}$.")
    sol = "Thus \\boxed{3}."
    assert oracle_response(b, {"answer": "3", "solution": sol}) == sol
    chain = ChainSettings(K=3)
    score = scorer_for(get_benchmark("chain_id"), chain)
    out = score(["054", "059", "05", "0544", " 054\n"], ["4"] * 5)
    assert [s.correct for s in out] == [True, False, False, False, True]
    assert [s.extracted for s in out] == ["4", "9", None, None, "4"]


def test_task_files_match_the_registry():
    from evals.harness import TASKS_DIR

    for b in BENCHMARKS.values():
        cfg = yaml.load((TASKS_DIR / f"{b.lm_eval_task}.yaml").read_text(), Loader=_FunctionTolerantLoader)
        assert cfg["task"] == b.lm_eval_task
        assert cfg["metadata"]["benchmark"] == b.name
        assert cfg["include"] == "_cppo_base.yaml"
        if b.kind == "math":
            assert cfg["dataset_path"] == b.hub.path and cfg["test_split"] == b.hub.split
            assert cfg.get("dataset_name") == b.hub.name
            assert cfg["generation_kwargs"]["max_gen_toks"] == b.max_tokens
        else:
            assert cfg["custom_dataset"] == "!function utils.chain_dataset"


class _FunctionTolerantLoader(yaml.SafeLoader):
    pass


_FunctionTolerantLoader.add_constructor("!function", lambda loader, node: "!function " + loader.construct_scalar(node))
