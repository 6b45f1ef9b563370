"""Chain arithmetic: a synthetic verifiable task where an early mistake compounds.

A problem is a start digit followed by K operations ``+d`` / ``-d`` (mod m), written as one short
ASCII line ending in ``=``, e.g. ``7+3-5+9=`` (K = 3, m = 10). The worked response writes the K
running values, one character each, e.g. ``054``, and then stops (the end-of-sequence token).

Reward 1 iff the response
  * consists of exactly K value characters (right length; anything else, including trailing text,
    separators or a response cut off before K values, is malformed), and
  * its last value equals the true final value,
and the generation stopped by itself (the trainer passes ``stopped=False`` for responses cut at the
token limit). Intermediate values are not checked: a policy that guesses the final digit scores
1/m, while one that computes the chain must get every step right, since one wrong running value
derails the rest. That makes the task long-horizon in the sense CPPO cares about: late tokens
depend on every earlier one.

Difficulty knobs: K (chain length) and the modulus m (values 0..m-1 written as one character
each: digits, then lower-case letters, so m <= 36). Named splits: ``chain_id`` (in distribution,
the training K) and ``chain_ood`` (a longer chain, ``ood_K``; by default K + 8).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

# One character per value: 0-9 then a-z (only used when modulus > 10).
_ALPHABET = string.digits + string.ascii_lowercase

# Fixed seeds per named split, offset from the caller's seed, so a split never overlaps training
# sampling streams that use small seeds.
_SPLIT_SALT = {"chain_id": 1_000_003, "chain_ood": 2_000_029, "chain_val": 3_000_017}


@dataclass(frozen=True)
class ChainTask:
    """The chain-arithmetic task at one difficulty.

    Args:
        K: number of operations (= number of running values in the response).
        modulus: arithmetic modulus m; values are 0..m-1, one character each.
        max_operand: largest |d| of an operation (default m - 1).
    """

    K: int = 24
    modulus: int = 10
    max_operand: int | None = None

    def __post_init__(self) -> None:
        if self.K < 1:
            raise ValueError(f"chain task: K must be >= 1, got {self.K}")
        if not 2 <= self.modulus <= len(_ALPHABET):
            raise ValueError(f"chain task: modulus must be in [2, {len(_ALPHABET)}], got {self.modulus}")
        if self.max_operand is not None and not 1 <= self.max_operand < self.modulus:
            raise ValueError(f"chain task: max_operand must be in [1, modulus-1], got {self.max_operand}")

    @property
    def name(self) -> str:
        return "chain"

    @property
    def response_len(self) -> int:
        """Characters in a correct response (without the end token)."""
        return self.K

    # ------------------------------------------------------------------ generation
    def make_problem(self, start: int, ops: list[int]) -> dict:
        """Build one example from a start value and signed operands (e.g. [3, -5, 9])."""
        if len(ops) != self.K:
            raise ValueError(f"chain task: expected {self.K} operations, got {len(ops)}")
        m = self.modulus
        problem = _ALPHABET[start % m] + "".join(("+" if d >= 0 else "-") + _ALPHABET[abs(d)] for d in ops) + "="
        values = solve(start, ops, m)
        solution = "".join(_ALPHABET[v] for v in values)
        return {
            "id": f"chain-K{self.K}-m{m}-{problem}",
            "problem": problem,
            "answer": _ALPHABET[values[-1]],
            "solution": solution,
        }

    def sample(self, rng: random.Random | int, n: int) -> list[dict]:
        """Draw n problems. ``rng`` is a ``random.Random`` (advanced in place) or an int seed."""
        if n < 0:
            raise ValueError(f"chain task: n must be >= 0, got {n}")
        rng = random.Random(rng) if isinstance(rng, int) else rng
        hi = self.max_operand or self.modulus - 1
        out = []
        for _ in range(n):
            start = rng.randrange(self.modulus)
            ops = [rng.randint(1, hi) * rng.choice((1, -1)) for _ in range(self.K)]
            out.append(self.make_problem(start, ops))
        return out

    # ------------------------------------------------------------------ reward
    def reward(self, response: str, answer: str, stopped: bool = True) -> float:
        """1.0 iff ``response`` is exactly K value characters ending on ``answer`` and it stopped.

        Surrounding whitespace is ignored; any other character makes the response malformed (0.0).
        """
        if not stopped:
            return 0.0
        r = response.strip()
        valid = _ALPHABET[: self.modulus]
        if len(r) != self.K or any(c not in valid for c in r):
            return 0.0
        return 1.0 if r[-1] == answer.strip() else 0.0

    def rewards(self, responses: list[str], answers: list[str], stopped: list[bool] | None = None) -> list[float]:
        """Batch form of :meth:`reward` (the trainer's entry point, shared with the math task)."""
        stopped = stopped if stopped is not None else [True] * len(responses)
        return [self.reward(r, a, s) for r, a, s in zip(responses, answers, stopped, strict=True)]


def solve(start: int, ops: list[int], modulus: int) -> list[int]:
    """The running values after each operation: v_i = (v_{i-1} + d_i) mod m, v_0 = start."""
    values, v = [], start
    for d in ops:
        v = (v + d) % modulus
        values.append(v)
    return values


def parse_problem(problem: str, modulus: int = 10) -> tuple[int, list[int]]:
    """Inverse of :meth:`ChainTask.make_problem`: (start, signed operands)."""
    p = problem.strip()
    if not p.endswith("=") or len(p) < 4 or (len(p) - 2) % 2:
        raise ValueError(f"not a chain problem: {problem!r}")
    body = p[:-1]
    start = _ALPHABET.index(body[0])
    ops = []
    for i in range(1, len(body), 2):
        sign, c = body[i], body[i + 1]
        if sign not in "+-" or c not in _ALPHABET[:modulus]:
            raise ValueError(f"not a chain problem: {problem!r}")
        ops.append(_ALPHABET.index(c) * (1 if sign == "+" else -1))
    return start, ops


def make_split(name: str, n: int, seed: int = 0, K: int = 24, modulus: int = 10, ood_K: int | None = None) -> list[dict]:
    """A named, reproducible evaluation split.

    ``chain_id``: in-distribution (K operations); ``chain_ood``: harder, ``ood_K`` operations
    (default K + 8); ``chain_val``: in-distribution validation set for SFT early stopping, disjoint
    seed stream from ``chain_id``. Each split draws from its own fixed stream (seed + salt), so the
    same (name, n, seed, K, modulus) always gives the same problems, and a larger n extends a
    smaller one.
    """
    if name not in _SPLIT_SALT:
        raise ValueError(f"unknown chain split {name!r}; choose from {sorted(_SPLIT_SALT)}")
    k = (ood_K or K + 8) if name == "chain_ood" else K
    rows = ChainTask(K=k, modulus=modulus).sample(random.Random(seed + _SPLIT_SALT[name]), n)
    for i, row in enumerate(rows):
        row["id"] = f"{name}-{i}"
    return rows
