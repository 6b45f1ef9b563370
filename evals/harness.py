"""Run benchmarks through lm-eval: task files + run-time settings → metrics and a per-sample log.

How one evaluation runs:
  1. ``TaskManager(include_path=evals/tasks)`` indexes our task files (``cppo_<benchmark>.yaml``;
     lm-eval's own ~10k task files are not scanned).
  2. Each task file is loaded and the run's settings are written into it: ``repeats`` = n samples,
     the ``take_first_k`` filter keeps all n, the metric names (``avg@n``, ``pass@k``, ``maj@n``),
     the sampling settings, and the data source: the local JSONL of the data directory when it
     exists (``dataset_path: json`` + ``data_files``), else the rows of the benchmark's Hugging Face
     dataset, loaded by ``evals.registry.hub_rows`` and handed over as ``custom_dataset`` (so a
     missing dataset is one ``DataNotFound`` line, at once when offline), or the generated chain
     split (``custom_dataset``, with the profile's chain settings).
  3. ``lm_eval.simple_evaluate`` generates n responses per problem with the chosen backend and calls
     ``process_results`` once per problem, which scores every response (``evals.scoring`` in
     worker processes with a hard time limit, or the chain task's reward) and returns per-problem
     metric values; lm-eval averages them over problems.
  4. The per-sample verdicts recorded by ``process_results`` and lm-eval's logged samples become the
     per-sample log (prompt, response, extracted answer, gold, correct).

Design decision: prompts are rendered by us (``evals.prompts``, in ``process_docs``) rather than by
lm-eval's ``apply_chat_template`` so that the logged prompt is exactly the text the model saw, and
every backend (hf, vllm, the oracle) gets the same text.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals import defaults
from evals import metrics as M
from evals import scoring
from evals.registry import (
    Benchmark,
    ChainSettings,
    ScoredSample,
    answer_key,
    check_hub,
    get_benchmark,
    hub_rows,
    load_docs,
    local_path,
    make_prompt,
    normalize_doc,
    scorer_for,
)

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
FILTER_NAME = "all_samples"


@dataclass
class EvalSettings:
    """How to sample and score (defaults: the paper's protocol from ``evals.defaults``, avg@16 at T = 0.7,
    top-p 0.95). These defaults are the only ones: ``cppo eval`` passes only the values it was given."""

    n: int = defaults.N
    """responses sampled per problem"""
    temperature: float = defaults.TEMPERATURE
    """sampling temperature (0 = greedy; then the n responses coincide)"""
    top_p: float = defaults.TOP_P
    """nucleus sampling mass"""
    max_tokens: int | None = None
    """generation budget per response (None: the benchmark's default)"""
    template: str = "auto"
    """prompt template for math benchmarks: auto | base | chat"""
    limit: int | None = None
    """evaluate only the first ``limit`` problems of each benchmark (quick runs)"""
    seed: int = 0
    """seed of lm-eval's random, numpy and torch generators (sampling)"""
    batch_size: int = 16
    """generation batch size (hf backend)"""
    device: str | None = None
    """torch device for hf (default: cuda when available, else cpu)"""
    dtype: str = "auto"
    """model dtype for hf/vllm (auto: the checkpoint's)"""
    data_dir: str | None = None
    """data folder, already resolved by the caller (``cppo eval``: ``--data-dir``, else ``CPPO_DATA_DIR``,
    else the profile's ``data_dir``); None: ``CPPO_DATA_DIR``, else the hub"""
    chain: ChainSettings = field(default_factory=ChainSettings)
    """chain split settings (from the profile's task section)"""
    base_template: str | None = None
    """a profile's raw math template (``task.template``, with ``{problem}``) replacing the default base one"""

    def record(self) -> dict[str, Any]:
        """The settings as a result file records them (``"settings"``): every field, the chain ones nested."""
        return {k: v for k, v in asdict(self).items() if k != "chain"} | {"chain": asdict(self.chain)}

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


# --------------------------------------------------------------------------- task-file hooks
def process_docs(name: str, dataset, template: str = "base", tokenizer: Any = None, source: str | None = None,
                 base_template: str | None = None):
    """Source rows → our documents with the rendered ``prompt`` (lm-eval's ``process_docs``).

    ``source``: ``hub`` (map the hub columns), ``local`` / ``chain`` (rows already in our shape);
    default: ``hub`` for math benchmarks, ``chain`` for chain ones (what a bare task file loads).
    """
    bench = get_benchmark(name)
    source = source or ("chain" if bench.kind == "chain" else "hub")
    docs = []
    for i, row in enumerate(dataset):
        row = dict(row)
        if source == "hub":
            doc = normalize_doc(bench, row, i, bench.hub.fields, bench.hub.answer_fn)
        else:
            doc = normalize_doc(bench, row, i)
        if bench.kind == "chain":  # the scorer needs the split's chain shape
            doc["K"], doc["modulus"] = int(row.get("K", len(doc["solution"]))), int(row.get("modulus", 10))
            doc["K_min"] = int(row.get("K_min") or 0)  # 0: one fixed length
        doc["prompt"] = make_prompt(bench, doc, template, tokenizer, base_template)
        docs.append(doc)
    import datasets  # lm-eval reads .features of the evaluation docs

    return datasets.Dataset.from_list(docs)


def chain_dataset(benchmark: str, K: int = 24, modulus: int = 10, ood_K: int | None = None, n_test: int = 256,
                  seed: int = 0, max_operand: int | None = None, op_format: str | None = None,
                  K_min: int | None = None, **_: Any) -> dict:
    """lm-eval ``custom_dataset``: the generated chain split, as ``{"test": rows}``."""
    bench = get_benchmark(benchmark)
    chain = ChainSettings(K=K, modulus=modulus, ood_K=ood_K, n_test=n_test, seed=seed, max_operand=max_operand,
                          op_format=op_format, K_min=K_min)
    rows = load_docs(bench, chain=chain)
    task = chain.task_for(bench.chain_split)
    for r in rows:
        r["K"], r["modulus"], r["K_min"] = task.K, task.modulus, task.K_min or 0
    return _rows_dataset(rows)


def _rows_dataset(rows: list[dict], **_: Any) -> dict:
    """lm-eval ``custom_dataset`` over rows already loaded (lm-eval passes the task metadata; ignored)."""
    import datasets

    return {"test": datasets.Dataset.from_list(rows)}


# (benchmark, doc id) -> scored samples of the latest evaluation; read back for the per-sample log.
_DETAILS: dict[tuple[str, str], list[ScoredSample]] = {}


def score_doc(doc: dict, responses: list[str]) -> list[ScoredSample]:
    """Score the n responses of one problem with the benchmark's scorer."""
    bench = get_benchmark(doc["benchmark"])
    chain = None
    if bench.kind == "chain":  # the doc carries its split's own length (ood_K for chain_ood)
        k = int(doc["K"])
        chain = ChainSettings(K=k, ood_K=k, modulus=int(doc["modulus"]), K_min=int(doc.get("K_min") or 0) or None)
    return scorer_for(bench, chain)(list(responses), [doc["answer"]] * len(responses))


def process_results(doc: dict, results: list) -> dict[str, float]:
    """lm-eval ``process_results``: per-problem avg@n, pass@k, maj@n over its n responses."""
    responses = results[0] if results and isinstance(results[0], (list, tuple)) else list(results)
    scored = score_doc(doc, [str(r) for r in responses])
    _DETAILS[(doc["benchmark"], str(doc["id"]))] = scored
    bench = get_benchmark(doc["benchmark"])
    keys = [answer_key(bench, s.extracted) for s in scored]
    return M.per_problem(keys, [s.correct for s in scored], vote_classes(bench, keys, scored))


def vote_classes(bench: Benchmark, keys: list[str | None], scored: list[ScoredSample]) -> M.Classes | None:
    """maj@k's answer equivalence for one problem: math benchmarks merge keys whose answers math-verify
    finds equal (``evals.scoring.answer_classes``, on the first extracted text of each key); the chain
    task's answers are single characters, so their text is the answer."""
    if bench.kind == "chain":
        return None
    text: dict[str, str] = {}
    for k, s in zip(keys, scored):
        if k is not None and s.extracted is not None:
            text.setdefault(k, s.extracted)

    def classes(distinct: list[str]) -> list[int]:
        return scoring.answer_classes([text[k] for k in distinct])

    return classes


# --------------------------------------------------------------------------- task configs
def _load_yaml(path: Path) -> dict:
    try:
        from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval >= 0.4.10
    except ImportError:  # older 0.4.x
        from lm_eval.utils import load_yaml_config as load_yaml
    return load_yaml(path)


def task_manager():
    """lm-eval's TaskManager over our task files only."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def task_config(bench: Benchmark, settings: EvalSettings, tm, tokenizer: Any = None, template: str = "base",
                max_tokens: int | None = None) -> tuple[dict, str]:
    """The task file of ``bench`` with the run's settings written in; also the data source used.

    ``max_tokens``: the generation budget to write (default: ``settings.max_tokens``, else the benchmark's).
    """
    entry = tm.task_index.get(bench.lm_eval_task)
    if entry is None or entry.yaml_path is None:
        raise ValueError(f"lm-eval task {bench.lm_eval_task!r} not found in {TASKS_DIR}")
    cfg = _load_yaml(Path(entry.yaml_path))
    n = settings.n
    max_tokens = max_tokens or settings.max_tokens or bench.max_tokens
    cfg["repeats"] = n
    cfg["filter_list"] = [{"name": FILTER_NAME, "filter": [{"function": "take_first_k", "k": n}]}]
    cfg["metric_list"] = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in M.metric_names(n)]
    cfg["generation_kwargs"] = {
        "until": [],
        "do_sample": settings.temperature > 0,
        "temperature": float(settings.temperature),
        "top_p": float(settings.top_p),
        "max_gen_toks": int(max_tokens),
    }
    metadata = dict(cfg.get("metadata") or {})
    if bench.kind == "chain":
        c = settings.chain
        n_test = min(c.n_test, settings.limit) if settings.limit else c.n_test  # a split's prefix is stable
        metadata.update(K=c.K, modulus=c.modulus, ood_K=c.ood_K, n_test=n_test, seed=c.seed, **c.split_kwargs())
        cfg["process_docs"] = functools.partial(process_docs, bench.name, source="chain")
        extra = "".join(f", {k}={v}" for k, v in c.task_kwargs().items())
        source = f"generated:{bench.chain_split}(K={c.K}, modulus={c.modulus}, ood_K={c.ood_K}, n_test={n_test}, seed={c.seed}{extra})"
    else:
        path = local_path(bench, settings.data_dir)
        if path is not None:
            cfg["dataset_path"] = "json"
            cfg["dataset_name"] = None
            cfg["dataset_kwargs"] = {"data_files": {"test": str(path)}}
            cfg["test_split"] = "test"
            cfg["process_docs"] = functools.partial(process_docs, bench.name, template=template, tokenizer=tokenizer, source="local",
                                                    base_template=settings.base_template)
            source = f"local:{path}"
        else:
            # we load the hub rows ourselves (not lm-eval): a failure is then one DataNotFound line,
            # immediately when offline, instead of a retry loop and a traceback from inside lm-eval
            rows = hub_rows(bench.local_file or bench.name, bench.hub, settings.data_dir)
            cfg["custom_dataset"] = functools.partial(_rows_dataset, rows)
            cfg["test_split"] = "test"
            cfg["process_docs"] = functools.partial(process_docs, bench.name, template=template, tokenizer=tokenizer, source="hub",
                                                    base_template=settings.base_template)
            source = f"hub:{bench.hub.label}"
    cfg["metadata"] = metadata
    return cfg, source


# --------------------------------------------------------------------------- running
def fit_budget(requested: int, context: int, prompt_lengths: list[int]) -> int:
    """The largest generation budget <= ``requested`` that fits a ``context``-token model after the prompts.

    Prompt and response share the context, so the budget is at most context minus the longest prompt.
    When a prompt alone leaves no room, the budget is half the context and lm-eval left-truncates the
    prompts that are longer than the other half (they lose their start).
    """
    room = context - max(prompt_lengths, default=0)
    if requested <= room:
        return requested
    return room if room >= 1 else min(requested, context // 2)


def _fit_to_context(bench: Benchmark, requested: int, context: int, settings: EvalSettings, tokenizer: Any,
                    template: str) -> int:
    """``fit_budget`` over the prompts this run evaluates, with a one-line note on stderr when it changes."""
    import sys

    docs = load_docs(bench, settings.data_dir, settings.limit, settings.chain)
    lengths = [len(tokenizer(make_prompt(bench, d, template, tokenizer, settings.base_template),
                             add_special_tokens=False).input_ids) for d in docs]
    budget = fit_budget(requested, context, lengths)
    if budget != requested:
        cut = sum(n > context - budget for n in lengths)
        tail = f"; {cut} of {len(lengths)} prompts lose their start to fit" if cut else ""
        print(f"cppo eval: note: {bench.name}: {requested} new tokens do not fit the model's {context}-token "
              f"context; generating at most {budget}{tail} (--max-tokens sets the budget)", file=sys.stderr)
    return budget


def _quiet_lm_eval() -> None:
    for name in ("lm_eval", "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _env_report_once() -> None:
    """lm-eval records torch's environment report on every `simple_evaluate`, which runs pip and other
    probes in subprocesses (about 0.5 s a call); `cppo eval --run` calls it once per checkpoint. The
    report cannot change within a process, so it is computed once (our results carry their own
    provenance anyway)."""
    import torch.utils.collect_env as collect_env

    if not hasattr(collect_env.get_pretty_env_info, "cache_info"):
        collect_env.get_pretty_env_info = functools.cache(collect_env.get_pretty_env_info)


def run_eval(model: str, benchmarks: list[str], settings: EvalSettings | None = None, backend: str = "hf",
             lm: Any = None) -> dict:
    """Evaluate ``model`` on ``benchmarks``.

    Args:
        model: checkpoint folder or hub name (for the oracle backend: any label).
        benchmarks: registry names.
        settings: sampling and data settings.
        backend: ``hf`` | ``vllm`` | ``oracle`` (ignored when ``lm`` is given).
        lm: an lm-eval ``LM`` object to use as is (tests, custom wrappers).

    Returns:
        ``{"model", "backend", "settings", "benchmarks": {name: {"metrics", "n_problems",
        "n_samples", "source", "template", "max_tokens", "samples": [...]}}}``
    """
    from evals.backends import build_lm, load_tokenizer
    from evals.prompts import resolve_template
    from evals.registry import parse_benchmarks

    settings = settings or EvalSettings()
    benches = parse_benchmarks(benchmarks)
    for b in benches:  # a benchmark without data stops the run before any model is loaded
        if b.kind == "math" and local_path(b, settings.data_dir) is None:
            check_hub(b.local_file or b.name, b.hub, settings.data_dir)
    _quiet_lm_eval()
    _env_report_once()
    import lm_eval

    injected = lm is not None
    tokenizer = None if (injected or backend == "oracle") else load_tokenizer(model)
    template = resolve_template(settings.template, tokenizer)
    budgets = {b.name: settings.max_tokens or b.max_tokens for b in benches}
    if lm is None:
        lm = build_lm(backend, model, settings)
        context = getattr(lm, "max_length", None)
        if isinstance(context, int) and backend == "hf":
            for b in benches:
                if budgets[b.name] >= context:  # lm-eval would stop on an assertion; fit it instead
                    budgets[b.name] = _fit_to_context(b, budgets[b.name], context, settings, tokenizer, template)
    tm = task_manager()
    configs, sources = [], {}
    for b in benches:
        cfg, sources[b.name] = task_config(b, settings, tm, tokenizer, template, max_tokens=budgets[b.name])
        configs.append(cfg)
    _DETAILS.clear()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=configs, task_manager=tm, limit=settings.limit, log_samples=True, bootstrap_iters=0,
        random_seed=settings.seed, numpy_random_seed=settings.seed, torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )
    result: dict[str, Any] = {
        "model": str(model),
        "backend": type(lm).__name__ if injected else backend,
        "settings": settings.record(),
        "template": template,
        "benchmarks": {},
    }
    for b in benches:
        task = b.lm_eval_task
        raw = out["results"][task]
        names = M.metric_names(settings.n)
        metrics = {m: float(raw[f"{m},{FILTER_NAME}"]) for m in names}
        samples = []
        for s in sorted(out["samples"][task], key=lambda s: s["doc_id"]):
            doc = s["doc"]
            responses = s["filtered_resps"][0]
            scored = _DETAILS.get((b.name, str(doc["id"]))) or score_doc(doc, responses)
            for j, sc in enumerate(scored):
                samples.append({
                    "problem_id": doc["id"], "sample": j, "prompt": doc["prompt"], "response": sc.response,
                    "extracted": sc.extracted, "gold": doc["answer"], "correct": bool(sc.correct),
                })
        n_problems = len(out["samples"][task])
        result["benchmarks"][b.name] = {
            "metrics": metrics,
            "n_problems": n_problems,
            "n_samples": settings.n,
            "source": sources[b.name],
            "template": "raw" if b.kind == "chain" else template,
            "max_tokens": budgets[b.name],
            "samples": samples,
        }
    return result
