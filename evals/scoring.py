"""Answer checking for math benchmarks: the last ``\\boxed{}`` of a response against the gold answer.

What: ``is_correct(response, answer)`` extracts the content of the *last* ``\\boxed{...}`` (or
``\\fbox{...}``) of the response, the convention of MATH, Minerva and the CPPO paper's evaluation,
and compares it with the gold answer through math-verify (symbolic and numeric equivalence:
``0.5`` = ``\\frac{1}{2}``, ``\\sqrt{18}`` = ``3\\sqrt{2}``, sets, intervals, matrices).

Design decisions:
  * No ``\\boxed{}`` in the response means wrong. Every prompt template asks for one, and falling
    back to "the last number" would credit a model for text it did not commit to.
  * Gold and prediction go through the same normalisation (``_to_latex``) and are parsed as
    ``\\boxed{<text>}``: a bare LaTeX gold parses to nothing in math-verify unless it sits in a math
    environment. The normalisation rewrites the plain-text number forms some golds use (Minerva:
    ``4.5e33``, ``-1./3``, ``np.arcsin(10/13)``; LaTeX would read ``4.5e33`` as ``4.5·e·33``) and
    drops formatting (``\\approx``, ``,\\!`` thousands separators, ``^\\circ``, a trailing
    ``\\text{ unit}``, ``\\textbf{(073)}``, ``\\phantom``). math-verify's own unit stripping is
    off: it removes trailing one-letter "units", turning ``2c`` into ``2`` and ``b + c`` into ``b +``.
    Every gold of the benchmark data files (17,867) parses to a sympy object this way.
  * Plain numbers: math-verify compares floats after rounding to 6 decimals, so ``2.88e-19`` would
    equal ``1.3e-27``; when both sides are plain real numbers a match also needs a relative error
    <= 1e-3. Numeric tolerance is opt-in per benchmark (``rel_tol``): ``|pred - gold| <=
    rel_tol·|gold|`` also counts as correct (Minerva's physics answers are given to 2-3
    significant figures).
  * Time limits. math-verify bounds parsing and comparison with ``signal.alarm``, which only works
    in the main thread. ``is_correct`` uses it there and turns it off elsewhere (the caller must
    then bound the time itself). ``ScorerPool`` / ``score_many`` are the safe bulk entry points:
    they score in worker processes (each in its own main thread, so math-verify's alarms work)
    and kill any worker that exceeds a hard per-answer limit; that answer is scored wrong. A cheap structural guard
    (length, nesting depth) rejects obviously hostile answers before math-verify sees them.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

# math-verify logs every timeout with the whole (possibly megabyte-long) input: keep it quiet.
logging.getLogger("math_verify").setLevel(logging.ERROR)

DEFAULT_TIMEOUT_S = 5
"""Per-answer limit (seconds) for math-verify's own parse/compare alarms."""

MAX_ANSWER_CHARS = 1000
"""Longer extracted answers are scored wrong without parsing (the longest gold is ~210 chars)."""

MAX_NESTING = 40
"""Deeper bracket nesting is scored wrong without parsing (golds nest a handful of levels)."""

_BOX_COMMANDS = ("\\boxed", "\\fbox")


