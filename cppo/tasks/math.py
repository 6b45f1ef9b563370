"""The real math path: prompts and answers from a math data set, rewarded with math-verify.

Prompts come from ``<data_dir>/<train_file>.jsonl`` (fields ``id``, ``problem``, ``answer``; e.g.
``math_train`` or ``gsm8k_train``), or, when that file is absent and a network exists, from
DAPO-Math-17k on the Hugging Face hub (the paper's training set).

Reward: 1.0 iff ``evals.scoring.is_correct(response, answer)`` (the same checker the evaluation
uses, so training and test rewards agree). math-verify parses LaTeX and can hang on pathological
strings, so every check runs in a worker process with a time limit; a check that times out or
raises scores 0.0 and the pool is restarted.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from cppo.data import load_benchmark_file

DEFAULT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}.\n"
DAPO_HUB = "BytedTsinghua-SIA/DAPO-Math-17k"


def _check(response: str, answer: str) -> float:
    from evals.scoring import is_correct  # imported in the worker

    return 1.0 if is_correct(response, answer) else 0.0


@dataclass
class MathTask:
    """Math word problems with verifiable final answers.

    Args:
        train_file: JSONL name (without ``.jsonl``) in the data directory used for training prompts.
        test_files: JSONL names used for periodic evaluation.
        template: prompt template with a ``{problem}`` field.
        timeout_s: time limit of one answer check.
        workers: reward worker processes.
        data_dir: optional data folder (``CPPO_DATA_DIR`` wins over it; docs/contracts.md §Data).
    """

    train_file: str = "math_train"
    test_files: tuple[str, ...] = ("math500",)
    template: str = DEFAULT_TEMPLATE
    timeout_s: float = 5.0
    workers: int = 2
    data_dir: str | None = None
    _rows: list[dict] | None = field(default=None, repr=False)
    _pool: ProcessPoolExecutor | None = field(default=None, repr=False)

    name = "math"

    # ------------------------------------------------------------------ data
    def _format(self, row: dict) -> dict:
        return {"id": str(row["id"]), "problem": self.template.format(problem=row["problem"]),
                "answer": str(row["answer"]), "solution": row.get("solution", "")}

    def rows(self) -> list[dict]:
        if self._rows is None:
            rows = load_benchmark_file(self.train_file, {"data_dir": self.data_dir})
            if rows is None:
                rows = _load_dapo_from_hub()
            if not rows:
                raise ValueError(f"math task: training file {self.train_file!r} is empty")
            self._rows = rows
        return self._rows

    def sample(self, rng: random.Random | int, n: int) -> list[dict]:
        """Draw n training prompts (with replacement across calls, without within one call)."""
        rng = random.Random(rng) if isinstance(rng, int) else rng
        rows = self.rows()
        idx = rng.sample(range(len(rows)), n) if n <= len(rows) else [rng.randrange(len(rows)) for _ in range(n)]
        return [self._format(rows[i]) for i in idx]

    def eval_split(self, name: str, n: int | None = None, seed: int = 0) -> list[dict]:
        rows = load_benchmark_file(name, {"data_dir": self.data_dir}, limit=n)
        if rows is None:
            raise ValueError(f"math task: no {name}.jsonl in the data directory")
        return [self._format(r) for r in rows]

    def eval_splits(self, configured: Sequence[str]) -> list[str]:
        """The periodic evaluation splits: this task's ``test_files`` (``rl.eval_splits`` names chain
        splits, so it is not used here)."""
        return list(self.test_files)

    # ------------------------------------------------------------------ reward
    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self._pool

    def _restart(self) -> None:
        if self._pool is not None:
            for p in list(getattr(self._pool, "_processes", {}).values()):
                p.kill()  # a hung math-verify call never returns by itself
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def rewards(self, responses: list[str], answers: list[str], stopped: list[bool] | None = None) -> list[float]:
        """Scores of a batch; 0.0 for checks that time out or fail. Truncated responses still count
        when their answer is right (a boxed answer before the cut is a real answer)."""
        futures = [self._executor().submit(_check, r, a) for r, a in zip(responses, answers, strict=True)]
        out = []
        for fut in futures:
            try:
                out.append(float(fut.result(timeout=self.timeout_s)))
            except FutureTimeout:
                out.append(0.0)
                self._restart()
                futures_left = len(futures) - len(out)
                if futures_left:  # resubmit the rest on a fresh pool
                    rest = self.rewards(responses[len(out):], answers[len(out):])
                    return out + rest
            except Exception:  # noqa: BLE001 - a crashing checker means "not verified"
                out.append(0.0)
        return out

    def reward(self, response: str, answer: str, stopped: bool = True) -> float:
        return self.rewards([response], [answer])[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _load_dapo_from_hub() -> list[dict]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets comes with lm-eval
        raise ValueError("math task: no local training file and the `datasets` package is missing") from e
    try:
        ds = datasets.load_dataset(DAPO_HUB, split="train")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"math task: no local training file and {DAPO_HUB} could not be loaded "
                         f"(offline?): {e}") from e
    rows = []
    for i, ex in enumerate(ds):
        prompt = ex["prompt"][0]["content"] if isinstance(ex.get("prompt"), list) else ex.get("prompt", "")
        rows.append({"id": f"dapo-{i}", "problem": prompt, "answer": ex["reward_model"]["ground_truth"]})
    return rows
