"""Chain arithmetic: a synthetic verifiable task where an early mistake compounds.

A problem is a start value followed by K operations ``+d`` / ``-d`` (mod m), written as one short
ASCII line ending in ``=``. The worked response writes the K running values, one character each,
and then stops (the end-of-sequence token). Two spellings of the operations (``op_format``):

  * ``char`` (default, one character per operation, as in the prototype): ``+d`` is the d-th
    upper-case letter, ``-d`` the d-th lower-case letter: e.g. ``7CeI=`` is
    7 +3 -5 +9 and its solution is ``054``. One character per operation keeps sequences short
    (24 operations: 26 prompt + 25 response tokens) and puts operation i at a fixed distance
    (K + 1) before response value i, which small rotary models learn quickly.
  * ``sign``: ``7+3-5+9=`` (readable, twice as long).

Reward 1 iff the response
  * consists of exactly K value characters (right length; anything else, including trailing text,
    separators or a response cut off before K values, is malformed), and
  * its last value equals the true final value,
and the generation stopped by itself (the trainer passes ``stopped=False`` for responses cut at the
token limit). Intermediate values are not checked: a policy that guesses the final digit scores
1/m, while one that computes the chain must get every step right, since one wrong running value
derails the rest. That makes the task long-horizon in the sense CPPO cares about: late tokens
depend on every earlier one.

Variable lengths (``K_min``, the long-horizon family): each problem draws its chain length k
uniformly from [K_min, K], and the prompt is padded with ``.`` up to K operations, so that operation i
still sits at the fixed distance K + 1 before response value i whatever k is, and the value after the
last operation faces a ``.``, where the end token belongs. Responses then vary in length within a
batch (k + 1 tokens with the end token). The answer of such a problem is its whole solution: the
reward reads the expected length and the last value from it (intermediate values are still not
checked).

Difficulty knobs: K (chain length), the operand range (``max_operand``, default 3) and the modulus m (values 0..m-1 written as one character
each: digits, then lower-case letters, so m <= 36; m <= 27 with op_format char). Named splits: ``chain_id`` (in distribution,
the training K) and ``chain_ood`` (a longer chain, ``ood_K``; by default K + 8).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

# One character per value: 0-9 then a-z (only used when modulus > 10).
_ALPHABET = string.digits + string.ascii_lowercase
PAD = "."  # fills the prompt of a shorter chain up to K operations (variable lengths)
OP_FORMATS = ("char", "sign")
# Small operands by default: with |d| <= 3 the previous value alone narrows the next one to 6
# candidates, which gives SFT a gradient toward "copy the previous value" before it has learned to
# read the operation. With d uniform over 1..9 both signs, v_{i-1} alone says nothing about v_i,
# and a from-scratch model sits on a loss plateau at ln(10) for hundreds of steps (measured: no
# progress in 500 steps at 0.2M parameters, against sampled accuracy 0.39 after 250 steps with
# |d| <= 3). The final value is still uniform over 0..m-1 (guessing scores 1/m).
DEFAULT_MAX_OPERAND = 3

# Fixed seeds per named split, offset from the caller's seed, so a split never overlaps training
# sampling streams that use small seeds.
_SPLIT_SALT = {"chain_id": 1_000_003, "chain_ood": 2_000_029, "chain_val": 3_000_017}


@dataclass(frozen=True)
class ChainTask:
    """The chain-arithmetic task at one difficulty.

    Args:
        K: number of operations (= number of running values in the response).
        modulus: arithmetic modulus m; values are 0..m-1, one character each.
        max_operand: largest |d| of an operation; default ``min(3, m - 1)`` (see below).
        op_format: ``char`` (one character per operation) or ``sign`` (``+d``/``-d``).
        K_min: variable lengths: each problem has k in [K_min, K] operations (None: always K).
    """

    K: int = 24
    modulus: int = 10
    max_operand: int | None = None
    op_format: str = "char"
    K_min: int | None = None

    def __post_init__(self) -> None:
        if self.K < 1:
            raise ValueError(f"chain task: K must be >= 1, got {self.K}")
        if self.K_min is not None and not 1 <= self.K_min <= self.K:
            raise ValueError(f"chain task: K_min must be in [1, K={self.K}], got {self.K_min}")
        if not 2 <= self.modulus <= len(_ALPHABET):
            raise ValueError(f"chain task: modulus must be in [2, {len(_ALPHABET)}], got {self.modulus}")
        if self.max_operand is not None and not 1 <= self.max_operand < self.modulus:
            raise ValueError(f"chain task: max_operand must be in [1, modulus-1], got {self.max_operand}")
        if self.op_format not in OP_FORMATS:
            raise ValueError(f"chain task: op_format must be one of {OP_FORMATS}, got {self.op_format!r}")
        if self.op_format == "char" and self.operand_max > 26:
            raise ValueError("chain task: op_format 'char' spells operands as letters (at most 26); "
                             "use max_operand <= 26 or op_format 'sign'")

    @property
    def operand_max(self) -> int:
        """The largest |d| actually drawn (``max_operand`` or the default ``min(3, m - 1)``)."""
        return self.max_operand or min(DEFAULT_MAX_OPERAND, self.modulus - 1)

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
        lo = self.K if self.K_min is None else self.K_min
        if not lo <= len(ops) <= self.K:
            want = self.K if self.K_min is None else f"{self.K_min}..{self.K}"
            raise ValueError(f"chain task: expected {want} operations, got {len(ops)}")
        m = self.modulus
        pad = PAD * ((self.K - len(ops)) * (2 if self.op_format == "sign" else 1))
        problem = _ALPHABET[start % m] + "".join(op_text(d, self.op_format) for d in ops) + pad + "="
        values = solve(start, ops, m)
        solution = "".join(_ALPHABET[v] for v in values)
        return {
            "id": f"chain-K{self.K}-m{m}-{problem}",
            "problem": problem,
            # a variable-length problem's answer carries its length: the whole solution
            "answer": solution if self.K_min is not None else _ALPHABET[values[-1]],
            "solution": solution,
        }

    def sample(self, rng: random.Random | int, n: int) -> list[dict]:
        """Draw n problems. ``rng`` is a ``random.Random`` (advanced in place) or an int seed."""
        if n < 0:
            raise ValueError(f"chain task: n must be >= 0, got {n}")
        rng = random.Random(rng) if isinstance(rng, int) else rng
        hi = self.operand_max
        out = []
        for _ in range(n):
            start = rng.randrange(self.modulus)
            k = self.K if self.K_min is None else rng.randint(self.K_min, self.K)
            ops = [rng.randint(1, hi) * rng.choice((1, -1)) for _ in range(k)]
            out.append(self.make_problem(start, ops))
        return out

    # ------------------------------------------------------------------ reward
    def reward(self, response: str, answer: str, stopped: bool = True) -> float:
        """1.0 iff ``response`` is exactly K value characters ending on ``answer`` and it stopped.

        With variable lengths (``K_min``) ``answer`` is the whole solution: the response must have its
        length and its last value. Surrounding whitespace is ignored; any other character makes the
        response malformed (0.0).
        """
        if not stopped:
            return 0.0
        r, a = response.strip(), answer.strip()
        valid = _ALPHABET[: self.modulus]
        length = len(a) if self.K_min is not None else self.K
        if not a or len(r) != length or any(c not in valid for c in r):
            return 0.0
        return 1.0 if r[-1] == a[-1] else 0.0

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


def op_text(d: int, op_format: str = "char") -> str:
    """Spelling of the operation ``+d`` (d > 0) or ``-|d|`` (d < 0)."""
    if d == 0:
        raise ValueError("chain task: operand 0 is not an operation")
    if op_format == "sign":
        return ("+" if d > 0 else "-") + _ALPHABET[abs(d)]
    return chr((ord("A") if d > 0 else ord("a")) + abs(d) - 1)


def parse_problem(problem: str, modulus: int = 10) -> tuple[int, list[int]]:
    """Inverse of :meth:`ChainTask.make_problem` (either op format): (start, signed operands)."""
    p = problem.strip()
    if not p.endswith("=") or len(p) < 3 or p[0] not in _ALPHABET[:modulus]:
        raise ValueError(f"not a chain problem: {problem!r}")
    body, start, ops = p[1:-1].rstrip(PAD), _ALPHABET.index(p[0]), []
    if body[:1] in ("+", "-"):
        if len(body) % 2:
            raise ValueError(f"not a chain problem: {problem!r}")
        for i in range(0, len(body), 2):
            sign, c = body[i], body[i + 1]
            if sign not in "+-" or c not in _ALPHABET[1:modulus]:
                raise ValueError(f"not a chain problem: {problem!r}")
            ops.append(_ALPHABET.index(c) * (1 if sign == "+" else -1))
    else:
        for c in body:
            if not c.isascii() or not c.isalpha():
                raise ValueError(f"not a chain problem: {problem!r}")
            ops.append(ord(c) - ord("A") + 1 if c.isupper() else -(ord(c) - ord("a") + 1))
    return start, ops


def make_split(name: str, n: int, seed: int = 0, K: int = 24, modulus: int = 10, ood_K: int | None = None,
               op_format: str = "char", max_operand: int | None = None, K_min: int | None = None) -> list[dict]:
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
    k_min = K_min if name != "chain_ood" else None  # the OOD split is one longer fixed length
    task = ChainTask(K=k, modulus=modulus, op_format=op_format, max_operand=max_operand, K_min=k_min)
    rows = task.sample(random.Random(seed + _SPLIT_SALT[name]), n)
    for i, row in enumerate(rows):
        row["id"] = f"{name}-{i}"
    return rows
