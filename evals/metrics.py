"""Sample-based accuracy metrics over n responses per problem: avg@k, pass@k, maj@k.

What: for each problem we draw n responses and score each one (correct / wrong).
  * ``avg@n``  = mean over problems of (c / n), c = correct responses: the paper's headline metric
    (AIME Avg@16). It equals the unbiased pass@1 estimate.
  * ``pass@k`` = mean over problems of 1 - C(n-c, k) / C(n, k): the unbiased estimator of "at least
    one of k samples is correct" (Chen et al., 2021, "Evaluating Large Language Models Trained on
    Code", arXiv 2107.03374), computed as a stable product instead of huge binomials.
  * ``maj@k``  = mean over problems of [the most frequent answer among the first k responses is
    correct]. Answers are grouped by their normalised text (``answer_key``) and, when the caller
    passes ``classes`` (the math benchmarks do: ``evals.scoring.answer_classes``), texts that are the
    same answer (``1/2`` and ``0.5``) are merged into one class; responses without an answer do not
    vote; ties go to the class that appeared first; no vote at all counts as wrong.

Why these: avg@k is what the paper reports; pass@k shows whether the sampling distribution still
covers the answer (a collapsed policy loses pass@k faster than avg@k); maj@k is the usual
self-consistency number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Classes = Callable[[list[str]], Sequence[object]]
"""``classes(distinct) -> labels``: for the distinct answers of one vote (in order of first appearance)
one label each; answers with equal labels count as one answer."""


def _check_rows(correct: Sequence[Sequence[bool]]) -> int:
    if len(correct) == 0:
        raise ValueError("metrics: no problems given")
    n = len(correct[0])
    if n == 0:
        raise ValueError("metrics: problems have no samples")
    if any(len(row) != n for row in correct):
        raise ValueError(f"metrics: every problem needs the same number of samples (first has {n})")
    return n


def avg_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean per-problem accuracy over all n samples (avg@n)."""
    n = _check_rows(correct)
    return sum(sum(bool(x) for x in row) / n for row in correct) / len(correct)


def pass_at_k_single(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with c correct among n samples: 1 - C(n-c,k)/C(n,k)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    # C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i)
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """Mean unbiased pass@k over problems."""
    n = _check_rows(correct)
    return sum(pass_at_k_single(n, sum(bool(x) for x in row), k) for row in correct) / len(correct)


def majority_answer(answers: Sequence[str | None], classes: Classes | None = None) -> int | None:
    """Index of the first response carrying the most frequent answer (None answers abstain).

    Args:
        answers: per response, its answer key (None = no answer).
        classes: optional equivalence of distinct keys (see ``Classes``); default: each distinct key
            is its own answer.
    """
    distinct = list(dict.fromkeys(a for a in answers if a is not None))
    if not distinct:
        return None
    labels = list(classes(distinct)) if classes is not None else distinct
    if len(labels) != len(distinct):
        raise ValueError(f"maj@k: classes returned {len(labels)} labels for {len(distinct)} answers")
    label_of = dict(zip(distinct, labels))
    counts: dict[object, int] = {}
    first: dict[object, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        c = label_of[a]
        counts[c] = counts.get(c, 0) + 1
        first.setdefault(c, i)
    best = max(counts, key=lambda c: (counts[c], -first[c]))
    return first[best]


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]], k: int,
             classes: Classes | None = None) -> float:
    """Mean over problems of [the majority answer among the first k responses is correct].

    Args:
        answers: per problem, per response, the normalised answer key (None = no answer).
        correct: per problem, per response, whether it is correct.
        k: responses that vote (the first k).
        classes: optional equivalence of distinct answer keys (``majority_answer``); the majority
            class is scored by its first response.
    """
    n = _check_rows(correct)
    if not 1 <= k <= n:
        raise ValueError(f"maj@k: need 1 <= k <= n, got k={k}, n={n}")
    if len(answers) != len(correct) or any(len(a) != n for a in answers):
        raise ValueError("maj@k: answers and correct must have the same shape")
    total = 0.0
    for ans_row, cor_row in zip(answers, correct):
        idx = majority_answer(ans_row[:k], classes)
        total += 1.0 if idx is not None and cor_row[idx] else 0.0
    return total / len(correct)


def default_ks(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, and n itself (1, 2, 4, ..., n)."""
    if n < 1:
        raise ValueError(f"metrics: n must be >= 1, got {n}")
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def metric_names(n: int) -> list[str]:
    """Names of the metrics ``summarize`` returns for n samples, e.g. avg@16, pass@1..16, maj@16."""
    return [f"avg@{n}"] + [f"pass@{k}" for k in default_ks(n)] + [f"maj@{n}"]


def summarize(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]],
              classes: Classes | None = None) -> dict[str, float]:
    """All metrics of ``metric_names(n)`` for a benchmark (n = samples per problem; ``classes``: maj@n's
    answer equivalence, see ``majority_answer``)."""
    n = _check_rows(correct)
    out = {f"avg@{n}": avg_at_k(correct)}
    for k in default_ks(n):
        out[f"pass@{k}"] = pass_at_k(correct, k)
    out[f"maj@{n}"] = maj_at_k(answers, correct, n, classes)
    return out


def per_problem(answers: Sequence[str | None], correct: Sequence[bool],
                classes: Classes | None = None) -> dict[str, float]:
    """The same metrics for one problem (lm-eval's ``process_results``; the mean over problems is
    the benchmark value, since every metric above is a mean of per-problem values)."""
    return summarize([answers], [correct], classes)
