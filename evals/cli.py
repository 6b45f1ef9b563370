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
    p.add_argument("--benchmarks", help="comma-separated registry names, e.g. aime24,math500 (default: the profile's eval.benchmarks)")
    p.add_argument("--n", type=int, help=f"samples per problem (default {defaults.N}, or the profile's eval.n)")
    p.add_argument("--temperature", type=float, help=f"sampling temperature (default {defaults.TEMPERATURE})")
    p.add_argument("--top-p", type=float, dest="top_p", help=f"nucleus mass (default {defaults.TOP_P})")
    p.add_argument("--max-tokens", type=int, dest="max_tokens", help="generation budget per response (default: the benchmark's)")
    p.add_argument("--out", type=Path, help="result JSON path")
    p.add_argument("--backend", choices=("hf", "vllm", "oracle"), help="generation backend (default hf; vllm needs the GPU extra)")
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
    if not args.model:
        print("cppo eval: MODEL is required (a checkpoint folder or hub name)", file=sys.stderr)
        return 2
    if args.out is None:
        print("cppo eval: --out FILE.json is required", file=sys.stderr)
        return 2
    if args.mlflow_run_id and args.step is None:
        print("cppo eval: --mlflow-run-id needs --step (the checkpoint's training step)", file=sys.stderr)
        return 2
    raw = _profile(args.config)
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
    if backend != "oracle":  # the oracle needs no weights: MODEL is only a label there
        from cppo.models import model_source

        try:
            model_source(args.model)
        except FileNotFoundError as e:
            print(f"cppo eval: {e}", file=sys.stderr)
            return 2

    from cppo.data import DataNotFound
    from evals.harness import run_eval

    try:
        result = run_eval(args.model, names, settings, backend=backend)
    except DataNotFound as e:  # no local file and no hub: a user's set-up, not a bug
        print(f"cppo eval: {e}", file=sys.stderr)
        return 2
    if args.mlflow_run_id:
        result["mlflow"] = {"run_id": args.mlflow_run_id, "step": args.step}
    try:
        from cppo.tracking import provenance

        result["provenance"] = provenance()
    except Exception:  # provenance is a courtesy; never fail an evaluation over it
        pass

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.samples_log:
        args.samples_log.parent.mkdir(parents=True, exist_ok=True)
        with open(args.samples_log, "w", encoding="utf-8") as f:
            for name, res in result["benchmarks"].items():
                for s in res.pop("samples"):
                    f.write(json.dumps({"benchmark": name, **s}, ensure_ascii=False) + "\n")
                res["samples_log"] = str(args.samples_log)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(args.out)  # the pipeline treats the file as the job's output: never leave half of it

    for name, res in result["benchmarks"].items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in res["metrics"].items())
        print(f"{name}: {shown}  ({res['n_problems']} problems x {res['n_samples']} samples, {res['source']})")
    if args.mlflow_run_id:
        from cppo.tracking import log_eval

        for name, res in result["benchmarks"].items():
            log_eval(args.mlflow_run_id, name, res["metrics"], args.step)
    return 0
