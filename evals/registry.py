"""The benchmark registry: where each benchmark's problems come from, how they are prompted and scored.

Every benchmark resolves to the same document shape, whatever its source:
``{"id", "problem", "answer", "solution", "benchmark"}`` (``solution`` may be empty).

Sources (``docs/contracts.md`` §Data): a local ``<name>.jsonl`` (or the file named by
``local_file``) in the data directory (``CPPO_DATA_DIR``, else the profile's ``data_dir``) wins;
when it is absent the benchmark's Hugging Face dataset is loaded and its columns mapped. When that
fails too (offline, no network, unknown dataset) ``cppo.data.DataNotFound`` says so in one line;
offline (``HF_HUB_OFFLINE=1``) it is raised before anything touches the network.
``DATA_FILES`` names every file of the data directory with its hub source (the evaluation
benchmarks plus the two training sets), which is what ``cppo data download`` writes.
Synthetic chain splits are generated from ``cppo.tasks.chain.make_split`` (no file, no network),
with the chain settings of the profile (K, modulus, ood_K, n_test).

Scoring: ``math`` benchmarks use ``evals.scoring`` (last ``\\boxed{}``, math-verify; ``rel_tol`` is
the numeric tolerance, non-zero only for Minerva whose physics answers are rounded); ``chain``
benchmarks use ``ChainTask.reward`` (exactly K value characters ending on the right value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals import prompts, scoring


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset used when no local file exists."""

    path: str
    """dataset id, e.g. ``HuggingFaceH4/MATH-500``"""
    split: str
    """split holding the problems"""
    name: str | None = None
    """dataset config name, if any"""
    fields: dict[str, str] = field(default_factory=dict)
    """our field -> hub column, for ``id``, ``problem``, ``answer``, ``solution``"""
    answer_fn: str | None = None
    """post-processing of the hub answer: ``gsm8k`` (text after ####), ``first`` (list → first item),
    ``boxed`` (the last ``\\boxed{}`` of a worked solution; rows without one are dropped)"""

    @property
    def label(self) -> str:
        """``path[/name]:split``, as the result JSON's ``source`` field and error messages write it."""
        return self.path + (f"/{self.name}" if self.name else "") + f":{self.split}"


@dataclass(frozen=True)
class Benchmark:
    """One evaluation benchmark."""

    name: str
    """registry key and the ``<benchmark>`` of ``eval/<benchmark>/<metric>``"""
    kind: str
    """``math`` (\\boxed answer, math-verify) or ``chain`` (synthetic task reward)"""
    description: str
    """one line for ``cppo eval --list`` and the docs"""
    local_file: str | None = None
    """JSONL stem in the data directory when it differs from ``name`` (gsm8k → gsm8k_test)"""
    hub: HubSource | None = None
    """fallback source"""
    rel_tol: float = 0.0
    """relative numeric tolerance of the scorer (0: math-verify's comparison only)"""
    max_tokens: int = 4096
    """default generation budget (``--max-tokens`` / config ``eval.max_tokens`` override it)"""
    chain_split: str | None = None
    """``chain_id`` / ``chain_ood`` for synthetic benchmarks"""

    @property
    def lm_eval_task(self) -> str:
        """Name of the lm-eval task file in ``evals/tasks/``."""
        return f"cppo_{self.name}"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("math500", "math", "MATH-500 (PRM800K test split of MATH), 500 problems",
                  hub=HubSource("HuggingFaceH4/MATH-500", "test",
                                fields={"id": "unique_id", "problem": "problem", "answer": "answer", "solution": "solution"})),
        Benchmark("aime24", "math", "AIME 2024 I+II, 30 integer answers",
                  hub=HubSource("HuggingFaceH4/aime_2024", "train",
                                fields={"id": "id", "problem": "problem", "answer": "answer", "solution": "solution"})),
        Benchmark("aime25", "math", "AIME 2025 I+II, 30 integer answers",
                  hub=HubSource("math-ai/aime25", "test", fields={"id": "id", "problem": "problem", "answer": "answer"})),
        Benchmark("aime26", "math", "AIME 2026 I+II, 30 integer answers",
                  hub=HubSource("MathArena/aime_2026", "train",
                                fields={"id": "problem_idx", "problem": "problem", "answer": "answer"})),
        Benchmark("amc23", "math", "AMC 12 2023 (numeric-answer subset), 40 problems",
                  hub=HubSource("math-ai/amc23", "test", fields={"id": "id", "problem": "question", "answer": "answer"})),
        Benchmark("gsm8k", "math", "GSM8K test, 1319 grade-school word problems", local_file="gsm8k_test", max_tokens=1024,
                  hub=HubSource("openai/gsm8k", "test", name="main",
                                fields={"problem": "question", "answer": "answer"}, answer_fn="gsm8k")),
        Benchmark("minerva_math", "math", "Minerva OCWCourses, 272 science problems (1% numeric tolerance)", rel_tol=1e-2,
                  hub=HubSource("math-ai/minervamath", "test", fields={"problem": "question", "answer": "answer"})),
        Benchmark("olympiadbench", "math", "OlympiadBench OE_TO_maths_en_COMP, 675 problems",
                  hub=HubSource("Hothan/OlympiadBench", "train", name="OE_TO_maths_en_COMP",
                                fields={"id": "id", "problem": "question", "answer": "final_answer", "solution": "solution"},
                                answer_fn="first")),
        Benchmark("chain_id", "chain", "chain arithmetic, training chain length K (in distribution)",
                  chain_split="chain_id", max_tokens=64),
        Benchmark("chain_ood", "chain", "chain arithmetic, longer chains ood_K (out of distribution)",
                  chain_split="chain_ood", max_tokens=64),
    ]
}


