"""``cppo eval``: evaluate a checkpoint or hub model on benchmarks → JSON (+ MLflow).

Defaults reproduce the paper's protocol (``evals.defaults``): n = 16 samples per problem,
temperature 0.7, top-p 0.95, the answer in the last ``\\boxed{}`` checked with math-verify, reported
as avg@16 (also pass@k and maj@16). Values come from, in order: the command line, the profile's
``eval`` section (``--config``), these defaults. The chain settings (K, modulus, ood_K, n_test) come
from the profile too. Benchmark files are read from ``--data-dir``, else ``CPPO_DATA_DIR``, else the
profile's ``data_dir``; a math benchmark with no file there is loaded from the hub, and when that
is impossible the command stops with one line (exit 2) naming the file and the hub dataset.

Output: ``--out FILE.json`` with ``benchmarks.<name>.metrics`` and a per-sample log (prompt,
response, extracted answer, gold, correct) inside, or in ``--samples-log FILE.jsonl`` when given.
With ``--mlflow-run-id ID --step N`` the metrics are logged as ``eval/<benchmark>/<metric>`` at
step N (the checkpoint's training step).

``--run RUN_DIR`` instead of MODEL evaluates every checkpoint a run kept for evaluation, in one
process: ``<run>/steps/step_<n>/`` (the profile's ``eval.every``), the base model as step 0 when the run
kept none (``--base``, e.g. the hub model of a verl run), and ``<run>/final`` at the run's final step.
Each step's result goes to ``<run>/eval/steps/step_<n>.json`` (an existing one with the same model and
settings is reused, so an interrupted job resumes) and, with ``--mlflow-run-id``, into MLflow at its
step; ``--out`` gets the final checkpoint's result plus a ``steps`` summary (step -> benchmark -> metrics).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evals import defaults

# EvalSettings fields the command line and the profile's eval section may set, with their types
SETTABLE = {"n": int, "temperature": float, "top_p": float, "max_tokens": int, "template": str, "limit": int,
            "seed": int, "batch_size": int, "device": str, "dtype": str}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="checkpoint folder (Hugging Face format) or hub name; any label for --backend oracle")
    p.add_argument("--run", type=Path, help="a run folder: evaluate each kept step (steps/step_<n>) and final/, instead of MODEL")
    p.add_argument("--base", help="with --run: the model of step 0 when the run kept no steps/step_0 (e.g. the hub model)")
    p.add_argument("--benchmarks", help="comma-separated registry names, e.g. aime24,math500 (default: the profile's eval.benchmarks)")
    p.add_argument("--n", type=int, help=f"samples per problem (default {defaults.N}, or the profile's eval.n)")
    p.add_argument("--temperature", type=float, help=f"sampling temperature (default {defaults.TEMPERATURE})")
    p.add_argument("--top-p", type=float, dest="top_p", help=f"nucleus mass (default {defaults.TOP_P})")
    p.add_argument("--max-tokens", type=int, dest="max_tokens", help="generation budget per response (default: the benchmark's)")
    p.add_argument("--out", type=Path, help="result JSON path")
    p.add_argument("--backend", choices=("hf", "vllm", "oracle"), help="generation backend (default hf; vllm needs vLLM: the [vllm] extra on a GPU, or .venv-vllm from scripts/bootstrap-vllm)")
    p.add_argument("--config", type=Path, help="profile YAML: eval defaults, chain settings, data_dir")
    p.add_argument("--mlflow-run-id", dest="mlflow_run_id", help="log eval/<benchmark>/<metric> into this MLflow run")
    p.add_argument("--step", type=int, help="training step of the checkpoint (MLflow step; required with --mlflow-run-id)")
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark (quick runs)")
    p.add_argument("--samples-log", type=Path, dest="samples_log", help="write the per-sample log here (JSONL) instead of into --out")
    p.add_argument("--template", choices=("auto", "base", "chat"), help="math prompt template (default auto: chat if the tokenizer has one)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="hf generation batch size (default 16)")
    p.add_argument("--device", help="hf device (default cuda if available, else cpu)")
    p.add_argument("--dtype", help="model dtype (default auto)")
    p.add_argument("--data-dir", dest="data_dir", help="benchmark JSONL folder (default: CPPO_DATA_DIR, else the profile's data_dir, else the hub)")
    p.add_argument("--no-progress", action="store_true", dest="no_progress", help="with --run: no progress bar over the checkpoints")
    p.add_argument("--list", action="store_true", help="list the registered benchmarks and exit")


def _profile(path: Path | None) -> dict:
    if path is None:
        return {}
    from cppo.config import load_config

    return load_config(path).raw


def _default_data_dir(raw: dict) -> str | None:
    from cppo.data import data_dir

    d = data_dir(raw)  # CPPO_DATA_DIR, else the profile's data_dir
    return str(d) if d is not None else None


def settings_from_args(args: argparse.Namespace, raw: dict):
    """EvalSettings from the command line, then the profile's eval section, then EvalSettings' own
    defaults (``evals.defaults``: the one place they are written)."""
    from evals.harness import EvalSettings
    from evals.registry import ChainSettings

    ev = raw.get("eval") or {}
    given = {}
    for name, cast in SETTABLE.items():
        v = getattr(args, name, None)
        v = v if v is not None else ev.get(name)
        if v is not None:
            given[name] = cast(v)
    return EvalSettings(
        **given,
        data_dir=args.data_dir or _default_data_dir(raw),
        chain=ChainSettings.from_config(raw),
        base_template=(raw.get("task") or {}).get("template") if (raw.get("task") or {}).get("name") == "math" else None,
    )


def main(args: argparse.Namespace) -> int:
    from evals.registry import BENCHMARKS

    if args.list:
        for b in BENCHMARKS.values():
            print(f"{b.name:15s} {b.kind:6s} {b.description}")
        return 0
    if bool(args.model) == bool(args.run):
        print("cppo eval: give MODEL (a checkpoint folder or hub name) or --run RUN_DIR, not both", file=sys.stderr)
        return 2
    if args.out is None:
        print("cppo eval: --out FILE.json is required", file=sys.stderr)
        return 2
    if args.run and args.step is not None:
        print("cppo eval: --step is not used with --run (each checkpoint's step is in its folder name)", file=sys.stderr)
        return 2
    if args.base and not args.run:
        print("cppo eval: --base goes with --run", file=sys.stderr)
        return 2
    if args.model and args.mlflow_run_id and args.step is None:
        print("cppo eval: --mlflow-run-id needs --step (the checkpoint's training step)", file=sys.stderr)
        return 2
    raw = _profile(args.config)
    if args.mlflow_run_id:
        from cppo.tracking import use_results_dir

        use_results_dir(raw.get("results_dir"))  # the profile's store, as `cppo train` found it
    benchmarks = args.benchmarks or ",".join((raw.get("eval") or {}).get("benchmarks") or [])
    if not benchmarks:
        print("cppo eval: --benchmarks is required (or a --config with eval.benchmarks)", file=sys.stderr)
        return 2
    try:
        from evals.registry import parse_benchmarks

        names = [b.name for b in parse_benchmarks(benchmarks)]
        settings = settings_from_args(args, raw)
    except ValueError as e:
        print(f"cppo eval: {e}", file=sys.stderr)
        return 2
    backend = args.backend or (raw.get("eval") or {}).get("backend") or "hf"
    from evals.backends import BackendUnavailable, check_backend

    try:
        check_backend(backend)  # before any model or data is touched
    except (ValueError, BackendUnavailable) as e:
        print(f"cppo eval: {e}", file=sys.stderr)
        return 2
    try:
        points = run_checkpoints(args.run, args.base) if args.run else [(args.step, args.model)]
    except (FileNotFoundError, ValueError) as e:
        print(f"cppo eval: {e}", file=sys.stderr)
        return 2
    if backend != "oracle":  # the oracle needs no weights: MODEL is only a label there
        from cppo.models import check_hub_model, model_source

        try:
            for _, model in points:
                if model_source(model) == "hub":
                    check_hub_model(model)  # one line within seconds when the hub is out of reach
        except FileNotFoundError as e:
            print(f"cppo eval: {e}", file=sys.stderr)
            return 2

    from cppo.data import DataNotFound

    try:
        if args.run:
            result = evaluate_run(args.run, points, names, settings, backend, mlflow_run_id=args.mlflow_run_id,
                                  progress=not getattr(args, "no_progress", False))
        else:
            result = _evaluate(args.model, names, settings, backend)
            if args.mlflow_run_id:
                result["mlflow"] = {"run_id": args.mlflow_run_id, "step": args.step}
    except DataNotFound as e:  # no local file and no hub: a user's set-up, not a bug
        print(f"cppo eval: {e}", file=sys.stderr)
        return 2
    _write(result, args.out, args.samples_log)
    for name, res in result["benchmarks"].items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in res["metrics"].items())
        print(f"{name}: {shown}  ({res['n_problems']} problems x {res['n_samples']} samples, {res['source']})")
    if args.mlflow_run_id and not args.run:
        from cppo.tracking import log_eval

        for name, res in result["benchmarks"].items():
            log_eval(args.mlflow_run_id, name, res["metrics"], args.step)
    return 0


def run_checkpoints(run_dir: Path, base: str | None = None) -> list[tuple[int, str]]:
    """(step, model) of every checkpoint of a run folder to evaluate, by step: the kept weights
    ``steps/step_<n>/``, ``base`` as step 0 when no ``steps/step_0`` was kept, and ``final/`` at the
    final step (replacing a kept folder of the same step: the same weights)."""
    from cppo.train.checkpoint import final_step, weight_steps

    run_dir = Path(run_dir)
    if not (run_dir / "final").exists():
        raise FileNotFoundError(f"{run_dir}/final not found: is the run finished (a `done` marker)?")
    points = {n: str(p) for n, p in weight_steps(run_dir / "steps")}
    if base and 0 not in points:
        points[0] = base
    last = final_step(run_dir)
    points = {n: m for n, m in points.items() if n <= last}  # a kept folder past `final` is stale
    points[last] = str(run_dir / "final")
    return sorted(points.items())


def _evaluate(model: str, names: list[str], settings, backend: str) -> dict:
    """run_eval plus the provenance of the code that scored it."""
    from evals.harness import run_eval

    result = run_eval(model, names, settings, backend=backend)
    try:
        from cppo.tracking import provenance

        result["provenance"] = provenance()
    except Exception:  # provenance is a courtesy; never fail an evaluation over it
        pass
    return result


# Backends whose engine holds GPU memory that a second engine in the same process may not get back
# (vLLM reserves a fixed fraction of the GPU per engine): with --run, each checkpoint is scored in a
# child process of its own, which returns all of it when it exits.
ISOLATED_BACKENDS = {"vllm"}


def _evaluate_isolated(model: str, names: list[str], settings, backend: str) -> dict:
    """`_evaluate` in a fresh (spawned) child process; its result comes back pickled."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_evaluate, (model, names, settings, backend))


