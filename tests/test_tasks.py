"""Chain task: generator, solver, reward (incl. malformed responses), splits; task factory; data dir."""

from __future__ import annotations

import random

import pytest

from cppo.data import data_dir, load_benchmark_file
from cppo.tasks import get_task
from cppo.tasks.chain import ChainTask, make_split, parse_problem, solve


def test_solver_hand_computed():
    # 7 +3 -> 0, -5 -> 5, +9 -> 4  (mod 10)
    assert solve(7, [3, -5, 9], 10) == [0, 5, 4]
    # mod 7: 6 +6 -> 5, -6 -> 6
    assert solve(6, [6, -6], 7) == [5, 6]


def test_make_problem_format():
    row = ChainTask(K=3).make_problem(7, [3, -5, 9])
    assert row["problem"] == "7CeI="  # one character per operation: C = +3, e = -5, I = +9
    assert row["solution"] == "054"
    assert row["answer"] == "4"
    assert parse_problem(row["problem"]) == (7, [3, -5, 9])
    row2 = ChainTask(K=3, op_format="sign").make_problem(7, [3, -5, 9])
    assert row2["problem"] == "7+3-5+9=" and row2["solution"] == "054"
    assert parse_problem(row2["problem"]) == (7, [3, -5, 9])
    with pytest.raises(ValueError, match="not a chain problem"):
        parse_problem("7+3-5+9")


def test_sample_is_consistent_and_seeded():
    task = ChainTask(K=24)
    rows = task.sample(random.Random(5), 50)
    assert rows == task.sample(5, 50)
    assert rows != task.sample(6, 50)
    for r in rows:
        start, ops = parse_problem(r["problem"])
        assert len(ops) == 24 and 0 not in ops and max(map(abs, ops)) <= 3  # default operand range
        assert "".join(map(str, solve(start, ops, 10))) == r["solution"]
        assert r["solution"][-1] == r["answer"]
        assert task.reward(r["solution"], r["answer"]) == 1.0
        assert r["problem"].isascii() and len(r["problem"]) == 1 + 24 + 1


@pytest.mark.parametrize(
    "response,expected",
    [
        ("054", 1.0),
        (" 054\n", 1.0),  # surrounding whitespace ignored
        ("994", 1.0),  # only the final value is checked
        ("053", 0.0),  # wrong final value
        ("54", 0.0),  # too short
        ("0544", 0.0),  # too long (did not stop after K values)
        ("05 4", 0.0),  # separator inside
        ("0a4", 0.0),  # not a digit for modulus 10
        ("", 0.0),
        ("=054", 0.0),
    ],
)
def test_reward_cases(response, expected):
    assert ChainTask(K=3).reward(response, "4") == expected


def test_reward_requires_stop():
    task = ChainTask(K=3)
    assert task.reward("054", "4", stopped=False) == 0.0
    assert task.rewards(["054", "054", "053"], ["4", "4", "4"], [True, False, True]) == [1.0, 0.0, 0.0]


def test_operand_range_knob():
    ops = [d for r in ChainTask(K=24, max_operand=9).sample(0, 50) for d in parse_problem(r["problem"])[1]]
    assert max(ops) == 9 and min(ops) == -9
    assert ChainTask(modulus=3).operand_max == 2
    with pytest.raises(ValueError, match="max_operand"):
        ChainTask(max_operand=10)


def test_modulus_letters():
    task = ChainTask(K=2, modulus=16)
    row = task.make_problem(15, [15, -3])
    assert row["problem"] == "fOc="
    assert row["solution"] == "eb" and task.reward("eb", "b") == 1.0


def test_bad_parameters():
    with pytest.raises(ValueError, match="K must be"):
        ChainTask(K=0)
    with pytest.raises(ValueError, match="modulus"):
        ChainTask(modulus=1)
    with pytest.raises(ValueError, match="op_format"):
        ChainTask(op_format="words")
    with pytest.raises(ValueError, match="at most 26"):
        ChainTask(modulus=30, max_operand=27)
    with pytest.raises(ValueError, match="unknown chain split"):
        make_split("chain_xx", 3)
    with pytest.raises(ValueError, match="unknown task"):
        get_task({"name": "sudoku"})


def test_splits_reproducible_disjoint_and_harder():
    a = make_split("chain_id", 20, seed=0)
    assert a == make_split("chain_id", 20, seed=0)
    assert make_split("chain_id", 30, seed=0)[:20] == a  # a larger n extends a smaller one
    ood = make_split("chain_ood", 5, seed=0, K=24)
    assert all(len(r["solution"]) == 32 for r in ood)
    val = make_split("chain_val", 20, seed=0)
    assert {r["problem"] for r in val}.isdisjoint({r["problem"] for r in a})
    assert [r["id"] for r in a[:2]] == ["chain_id-0", "chain_id-1"]


def test_get_task_chain_splits():
    task = get_task({"name": "chain", "K": 6, "modulus": 10, "ood_K": 9})
    assert task.K == 6
    assert len(task.eval_split("chain_ood", 3)[0]["solution"]) == 9
    assert len(task.sample(0, 4)) == 4
    assert task.eval_splits(["chain_id", "chain_ood"]) == ["chain_id", "chain_ood"]  # the configured ones
    assert get_task({"name": "chain"}, data_dir="/nowhere").K == 24  # chain reads no files: ignored


def test_math_task_takes_data_dir_and_evaluates_its_test_files(tmp_path):
    task = get_task({"name": "math", "test_files": ["gsm8k", "math500"]}, data_dir=str(tmp_path))
    assert task.data_dir == str(tmp_path)
    assert task.eval_splits(["chain_id"]) == ["gsm8k", "math500"]  # rl.eval_splits names chain splits
    assert get_task({"name": "math", "data_dir": "d"}).data_dir == "d"