# Training sets: files of the data directory that no evaluation benchmark reads (the math task's
# ``train_file``), with the hub source ``cppo data download`` takes them from.
TRAIN_SETS: dict[str, HubSource] = {
    "gsm8k_train": HubSource("openai/gsm8k", "train", name="main",
                             fields={"problem": "question", "answer": "answer"}, answer_fn="gsm8k"),
    "math_train": HubSource("DigitalLearningGmbH/MATH-lighteval", "train", name="default",
                            fields={"problem": "problem", "answer": "solution", "solution": "solution"},
                            answer_fn="boxed"),
}

# file stem in the data directory -> hub source: every file `cppo data download` can write
DATA_FILES: dict[str, HubSource] = {
    **{(b.local_file or b.name): b.hub for b in BENCHMARKS.values() if b.kind == "math" and b.hub},
    **TRAIN_SETS,
}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``; ValueError naming the valid ones otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def parse_benchmarks(spec: str | list[str]) -> list[Benchmark]:
    """``"aime24,math500"`` (or a list) → benchmarks, in order, duplicates dropped."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("no benchmark given")
    return [get_benchmark(n) for n in dict.fromkeys(names)]


# --------------------------------------------------------------------------- chain settings
@dataclass(frozen=True)
class ChainSettings:
    """Parameters of the synthetic chain splits (the profile's ``task`` section)."""

    K: int = 24
    """operations per problem in the training distribution (chain_id)"""
    modulus: int = 10
    """arithmetic modulus"""
    ood_K: int | None = None
    """operations per problem of chain_ood (default K + 8)"""
    n_test: int = 256
    """problems per split"""
    seed: int = 0
    """split seed (each split adds its own fixed salt)"""
    max_operand: int | None = None
    """largest |d| of an operation (None: the chain task's default)"""
    op_format: str | None = None
    """spelling of the operations, ``char`` | ``sign`` (None: the chain task's default)"""
    K_min: int | None = None
    """variable lengths: chain_id/chain_val draw each length from [K_min, K] (None: always K)"""

    @classmethod
    def from_config(cls, cfg: dict | None) -> ChainSettings:
        """From a resolved profile config (its ``task`` mapping); defaults when absent."""
        task = (cfg or {}).get("task") or {}
        keys = ("K", "modulus", "ood_K", "n_test", "max_operand", "op_format", "K_min")
        return cls(**{k: task[k] for k in keys if task.get(k) is not None})

    def task_kwargs(self) -> dict:
        """The optional ChainTask/make_split keyword arguments that are set."""
        return {k: v for k, v in (("max_operand", self.max_operand), ("op_format", self.op_format)) if v is not None}

    def split_kwargs(self) -> dict:
        """`task_kwargs` plus the variable-length setting, for `make_split`."""
        return {**self.task_kwargs(), **({"K_min": self.K_min} if self.K_min is not None else {})}

    def task_for(self, split: str):
        from cppo.tasks.chain import ChainTask

        k = (self.ood_K or self.K + 8) if split == "chain_ood" else self.K
        k_min = self.K_min if split != "chain_ood" else None
        return ChainTask(K=k, modulus=self.modulus, K_min=k_min, **self.task_kwargs())


# --------------------------------------------------------------------------- loading
def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """An explicit folder (``--data-dir``, already resolved by the caller), else ``cppo.data.data_dir()``."""
    from cppo.data import data_dir as default_data_dir

    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def local_path(bench: Benchmark, data_dir: str | Path | None = None) -> Path | None:
    """The local JSONL of a benchmark, or None when there is none (→ hub)."""
    d = resolve_data_dir(data_dir)
    if d is None or bench.kind != "math":
        return None
    for stem in dict.fromkeys([bench.name, bench.local_file or bench.name]):
        if (d / f"{stem}.jsonl").is_file():
            return d / f"{stem}.jsonl"
    return None


def _as_text(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, list):
        return "\n".join(_as_text(v) for v in x)
    return str(x)


def hub_answer(raw: Any, answer_fn: str | None) -> str:
    """A hub answer column → our plain answer string."""
    if answer_fn == "gsm8k":  # "...reasoning... #### 1,234"
        return str(raw).split("####")[-1].strip().replace(",", "")
    if answer_fn == "boxed":  # a worked solution: its last \\boxed{...} ("" when there is none)
        return (scoring.last_boxed(str(raw)) or "").strip()
    if answer_fn == "first":  # ["$\\frac{1}{2}$"]
        raw = raw[0] if isinstance(raw, list) and raw else raw
        return scoring._strip_math_delims(str(raw))
    return str(raw).strip()


def map_row(name: str, row: dict, index: int, fields: dict[str, str] | None = None, answer_fn: str | None = None) -> dict:
    """One source row → ``{id, problem, answer, solution}``; ``fields`` maps hub columns (None: our own shape)."""
    f = fields or {}
    problem = row.get(f.get("problem", "problem"))
    answer = row.get(f.get("answer", "answer"))
    if problem is None or answer is None:
        raise ValueError(f"{name}: row {index} lacks problem/answer (columns {sorted(row)})")
    rid = row.get(f.get("id", "id"))
    return {
        "id": str(rid) if rid is not None else f"{name}-{index}",
        "problem": str(problem),
        "answer": hub_answer(answer, answer_fn) if fields else str(answer),
        "solution": _as_text(row.get(f.get("solution", "solution"))),
    }


def normalize_doc(bench: Benchmark, row: dict, index: int, fields: dict[str, str] | None = None, answer_fn: str | None = None) -> dict:
    """One source row → ``{id, problem, answer, solution, benchmark}``."""
    return {**map_row(bench.name, row, index, fields, answer_fn), "benchmark": bench.name}


def load_docs(bench: Benchmark, data_dir: str | Path | None = None, limit: int | None = None,
              chain: ChainSettings | None = None) -> list[dict]:
    """The problems of a benchmark (local file, else hub, else generated for chain splits).

    Args:
        bench: the benchmark.
        data_dir: data folder override (else ``CPPO_DATA_DIR``, see ``resolve_data_dir``).
        limit: keep the first ``limit`` problems (quick runs).
        chain: chain split settings (defaults when None).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if bench.kind == "chain":
        from cppo.tasks.chain import make_split

        c = chain or ChainSettings()
        n = min(c.n_test, limit) if limit else c.n_test
        rows = make_split(bench.chain_split, n, seed=c.seed, K=c.K, modulus=c.modulus, ood_K=c.ood_K, **c.split_kwargs())
        return [{**normalize_doc(bench, r, i), "benchmark": bench.name} for i, r in enumerate(rows)]
    path = local_path(bench, data_dir)
    if path is not None:
        from cppo.data import read_jsonl

        rows = read_jsonl(path, limit=limit)
        return [normalize_doc(bench, r, i) for i, r in enumerate(rows)]
    rows = hub_rows(bench.local_file or bench.name, bench.hub, data_dir, limit)
    return [normalize_doc(bench, r, i, bench.hub.fields, bench.hub.answer_fn) for i, r in enumerate(rows)]


def _missing(stem: str, hub: HubSource | None, data_dir: str | Path | None, reason: str):
    from cppo.data import DataNotFound, missing_message

    return DataNotFound(missing_message(stem, resolve_data_dir(data_dir), hub.label if hub else None, reason))


def check_hub(stem: str, hub: HubSource | None, data_dir: str | Path | None = None) -> None:
    """Raise ``DataNotFound`` at once when the hub may not be used (offline, or no hub source).

    Called before anything hands the hub dataset to lm-eval or ``datasets``, whose own failure is
    a retry loop and a traceback.
    """
    from cppo.data import hub_offline

    if hub is None:
        raise _missing(stem, None, data_dir, "")
    if hub_offline():
        raise _missing(stem, hub, data_dir, "cannot be loaded offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)")


HUB_PROBE_TIMEOUT_S = 10.0
"""time limit of the one metadata request that checks a hub dataset is reachable before downloading"""


def probe_hub(hub: HubSource) -> None:
    """One quick request for the dataset's metadata, without retries: raises when the hub is unreachable.

    ``datasets.load_dataset`` retries an unreachable hub five times (about 30 s) before failing;
    this probe fails in about a second, so a machine without a network gets its answer at once.
    """
    from huggingface_hub import HfApi

    HfApi().dataset_info(hub.path, timeout=HUB_PROBE_TIMEOUT_S)


def load_hub(hub: HubSource, limit: int | None = None) -> list[dict]:
    """The raw rows (hub columns) of a hub dataset; whatever the probe or ``datasets`` raises propagates."""
    import datasets

    probe_hub(hub)

    ds = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    n = min(limit, len(ds)) if limit else len(ds)
    return [dict(ds[i]) for i in range(n)]


def hub_error(e: BaseException) -> str:
    """The first line of a download failure, short enough for a one-line message."""
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def hub_rows(stem: str, hub: HubSource | None, data_dir: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The raw rows of a benchmark's hub dataset; ``DataNotFound`` (one line) when they cannot be had."""
    check_hub(stem, hub, data_dir)
    try:
        return load_hub(hub, limit)
    except Exception as e:  # noqa: BLE001 - every download failure is the same fact for the user
        raise _missing(stem, hub, data_dir, f"could not be loaded ({hub_error(e)})") from e


# --------------------------------------------------------------------------- prompts and scoring
def make_prompt(bench: Benchmark, doc: dict, template: str = "base", tokenizer: Any | None = None,
                base_template: str | None = None) -> str:
    """The prompt text the model sees for one problem."""
    if bench.kind == "chain":
        return prompts.chain_prompt(doc["problem"])
    return prompts.math_prompt(doc["problem"], template, tokenizer, base_template)


def oracle_response(bench: Benchmark, doc: dict) -> str:
    """A response built from the data alone (worked solution, else the gold answer in a box).

    Used by the oracle backend: an evaluation that scores it below 100% has a broken pipeline
    (prompting, data mapping, extraction or scoring).
    """
    if bench.kind == "chain":
        return doc["solution"]
    sol = doc.get("solution") or ""
    if scoring.last_boxed(sol) is not None:
        return sol
    return (sol + "\n" if sol else "") + f"The final answer is $\\boxed{{{doc['answer']}}}$."


@dataclass
class ScoredSample:
    """One response with its extracted answer and verdict."""

    response: str
    extracted: str | None
    correct: bool


def answer_key(bench: Benchmark, extracted: str | None) -> str | None:
    """The key majority voting groups answers by (normalised text; None = no answer)."""
    if extracted is None:
        return None
    return extracted if bench.kind == "chain" else scoring._to_latex(extracted).replace(" ", "")


def scorer_for(bench: Benchmark, chain: ChainSettings | None = None) -> Callable[[list[str], list[str]], list[ScoredSample]]:
    """A batch scorer ``(responses, golds) -> [ScoredSample]`` for the benchmark."""
    if bench.kind == "chain":
        task = (chain or ChainSettings()).task_for(bench.chain_split)

        def score_chain(responses: list[str], golds: list[str]) -> list[ScoredSample]:
            out = []
            for r, g in zip(responses, golds, strict=True):
                last = r.strip()[-1:]
                # the answer a response commits to: its last value, if it is well formed at all
                # (exactly K value characters: the reward with its own last value as gold is 1)
                # (with variable lengths the gold is the whole solution: well formed = its length)
                own = (g.strip()[:-1] + last) if task.K_min is not None else last
                extracted = last if last and task.reward(r, own) == 1.0 else None
                out.append(ScoredSample(r, extracted, task.reward(r, g) == 1.0))
            return out

        return score_chain

    def score_math(responses: list[str], golds: list[str]) -> list[ScoredSample]:
        items = [scoring.ScoreItem(r, g, bench.rel_tol) for r, g in zip(responses, golds, strict=True)]
        verdicts = scoring.shared_pool().score(items)
        return [ScoredSample(r, scoring.extract_answer(r), ok) for r, ok in zip(responses, verdicts)]

    return score_math
