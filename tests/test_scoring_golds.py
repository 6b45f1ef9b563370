"""Every gold answer of the benchmark data scores correct when stated, and wrong against another problem's.

Each gold must also parse to a sympy object (not only math-verify's raw-string fallback), so that
equivalent forms can match it. Coverage (LaTeX parsing costs ~10-80 ms per distinct answer):
  * default run: a seeded sample of 60 rows of every file (~10 s on 2 cores);
  * ``slow`` (run by the README's test command, so in CI): every row of the evaluation files
    (aime24/25/26, amc23, math500, minerva_math, olympiadbench, gsm8k_test: 2,896 golds) and a
    seeded 500 of each training file (~1-2 min), and all 14,971 training golds (~1 min).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from evals import scoring
from evals.registry import BENCHMARKS

EVAL_FILES = {"aime24": 0.0, "aime25": 0.0, "aime26": 0.0, "amc23": 0.0, "math500": 0.0,
              "minerva_math": BENCHMARKS["minerva_math"].rel_tol, "olympiadbench": 0.0, "gsm8k_test": 0.0}
TRAIN_FILES = ("math_train", "gsm8k_train")


def _rows(data_dir: Path, stem: str) -> list[dict]:
    with open(data_dir / f"{stem}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plain_number(s: str) -> float | None:
    s = s.strip()
    return float(s) if re.fullmatch(r"-?\d+(\.\d*)?(e-?\d+)?", s) else None


def _other_answer(rows: list[dict], i: int, rel_tol: float) -> str:
    """The next problem's answer that is not the same answer in another spelling.

    Skips answers that contain one another after removing spaces ("5" vs "x=5", "120" vs
    "120^\\circ", "21" vs "21\\text{ dogs}"): those are equal by design of the scorer; and, where
    the benchmark has a numeric tolerance, numbers within 5x that tolerance (Minerva: 928 vs 927.5).
    """
    mine = rows[i]["answer"].replace(" ", "")
    for k in range(1, len(rows)):
        other = rows[(i + k) % len(rows)]["answer"]
        o = other.replace(" ", "")
        if mine in o or o in mine:
            continue
        a, b = _plain_number(mine), _plain_number(o)
        if rel_tol and a is not None and b is not None and abs(a - b) <= 5 * rel_tol * abs(a):
            continue
        return other
    raise AssertionError("no distinct answer in the file")


def _check(item: tuple[str, str, float], timeout_s: int) -> bool:
    """Gold parses to sympy, scores correct when stated, and wrong against the other answer."""
    import sympy

    gold, other, rel_tol = item
    parsed = scoring.parse_answer(gold, timeout_s)
    if not any(isinstance(x, (sympy.Basic, sympy.MatrixBase)) for x in parsed):
        return False
    stated = f"We compute ... so the final answer is $\\boxed{{{gold}}}$."
    wrong = f"We compute ... so the final answer is $\\boxed{{{other}}}$."
    return (scoring.is_correct(stated, gold, rel_tol=rel_tol, timeout_s=timeout_s)
            and not scoring.is_correct(wrong, gold, rel_tol=rel_tol, timeout_s=timeout_s))


def _run(items: list[tuple[str, str, float]], labels: list[str]) -> None:
    with scoring.ScorerPool(workers=2, timeout_s=5, fn=_check) as pool:
        ok = pool.score(items)
    failures = [f"{lab}: gold {it[0]!r} / other {it[1]!r}" for lab, it, good in zip(labels, items, ok) if not good]
    assert not failures, f"{len(failures)} gold(s) failed:\n" + "\n".join(failures[:50])


def _items(data_dir: Path, stem: str, rel_tol: float, sample: int | None = None):
    rows = _rows(data_dir, stem)
    idx = list(range(len(rows)))
    if sample is not None and sample < len(rows):
        idx = sorted(random.Random(1234).sample(idx, sample))
    items = [(rows[i]["answer"], _other_answer(rows, i, rel_tol), rel_tol) for i in idx]
    labels = [f"{stem}:{rows[i]['id']}" for i in idx]
    return items, labels


def _collect(data_dir: Path, eval_sample: int | None, train_sample: int | None):
    items, labels = [], []
    for stem, tol in EVAL_FILES.items():
        it, lab = _items(data_dir, stem, tol, sample=eval_sample)
        items += it
        labels += lab
    for stem in TRAIN_FILES:
        it, lab = _items(data_dir, stem, 0.0, sample=train_sample)
        items += it
        labels += lab
    return items, labels


def test_a_sample_of_golds_of_every_file(data_dir):
    items, labels = _collect(data_dir, eval_sample=60, train_sample=60)
    assert len(items) == 3 * 30 + 40 + 4 * 60 + 2 * 60  # the AIME/AMC files are smaller than 60
    _run(items, labels)


@pytest.mark.slow
def test_every_eval_gold_and_500_of_each_train_file(data_dir):
    items, labels = _collect(data_dir, eval_sample=None, train_sample=500)
    assert len(items) == 2896 + 1000
    _run(items, labels)


@pytest.mark.slow
def test_every_train_gold(data_dir):
    items, labels = [], []
    for stem in TRAIN_FILES:
        it, lab = _items(data_dir, stem, 0.0)
        items += it
        labels += lab
    assert len(items) == 7498 + 7473
    _run(items, labels)


def test_the_checker_catches_an_unparseable_gold():
    """The test's own check fails on a gold that only survives as a raw string."""
    assert not _check(("\\foo{", "3", 0.0), 5)
    assert _check(("\\frac{1}{2}", "3", 0.0), 5)
    assert not _check(("\\frac{1}{2}", "0.5", 0.0), 5)  # "another answer" that is equal: check fails
