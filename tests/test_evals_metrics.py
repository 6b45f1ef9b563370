"""avg@k, pass@k (unbiased) and maj@k on hand-made sample sets with known values; maj@k's vote by
math-verify equivalence (`1/2` and `0.5` are one answer)."""

from __future__ import annotations

import itertools
from math import comb

import pytest

from evals import metrics as M

T, F = True, False


def test_avg_at_k_hand_computed():
    correct = [[T, T, F, F], [T, F, F, F], [F, F, F, F]]
    # (2/4 + 1/4 + 0) / 3 = 0.25
    assert M.avg_at_k(correct) == pytest.approx(0.25)


def test_pass_at_k_single_hand_computed():
    # n=4, c=1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5; pass@4 = 1
    assert M.pass_at_k_single(4, 1, 1) == pytest.approx(0.25)
    assert M.pass_at_k_single(4, 1, 2) == pytest.approx(0.5)
    assert M.pass_at_k_single(4, 1, 4) == pytest.approx(1.0)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert M.pass_at_k_single(5, 2, 2) == pytest.approx(0.7)
    assert M.pass_at_k_single(16, 0, 8) == 0.0
    assert M.pass_at_k_single(16, 16, 1) == 1.0


def test_pass_at_k_equals_exhaustive_subset_average():
    """The estimator is the exact fraction of k-subsets containing a correct sample."""
    row = [T, F, F, T, F, F, F]
    n, c = len(row), sum(row)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        exact = sum(any(row[i] for i in s) for s in subsets) / len(subsets)
        assert M.pass_at_k_single(n, c, k) == pytest.approx(exact)
        assert M.pass_at_k_single(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_1_equals_avg():
    correct = [[T, F, T, F, F, F, T, T], [F] * 8, [T] * 8]
    assert M.pass_at_k(correct, 1) == pytest.approx(M.avg_at_k(correct))


def test_pass_at_k_is_monotone_in_k():
    correct = [[T, F, F, F, F, F, F, F], [F, F, T, T, F, F, F, F]]
    vals = [M.pass_at_k(correct, k) for k in range(1, 9)]
    assert all(a <= b + 1e-12 for a, b in zip(vals, vals[1:]))
    assert vals[-1] == 1.0


def test_maj_at_k_hand_computed():
    answers = [
        ["4", "4", "5", None],   # majority 4 (correct)
        ["1", "2", "2", "1"],    # tie 1/2 -> first seen, "1" (wrong)
        [None, None, None, "7"],  # only vote is 7 (correct)
        [None, None, None, None],  # no vote -> wrong
    ]
    correct = [
        [T, T, F, F],
        [F, T, T, F],
        [F, F, F, T],
        [F, F, F, F],
    ]
    assert M.maj_at_k(answers, correct, 4) == pytest.approx(2 / 4)
    # first two responses only: [4,4] ok, [1,2] tie -> 1 wrong, no votes, no votes
    assert M.maj_at_k(answers, correct, 2) == pytest.approx(1 / 4)


def test_majority_beats_single_sample_when_votes_concentrate():
    answers = [["3", "3", "9", "3", "1"]]
    correct = [[T, T, F, T, F]]
    assert M.maj_at_k(answers, correct, 5) == 1.0
    assert M.avg_at_k(correct) == pytest.approx(0.6)


def test_summarize_names_and_values():
    answers = [["a", "a", "b", "c"], ["x", "y", "y", None]]
    correct = [[T, T, F, F], [F, F, F, F]]
    out = M.summarize(answers, correct)
    assert list(out) == ["avg@4", "pass@1", "pass@2", "pass@4", "maj@4"] == M.metric_names(4)
    assert out["avg@4"] == pytest.approx(0.25)
    assert out["pass@2"] == pytest.approx((1 - comb(2, 2) / comb(4, 2)) / 2)
    assert out["pass@4"] == pytest.approx(0.5)
    assert out["maj@4"] == pytest.approx(0.5)
    # every metric is a mean of per-problem values (how lm-eval aggregates process_results)
    per = [M.per_problem(a, c) for a, c in zip(answers, correct)]
    for k, v in out.items():
        assert v == pytest.approx(sum(p[k] for p in per) / len(per))


def test_default_ks():
    assert M.default_ks(1) == [1]
    assert M.default_ks(16) == [1, 2, 4, 8, 16]
    assert M.default_ks(6) == [1, 2, 4, 6]


@pytest.mark.parametrize("call", [
    lambda: M.avg_at_k([]),
    lambda: M.avg_at_k([[T, F], [T]]),
    lambda: M.pass_at_k_single(4, 5, 1),
    lambda: M.pass_at_k_single(4, 1, 5),
    lambda: M.maj_at_k([["a"]], [[T]], 2),
    lambda: M.default_ks(0),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


# ----------------------------------------------------------------------------- maj@k: equivalent answers
def test_maj_at_k_merges_classes():
    answers = [["3", "1/2", "0.5"]]
    correct = [[F, T, T]]
    assert M.maj_at_k(answers, correct, 3) == 0.0  # by text: a three-way tie, the first seen ("3") wins
    same = {"3": "three", "1/2": "half", "0.5": "half"}
    assert M.maj_at_k(answers, correct, 3, classes=lambda d: [same[a] for a in d]) == 1.0
    assert M.majority_answer(["3", "1/2", "0.5"], lambda d: [same[a] for a in d]) == 1  # first of the class
    with pytest.raises(ValueError, match="classes returned 1 labels for 3 answers"):
        M.majority_answer(["3", "1/2", "0.5"], lambda d: ["x"])


def test_answer_classes_by_math_verify():
    from evals.scoring import ScorerPool, answer_classes

    with ScorerPool(workers=1) as pool:
        assert answer_classes(["1/2", "0.5", "3"], pool=pool) == [0, 0, 2]
        assert answer_classes(["3", "\\frac{1}{2}", "0.5", "3.0", "7"], pool=pool) == [0, 1, 1, 0, 4]
        assert answer_classes([], pool=pool) == []


def test_math_vote_groups_equivalent_spellings_end_to_end():
    """lm-eval's per-problem hook: the majority of {1/2, 0.5, 3} is the 1/2 class, whichever comes first."""
    from evals.harness import process_results

    doc = {"benchmark": "aime24", "id": "maj-test", "answer": "1/2"}
    for order in (["3", "1/2", "0.5"], ["1/2", "0.5", "3"], ["0.5", "3", "\\frac{1}{2}"]):
        out = process_results(doc, [[f"so \\boxed{{{a}}}" for a in order]])
        assert out["maj@3"] == 1.0, order
        assert out["avg@3"] == pytest.approx(2 / 3)
    wrong = process_results({**doc, "answer": "3"}, [["\\boxed{3}", "\\boxed{1/2}", "\\boxed{0.5}"]])
    assert wrong["maj@3"] == 0.0 and wrong["avg@3"] == pytest.approx(1 / 3)