# --------------------------------------------------------------------------- extraction
def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` of ``text``, braces balanced.

    ``\\boxed 5`` (no braces) gives ``5``. Returns None when there is no box or its braces never close.
    """
    if not isinstance(text, str):
        raise ValueError(f"last_boxed: expected a string, got {type(text).__name__}")
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(cmd)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":  # \boxed 5: the next token up to whitespace or a math delimiter
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def extract_answer(response: str) -> str | None:
    """The answer a response commits to: its last boxed content (None if it has none)."""
    return last_boxed(response)


# --------------------------------------------------------------------------- normalisation
_SCI = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")
_DOT_NO_DIGIT = re.compile(r"(\d)\.(?=$|[\s/),}\]])")  # "1./3", "12." but not "0.\overline{3}"
_BOLD = re.compile(r"\\(?:textbf|mathbf|boldsymbol|bm)\s*\{([^{}]*)\}")
_PAREN_INT = re.compile(r"^\s*\(\s*(-?\d+)\s*\)\s*$")
_APPROX = re.compile(r"^\s*(?:\\approx|\\simeq|\\sim|≈)\s*")
_THOUSANDS = re.compile(r"(\d)(?:,\\!\s*|\{,\})(\d{3})")
_PHANTOM = re.compile(r"\\phantom\s*(?:\{[^{}]*\}|\S)")
_BARE_FRAC = re.compile(r"\\[dt]?frac\s*(\\[A-Za-z]+|\w)\s*(\\[A-Za-z]+|\w)")
_TRIG_POWER = re.compile(r"\\(sin|cos|tan|sec|csc|cot)\^\{?(\d+)\}?\s*(\\[A-Za-z]+|[A-Za-z0-9])(?![\w({])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_TEXT_UNIT = re.compile(r"([\d}])\s*\\(?:text|mbox|mathrm)\s*\{(?:\s|~|\\[,;! ])*[A-Za-z][A-Za-z .~/-]*\}(?:\^\{?-?\d\}?)?\s*$")
_CMD_SUBSCRIPT = re.compile(r"_\{\s*\\([A-Za-z]+)\s*\}")
_CAPITAL_E_SUB = re.compile(r"(?<![\\A-Za-z])E_")
_LETTER_INTERVAL = re.compile(r"^[A-Za-z]\s*(\([^()\[\]]*,[^()\[\]]*\]|\[[^()\[\]]*,[^()\[\]]*\))$")
_PY_PREFIX = re.compile(r"\b(?:np|numpy|math|sympy|sp)\.")
_PY_FUNCS = ("arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sin", "cos", "tan", "exp", "log", "sqrt")


def _strip_math_delims(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
    return s


def _first_math_if_prose(s: str) -> str:
    """``$f(x)=ax+b$, where $b$ is an integer``: prose with inline math → its first math segment."""
    s = re.sub(r"\$\s*\$", " ", s)  # "a+$ $b": an empty math break inside one formula
    segments = re.findall(r"\$([^$]+)\$", s)
    outside = re.sub(r"\\[A-Za-z]+", " ", re.sub(r"\$[^$]*\$", " ", s))  # text outside math, commands dropped
    if segments and re.search(r"[A-Za-z]{3,}", outside):
        return segments[0]
    return s


def _to_latex(text: str) -> str:
    """Rewrite plain-text number/function forms into LaTeX that math-verify parses as intended."""
    s = _strip_math_delims(_first_math_if_prose(text.strip()))
    s = _BOLD.sub(r"\1", s)  # \textbf{(073)} -> (073): bold is formatting
    s = _PAREN_INT.sub(r"\1", s)  # (073) -> 073: AoPS writes AIME answers in parentheses
    s = _APPROX.sub("", s)  # "\approx 8.24" -> "8.24"
    while _THOUSANDS.search(s):  # 29,\!322,\!216 / 29{,}322 -> 29322216 (matches overlap: repeat)
        s = _THOUSANDS.sub(r"\1\2", s)
    s = _PHANTOM.sub("", s)  # \phantom -1 -> 1 (invisible spacing)
    s = _BARE_FRAC.sub(r"\\frac{\1}{\2}", s)  # \frac\pi 2 -> \frac{\pi}{2}
    s = _TRIG_POWER.sub(r"\\\1^{\2}(\3)", s)  # \sin^2 t -> \sin^{2}(t)
    s = _DEGREES.sub("", s)  # 76^\circ -> 76
    s = _TEXT_UNIT.sub(r"\1", s)  # 8.24 \text{ mph} -> 8.24
    s = _CMD_SUBSCRIPT.sub(r"_{\1}", s)  # M_{\odot}, m_{\max } -> M_{odot}, m_{max}
    s = _CAPITAL_E_SUB.sub(r"\\mathcal{E}_", s)  # E_{1}: a bare E is read as Euler's number
    s = _LETTER_INTERVAL.sub(r"\1", s)  # t(0,4] (a lost "\in") -> (0,4]
    s = _SCI.sub(lambda m: f"{m.group(1)}\\times 10^{{{m.group(2)}}}", s)  # 4.5e33 -> 4.5\times 10^{33}
    s = _DOT_NO_DIGIT.sub(r"\1", s)  # -1./3 -> -1/3, "12." -> "12"
    if _PY_PREFIX.search(s) or "**" in s:  # numpy/python spelling: np.arcsin(10/13), 2**10
        s = _PY_PREFIX.sub("", s).replace("**", "^")
        for fn in _PY_FUNCS:
            s = re.sub(rf"(?<![\\a-zA-Z]){fn}\(", rf"\\{fn}(", s)
        s = re.sub(r"\\sqrt\(([^()]*)\)", r"\\sqrt{\1}", s)
    return s.strip().rstrip(".,;").strip()


def _too_wild(s: str) -> bool:
    """Structural guard: answers no benchmark gold resembles, rejected before parsing."""
    if len(s) > MAX_ANSWER_CHARS:
        return True
    depth = worst = 0
    for c in s:
        if c in "({[":
            depth += 1
            worst = max(worst, depth)
        elif c in ")}]":
            depth -= 1
    return worst > MAX_NESTING


# --------------------------------------------------------------------------- comparison
def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@functools.lru_cache(maxsize=4096)
def parse_answer(text: str, timeout_s: int | None = DEFAULT_TIMEOUT_S) -> list:
    """math-verify parse of an extracted answer (no surrounding prose): sympy objects + string fallback.

    Cached: a gold answer is parsed once however many samples are scored against it.
    """
    from math_verify import LatexExtractionConfig, parse
    from math_verify.parser import NormalizationConfig

    if _too_wild(text):
        return []
    timeout = timeout_s if _in_main_thread() else None
    latex = _to_latex(text)
    if not latex:
        return []
    return parse(
        "\\boxed{" + latex + "}",
        # units=False: math-verify's unit stripping eats trailing one-letter symbols ("2c" -> 2,
        # "b + c" -> "b +"); textual units are removed by _to_latex instead.
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0, normalization_config=NormalizationConfig(
            basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False))],
        parsing_timeout=timeout,
    )


def _safe_to_evaluate(x) -> bool:
    """Plain-number check without evaluating towers: every power has a small numeric exponent,
    no factorials. (Big-integer arithmetic runs in C and no alarm can interrupt it.)"""
    import sympy

    if x.has(sympy.factorial, sympy.factorial2, sympy.gamma):
        return False
    for p in x.atoms(sympy.Pow):
        e = p.exp
        if not e.is_number or e.has(sympy.Pow) or e.has(sympy.exp):
            return False
        try:
            if abs(float(e)) > 1000:
                return False
        except (TypeError, ValueError):
            return False
    return True


def _as_float(x) -> float | None:
    """A parsed answer as a real float when it is a plain real number (no symbols, sets, relations)."""
    try:
        import sympy

        if isinstance(x, sympy.Expr) and not x.free_symbols and _safe_to_evaluate(x):
            v = complex(sympy.N(x, 20))
            if abs(v.imag) < 1e-12 and v.real == v.real:  # real and not NaN
                return float(v.real)
    except Exception:
        return None
    return None


def _numbers(parsed: list) -> list[float]:
    return [v for v in (_as_float(x) for x in parsed) if v is not None]


_INT = re.compile(r"-?\d+")
NUMERIC_SANITY_REL = 1e-3
"""math-verify compares floats after rounding to 6 decimals, so 2.88e-19 "equals" 1.3e-27. When both
answers are plain numbers a match also needs relative error <= this (or the benchmark's rel_tol)."""


def answers_match(pred_answer: str, gold_answer: str, rel_tol: float = 0.0, timeout_s: int | None = DEFAULT_TIMEOUT_S) -> bool:
    """Whether an extracted answer equals the gold answer (both plain answer strings, no \\boxed).

    Args:
        pred_answer: the model's answer (e.g. the content of its last box).
        gold_answer: the reference answer.
        rel_tol: relative numeric tolerance for plain-number answers (0 = none beyond math-verify's).
        timeout_s: math-verify's alarm in the main thread (ignored elsewhere).
    """
    from math_verify import verify

    g_txt, p_txt = _to_latex(gold_answer).replace(" ", ""), _to_latex(pred_answer).replace(" ", "")
    if _INT.fullmatch(g_txt) and _INT.fullmatch(p_txt):  # fast path: two integers (most golds)
        return int(g_txt) == int(p_txt)
    gold = parse_answer(gold_answer, timeout_s)
    pred = parse_answer(pred_answer, timeout_s)
    if not gold or not pred:
        return False
    g_num, p_num = _numbers(gold[:1]), _numbers(pred[:1])
    if g_num and p_num:  # two plain numbers: relative error decides, math-verify's rounding must agree too
        g, p = g_num[0], p_num[0]
        rel = abs(p - g) / abs(g) if g != 0 else abs(p)
        if rel_tol > 0 and rel <= rel_tol:
            return True
        if rel > NUMERIC_SANITY_REL:
            return False
    timeout = timeout_s if _in_main_thread() else None
    return bool(verify(gold, pred, timeout_seconds=timeout))


def is_correct(response: str, answer: str, rel_tol: float = 0.0, timeout_s: int | None = DEFAULT_TIMEOUT_S) -> bool:
    """True iff the last ``\\boxed{}`` of ``response`` is equivalent to the gold ``answer``.

    Args:
        response: the model's full response text.
        answer: the gold final answer (number or LaTeX, no ``\\boxed{}``; ``$...$`` tolerated).
        rel_tol: relative numeric tolerance (0 = math-verify's comparison only).
        timeout_s: math-verify's per-parse/compare alarm, main thread only (see module docstring).

    Returns:
        bool; never raises on malformed responses (they are wrong).
    """
    if not isinstance(response, str) or not isinstance(answer, str):
        raise ValueError(f"is_correct: response and answer must be strings, got {type(response).__name__}, {type(answer).__name__}")
    boxed = extract_answer(response)
    if boxed is None:
        return False
    try:
        return answers_match(boxed, answer, rel_tol=rel_tol, timeout_s=timeout_s)
    except Exception:  # a scorer bug or a pathological input is a wrong answer, not a crashed eval
        return False


# --------------------------------------------------------------------------- worker pool
@dataclass(frozen=True)
class ScoreItem:
    """One answer to score: response text, gold answer, relative tolerance."""

    response: str
    answer: str
    rel_tol: float = 0.0


def _score_item(item: ScoreItem, timeout_s: int) -> bool:
    return is_correct(item.response, item.answer, rel_tol=item.rel_tol, timeout_s=timeout_s)


def _worker(conn, fn: Callable, timeout_s: int) -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, item = msg
        try:
            ok = bool(fn(item, timeout_s))
        except Exception:
            ok = False
        conn.send((idx, ok))


class _Slot:
    """A worker process with the task it is running (if any) and its deadline."""

    def __init__(self, ctx, fn: Callable, timeout_s: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, fn, timeout_s), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=1)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


class ScorerPool:
    """Persistent scoring workers; an answer running past ``hard_limit_s`` gets its worker killed.

    Each worker scores in its own main thread, so math-verify's ``signal.alarm`` limits
    (``timeout_s``) work there; the hard limit catches what alarms cannot interrupt (long C-level
    sympy calls) and crashes (out of memory). A killed or crashed worker's answer is wrong and the
    worker is replaced. Use as a context manager or call ``close()``.

    Args:
        workers: processes (default: CPU count, at most 8).
        timeout_s: math-verify's per-parse/compare alarm inside each worker.
        hard_limit_s: wall-clock limit per answer (default 4·timeout_s + 5: two parses, a
            comparison, slack).
        fn: the per-item scorer ``fn(item, timeout_s) -> bool``, module-level so workers reach it.
        start_method: multiprocessing start method (default ``fork`` where available: workers start
            in milliseconds and inherit math-verify already imported).
    """

    def __init__(self, workers: int | None = None, timeout_s: int = DEFAULT_TIMEOUT_S, hard_limit_s: float | None = None,
                 fn: Callable[[Any, int], bool] = _score_item, start_method: str | None = None):
        if timeout_s is None or timeout_s <= 0:
            raise ValueError(f"ScorerPool: timeout_s must be a positive number of seconds, got {timeout_s}")
        self.workers = max(1, workers if workers is not None else min(os.cpu_count() or 1, 8))
        self.timeout_s = int(timeout_s)
        self.hard_limit_s = hard_limit_s if hard_limit_s is not None else 4 * timeout_s + 5
        self.fn = fn
        method = start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._ctx = mp.get_context(method)
        self._slots: list[_Slot] = []
        self.killed = 0
        """answers whose worker was killed at the hard limit (or crashed), over the pool's life"""

    def __enter__(self) -> ScorerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_slot(self) -> _Slot:
        return _Slot(self._ctx, self.fn, self.timeout_s)

    def close(self) -> None:
        for s in self._slots:
            s.stop()
        self._slots = []

    def score(self, items: Sequence[Any], progress: bool = False) -> list[bool]:
        """One bool per item, in order (wrong where the worker hung past the hard limit)."""
        n = len(items)
        if n == 0:
            return []
        while len(self._slots) < min(self.workers, n):
            self._slots.append(self._new_slot())
        slots = self._slots
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="scoring", unit="ans")
        results: list[bool | None] = [None] * n
        pending = list(range(n - 1, -1, -1))  # a stack popped from the end: submitted in order
        done = 0
        try:
            while done < n:
                for k in range(len(slots)):  # hand out work
                    s = slots[k]
                    if s.task is None and pending:
                        idx = pending.pop()
                        try:
                            s.conn.send((idx, items[idx]))
                        except (BrokenPipeError, OSError):  # a dead worker: replace it, resend
                            s.kill()
                            slots[k] = s = self._new_slot()
                            s.conn.send((idx, items[idx]))
                        s.task, s.deadline = idx, time.monotonic() + self.hard_limit_s
                busy = [s for s in slots if s.task is not None]
                ready = wait([s.conn for s in busy], timeout=max(0.0, min(s.deadline for s in busy) - time.monotonic()))
                for k in range(len(slots)):
                    s = slots[k]
                    if s.task is None:
                        continue
                    if s.conn in ready:
                        try:
                            idx, ok = s.conn.recv()
                        except (EOFError, OSError):  # crashed (e.g. out of memory): wrong, new worker
                            idx, ok = s.task, False
                            self.killed += 1
                            s.kill()
                            slots[k] = self._new_slot()
                        results[idx] = ok
                    elif time.monotonic() >= s.deadline:  # hung past the hard limit: kill → wrong
                        results[s.task] = False
                        self.killed += 1
                        s.kill()
                        slots[k] = self._new_slot()
                    else:
                        continue
                    slots[k].task = None
                    done += 1
                    if bar is not None:
                        bar.update(1)
        except BaseException:  # interrupted mid-batch: workers hold stale tasks, start afresh next time
            self.close()
            raise
        finally:
            if bar is not None:
                bar.close()
        return [bool(r) for r in results]


def score_many(items: Sequence[ScoreItem], workers: int | None = None, timeout_s: int = DEFAULT_TIMEOUT_S,
               hard_limit_s: float | None = None, fn: Callable[[Any, int], bool] = _score_item,
               progress: bool = False) -> list[bool]:
    """Score many answers in a throw-away :class:`ScorerPool` (see there for the arguments).

    ``workers=0`` scores inline in this process instead (math-verify's alarms only, no hard limit).
    """
    if workers == 0:
        return [bool(fn(it, timeout_s)) for it in items]
    with ScorerPool(workers=min(workers or os.cpu_count() or 1, max(1, len(items))), timeout_s=timeout_s,
                    hard_limit_s=hard_limit_s, fn=fn) as pool:
        return pool.score(items, progress=progress)


# --------------------------------------------------------------------------- answer equivalence
def answer_classes(answers: Sequence[str], pool: Any = None) -> list[int]:
    """Group extracted answers by math-verify equivalence (maj@k's vote: ``1/2``, ``0.5`` and
    ``\\frac{1}{2}`` are one answer).

    Each answer, in order, is compared (``answers_match``, the answer against the class's first member
    as the reference) with one representative of every class opened so far; it joins the first class
    it matches and otherwise opens a new one. So the result is deterministic and costs at most
    m·(m-1)/2 comparisons for m answers (an integer pair takes the fast path, no parsing). The
    comparisons of one answer run as one batch through ``pool`` (default ``shared_pool()``), i.e.
    with the scorer's time limits: math-verify's alarm in each worker and the hard per-answer limit,
    past which a comparison counts as "different".

    Returns:
        per answer, the index of its class's first member (so equal labels = one answer).
    """
    labels: list[int] = []
    reps: list[int] = []
    for i, a in enumerate(answers):
        hit = None
        if reps:
            items = [ScoreItem("\\boxed{" + a + "}", answers[r]) for r in reps]
            verdicts = (pool if pool is not None else shared_pool()).score(items)
            hit = next((r for r, ok in zip(reps, verdicts) if ok), None)
        if hit is None:
            reps.append(i)
            hit = i
        labels.append(hit)
    return labels


_SHARED: ScorerPool | None = None


def shared_pool() -> ScorerPool:
    """A process-wide pool with default settings (created on first use, closed at exit).

    Its workers come from a ``forkserver`` where available: the evaluating process holds a model,
    CUDA and helper threads (tqdm, tokenizers), and forking a threaded process can copy a held
    lock into the child; the fork server is a clean single-threaded process that has imported
    only this module.
    """
    global _SHARED
    if _SHARED is None:
        import atexit

        method = None
        if "forkserver" in mp.get_all_start_methods():
            mp.get_context("forkserver").set_forkserver_preload(["evals.scoring"])
            method = "forkserver"
        _SHARED = ScorerPool(start_method=method)
        atexit.register(_SHARED.close)
    return _SHARED