def test_random_guessing_scores_about_one_in_m():
    task = ChainTask(K=24)
    rng = random.Random(0)
    rows = task.sample(1, 4000)
    acc = sum(task.reward("".join(rng.choice("0123456789") for _ in range(24)), r["answer"]) for r in rows) / 4000
    assert 0.08 < acc < 0.12


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("CPPO_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("CPPO_DATA_DIR")
    assert data_dir({"data_dir": str(tmp_path / "x")}) == tmp_path / "x"
    (tmp_path / "b.jsonl").write_text('{"id": "1", "problem": "p", "answer": "2"}\n\n')
    assert load_benchmark_file("b", {"data_dir": str(tmp_path)}) == [{"id": "1", "problem": "p", "answer": "2"}]
    assert load_benchmark_file("absent", {"data_dir": str(tmp_path)}) is None
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "problem": "p"}\n')
    with pytest.raises(ValueError, match="answer"):
        load_benchmark_file("bad", {"data_dir": str(tmp_path)})


def test_math_task_samples_local_file(data_dir):
    task = get_task({"name": "math", "train_file": "gsm8k_train"})
    rows = task.sample(0, 3)
    assert len(rows) == 3 and all("\\boxed{}" in r["problem"] for r in rows)
    assert rows == task.sample(0, 3)


def test_math_rewards_use_math_verify_in_workers():
    from cppo.tasks.math import MathTask

    task = MathTask(workers=1, timeout_s=60.0)
    try:
        got = task.rewards(["so \\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{3}", "no answer"], ["1/2", "\\frac12", "4", "4"])
        assert got == [1.0, 1.0, 0.0, 0.0]
        # a right answer whose first check takes math-verify ~0.2 s (39 fractions summing to 1): a short
        # check such as \\boxed{4} can come back from a warm worker before the main thread even waits
        slow = "\\boxed{" + "+".join(f"\\frac{{1}}{{{2 ** i}}}" for i in range(1, 40)) + f"+\\frac{{1}}{{{2 ** 39}}}}}"
        task.timeout_s = 1e-4  # it cannot finish in 0.1 ms: it counts as wrong, the pool restarts
        assert task.rewards([slow], ["1"]) == [0.0]
        task.timeout_s = 60.0
        assert task.rewards([slow], ["1"]) == [1.0]
        assert task.rewards(["\\boxed{4}"], ["4"]) == [1.0]
    finally:
        task.close()


# --------------------------------------------------------------------------- variable lengths (long horizon)
def test_variable_length_chains_pad_the_prompt_and_vary_within_a_batch():
    t = ChainTask(K=12, K_min=3)
    row = t.make_problem(7, [3, -5, 2])  # k = 3 of at most 12
    assert row["problem"] == "7CeB" + "." * 9 + "=" and row["solution"] == "057" and row["answer"] == "057"
    assert parse_problem(row["problem"]) == (7, [3, -5, 2])
    # op i sits K + 1 positions before response value i, whatever k is
    seq = row["problem"] + row["solution"]
    assert all(seq[len(row["problem"]) + i - 13] == "CeB"[i] for i in range(3))
    rows = ChainTask(K=100, K_min=20).sample(random.Random(0), 64)
    lens = [len(r["solution"]) for r in rows]
    assert min(lens) >= 20 and max(lens) <= 100 and len(set(lens)) > 20  # lengths vary within one batch
    assert {len(r["problem"]) for r in rows} == {102}  # prompts are all padded to K operations
    for r in rows[:8]:
        start, ops = parse_problem(r["problem"])
        assert "".join(str(v) for v in solve(start, ops, 10)) == r["solution"]
    with pytest.raises(ValueError, match="expected 3..12 operations"):
        t.make_problem(1, [1, 1])
    with pytest.raises(ValueError, match="K_min must be in"):
        ChainTask(K=5, K_min=6)


@pytest.mark.parametrize("response, expected", [
    ("041", 1.0),       # the right length and the right last value
    (" 041\n", 1.0),    # surrounding whitespace is ignored
    ("049", 0.0),       # wrong last value
    ("04", 0.0),        # too short: the length comes from the answer, not from K
    ("0411", 0.0),      # too long (continued past the chain's end, e.g. into the padding)
    ("04.", 0.0),       # a padding character is not a value
    ("0 41", 0.0),      # malformed
    ("", 0.0),
])
def test_variable_length_reward_reads_the_length_from_the_answer(response, expected):
    assert ChainTask(K=12, K_min=3).reward(response, "041") == expected


def test_variable_length_reward_needs_a_stop_and_a_gold():
    t = ChainTask(K=12, K_min=3)
    assert t.reward("041", "041", stopped=False) == 0.0
    assert t.reward("041", "") == 0.0
    assert t.rewards(["041", "04"], ["041", "04"], [True, True]) == [1.0, 1.0]


def test_variable_length_splits_and_eval_scorer():
    from evals.registry import ChainSettings, get_benchmark, scorer_for

    task = get_task({"name": "chain", "K": 30, "K_min": 5, "n_test": 32})
    rows = task.eval_split("chain_id", 32)
    assert rows == task.eval_split("chain_id", 32) and len({len(r["solution"]) for r in rows}) > 5
    assert all(len(r["solution"]) == 38 for r in task.eval_split("chain_ood", 4))  # ood: one longer fixed length
    score = scorer_for(get_benchmark("chain_id"), ChainSettings(K=30, K_min=5))
    r = rows[0]
    good, bad_len = score([r["solution"], r["solution"] + "1"], [r["answer"], r["answer"]])
    assert good.correct and good.extracted == r["solution"][-1]
    assert not bad_len.correct and bad_len.extracted is None  # malformed: no answer extracted