def evaluate_run(run_dir: Path, points: list[tuple[int, str]], names: list[str], settings, backend: str,
                 mlflow_run_id: str | None = None, progress: bool = True) -> dict:
    """Evaluate each (step, model) of a run; per-step files, MLflow per step; the final's result + `steps`."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    step_dir = run_dir / "eval" / "steps"
    want = _record(settings)
    summary: dict[str, dict] = {}
    result = None
    bar = tqdm(points, desc=f"cppo eval {run_dir}", unit="ckpt", dynamic_ncols=True, disable=not progress)
    for step, model in bar:
        bar.set_postfix(step=step)
        path = step_dir / f"step_{step}.json"
        res = _reusable(path, model, names, want, backend)
        if res is None:
            res = _evaluate_isolated(model, names, settings, backend) if backend in ISOLATED_BACKENDS \
                else _evaluate(model, names, settings, backend)
            res["step"] = step
            _write(res, path, None)
        if mlflow_run_id:
            from cppo.tracking import log_eval

            for name, r in res["benchmarks"].items():
                log_eval(mlflow_run_id, name, r["metrics"], step)
        summary[str(step)] = {name: r["metrics"] for name, r in res["benchmarks"].items()}
        result = res
    result = dict(result)
    result["steps"] = summary
    if mlflow_run_id:
        result["mlflow"] = {"run_id": mlflow_run_id, "step": points[-1][0]}
    return result


def _record(settings) -> dict:
    """The settings as a result file holds them (through JSON), for the reuse checks."""
    return json.loads(json.dumps(settings.record()))


def profile_evaluation(raw: dict) -> tuple[list[str], object, str]:
    """(benchmark names, settings, backend) of `cppo eval --run RUN --config PROFILE` with no other flag:
    the profile's eval section over the defaults. The pipeline passes exactly the keys the profile sets,
    so this is also what its evaluate job uses. ValueError / BackendUnavailable on a bad section."""
    from evals.backends import check_backend
    from evals.registry import parse_benchmarks

    ev = raw.get("eval") or {}
    if not ev.get("benchmarks"):
        raise ValueError("the profile sets no eval.benchmarks: nothing to evaluate")
    names = [b.name for b in parse_benchmarks(",".join(map(str, ev["benchmarks"])))]
    settings = settings_from_args(argparse.Namespace(data_dir=None), raw)
    backend = ev.get("backend") or "hf"
    check_backend(backend)
    return names, settings, backend


def evaluate_run_folder(run_dir: Path, names: list[str], settings, backend: str, mlflow_run_id: str | None = None,
                        progress: bool = True) -> Path | None:
    """What the pipeline's evaluate job does for a finished builtin run, in this process: every kept
    checkpoint (:func:`evaluate_run`), the final's result with its `steps` summary in
    ``<run>/eval/_all.json``, split into ``<run>/eval/<benchmark>.json``. A run whose files are already
    there for these settings is left alone (nothing is scored or logged twice); returns None then, else
    the combined file."""
    run_dir = Path(run_dir)
    combined = run_dir / "eval" / COMBINED_FILE
    points = run_checkpoints(run_dir)
    done = _reusable(combined, points[-1][1], names, _record(settings), backend)
    if done is not None and all((run_dir / "eval" / f"{n}.json").is_file() for n in names) \
            and sorted(done.get("steps") or {}, key=int) == [str(s) for s, _ in points]:
        return None
    result = evaluate_run(run_dir, points, names, settings, backend, mlflow_run_id=mlflow_run_id, progress=progress)
    _write(result, combined, None)
    split_by_benchmark(json.loads(combined.read_text(encoding="utf-8")), run_dir / "eval")  # as split_eval.py reads it
    return combined


# the pipeline's name of a run's combined result (the final checkpoint's, every benchmark, plus `steps`)
COMBINED_FILE = "_all.json"


def split_by_benchmark(result: dict, out_dir: Path) -> list[Path]:
    """One ``<out_dir>/<benchmark>.json`` per benchmark of a result: the shared top-level fields (model,
    backend, settings, provenance, mlflow, ...) and only that benchmark under `benchmarks`. Why: one
    evaluation per run is cheaper than one per benchmark, while the run folder keeps one file per
    benchmark (docs/contracts.md §Runs)."""
    benches = result.get("benchmarks")
    if not isinstance(benches, dict) or not benches:
        raise ValueError("the result has no `benchmarks` mapping")
    shared = {k: v for k, v in result.items() if k != "benchmarks"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, res in benches.items():
        path = out_dir / f"{name}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**shared, "benchmarks": {name: res}}, indent=1, ensure_ascii=False))
        tmp.replace(path)  # atomic, and no torch import (split_eval.py runs this in a job of its own)
        written.append(path)
    return written


def _reusable(path: Path, model: str, names: list[str], settings: dict, backend: str) -> dict | None:
    """An earlier result for this step with the same model, benchmarks, settings and backend, else None."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = (old.get("model") == str(model) and old.get("backend") == backend and old.get("settings") == settings
            and sorted(old.get("benchmarks") or {}) == sorted(names))
    return old if same else None


def _write(result: dict, out: Path, samples_log: Path | None) -> None:
    """The result JSON, atomically (the pipeline treats the file as a job output: never half of it);
    with ``samples_log`` the per-sample records go there instead (JSONL)."""
    from cppo.train.checkpoint import atomic_write_text

    if samples_log:
        samples_log.parent.mkdir(parents=True, exist_ok=True)
        with open(samples_log, "w", encoding="utf-8") as f:
            for name, res in result["benchmarks"].items():
                for s in res.pop("samples"):
                    f.write(json.dumps({"benchmark": name, **s}, ensure_ascii=False) + "\n")
                res["samples_log"] = str(samples_log)
    atomic_write_text(out, json.dumps(result, indent=1, ensure_ascii=False))
