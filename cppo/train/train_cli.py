"""``cppo train``: RL runs (method × scale × seed × setting) of a profile.

    cppo train CONFIG --method M --scale S --seed K [K ...] [--setting X] [--steps N] --run-dir DIR
               [--init CKPT] [--set key=value ...] [--eval] [--no-mlflow]

Everything is validated before the run folder is created (unknown method/scale/setting, bad
values, rule parameters, a missing base checkpoint): a bad call leaves nothing behind. An existing
run folder is resumed from its newest checkpoint; a folder with a ``done`` marker is left alone.

Several seeds train one after the other in this process (``--run-dir`` then names a template with
``{seed}``), so Python, torch and transformers are imported once for all of them. Each run reseeds
every random source and resets the thread count, so its metrics do not depend on the runs before it.
A run that fails is reported (traceback, FAILED in MLflow) and the others still run; the exit status
is then 1. With ``--eval`` each finished run is scored in this process exactly as
``cppo eval --run RUN --config CONFIG`` would (``<run>/eval/steps/step_<n>.json``, ``<run>/eval/_all.json``,
split into ``<run>/eval/<benchmark>.json``, MLflow ``eval/<benchmark>/<metric>``); the pipeline does
this for grouped runs (``grid.runs_per_job``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="profile YAML (e.g. config/tiny.yaml)")
    p.add_argument("--method", required=True, help="method name of the profile, or any registered rule name")
    p.add_argument("--scale", required=True, help="scale name of the profile")
    p.add_argument("--seed", type=int, nargs="+", required=True,
                   help="one seed, or several: trained one after the other in this process")
    p.add_argument("--setting", default=None, help="setting name (rl overrides); default: none")
    p.add_argument("--steps", type=int, default=None, help="rollout steps (overrides rl.steps)")
    p.add_argument("--run-dir", required=True,
                   help="run folder (created; resumed when it exists); with several seeds a template holding "
                        "{seed}, e.g. 'runs/seed~{seed}'")
    p.add_argument("--init", default=None, help="starting checkpoint (default results/<profile>/base/scale~<s>/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (dotted, YAML value), e.g. rl.lr=3e-4; repeatable")
    p.add_argument("--eval", action="store_true",
                   help="score each finished run's kept checkpoints in this process, as `cppo eval --run RUN "
                        "--config CONFIG` and the pipeline's split would (<run>/eval/)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (files only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_init(cfg, scale: str, init: str | None) -> str:
    """The checkpoint a run starts from; raises ConfigError when it is missing."""
    from cppo.config import ConfigError
    from cppo.models import _looks_like_hub

    if init is None:
        hub = cfg.scales[scale].get("hub")
        base = cfg.base_dir(scale)
        if (base / "config.json").is_file():
            return str(base)
        if hub:
            return str(hub)
        raise ConfigError(f"base checkpoint of scale {scale!r} not found at {base}; run "
                          f"`cppo sft CONFIG --scale {scale} --out {base}` first or pass --init")
    if Path(init).is_dir():
        if not (Path(init) / "config.json").is_file():
            raise ConfigError(f"--init {init}: not a Hugging Face checkpoint (no config.json)")
        return init
    if _looks_like_hub(init) and not Path(init).exists():
        return init
    raise ConfigError(f"--init {init}: checkpoint not found")


def _identity(resolved: dict) -> dict:
    """A resolved config minus what may change on resume: ``rl.device`` (a run may move between devices)."""
    rl = {k: v for k, v in (resolved.get("rl") or {}).items() if k != "device"}
    return {**resolved, "rl": rl}


SEED_FIELD = "{seed}"


def run_dirs(template: str, seeds: list[int]) -> list[Path]:
    """The run folder of each seed; ConfigError when several seeds would share one."""
    from cppo.config import ConfigError

    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seed: a seed is given twice ({' '.join(map(str, seeds))})")
    if len(seeds) > 1 and SEED_FIELD not in template:
        raise ConfigError(f"--run-dir {template}: with several seeds it must hold {SEED_FIELD} (one folder per run)")
    return [Path(template.replace(SEED_FIELD, str(seed))) for seed in seeds]


def main(args) -> int:
    from cppo.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
        from cppo import tracking

        tracking.use_results_dir(cfg.results_dir)  # the MLflow store beside the profile's run folders
        runs = [_resolve(cfg, args, seed, run_dir) for seed, run_dir in zip(args.seed, run_dirs(args.run_dir, args.seed))]
        evaluation = _evaluation(cfg.raw) if args.eval else None
    except ConfigError as e:
        print(f"cppo train: error: {e}", file=sys.stderr)
        return 2
    for run, run_dir in runs:  # every run's folder agrees with its config before any run starts
        if not (run_dir / "done").exists() and _changed_config(run, run_dir):
            print(f"cppo train: error: {run_dir / 'config.yaml'} holds a different resolved config; "
                  f"use a fresh --run-dir or delete the old one", file=sys.stderr)
            return 2
    import torch

    threads = torch.get_num_threads()  # OMP_NUM_THREADS: what a separate `cppo eval` process would have
    if len(runs) == 1:  # one run: its error propagates as it always did
        _train_and_evaluate(*runs[0], args, evaluation, threads)
        return 0
    import traceback

    failed = []
    for i, (run, run_dir) in enumerate(runs, 1):
        print(f"cppo train: run {i}/{len(runs)}: {run_dir}", flush=True)
        try:
            _train_and_evaluate(run, run_dir, args, evaluation, threads)
        except Exception as e:  # noqa: BLE001 (this run fails alone; KeyboardInterrupt still stops all)
            traceback.print_exc()
            print(f"cppo train: error: {run_dir} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            failed.append(run_dir)
    if failed:
        print(f"cppo train: error: {len(failed)} of {len(runs)} runs failed: {', '.join(map(str, failed))}",
              file=sys.stderr)
        return 1
    return 0


def _resolve(cfg, args, seed: int, run_dir: Path):
    """(RunConfig, run folder) of one seed, validated (ConfigError)."""
    from cppo.config import ConfigError, resolve_run
    from cppo.train.device import resolve_device

    run = resolve_run(cfg, args.method, args.scale, seed, args.setting, steps=args.steps)
    run.init = resolve_init(cfg, args.scale, args.init)
    if cfg.backend != "builtin":
        raise ConfigError(f"backend {cfg.backend!r}: use `cppo verl-cmd` for the verl backend")
    resolve_device(run.rl.device)  # a CUDA request on a machine without CUDA stops here
    return run, run_dir


def _evaluation(raw: dict):
    """The profile's evaluation (benchmarks, settings, backend), checked before any run starts."""
    from cppo.config import ConfigError
    from evals.backends import BackendUnavailable
    from evals.cli import profile_evaluation

    try:
        return profile_evaluation(raw)
    except (ValueError, BackendUnavailable) as e:
        raise ConfigError(f"--eval: {e}") from e


def _changed_config(run, run_dir: Path) -> bool:
    import yaml

    cfg_file = run_dir / "config.yaml"
    if not cfg_file.exists():
        return False
    old = yaml.safe_load(cfg_file.read_text())
    return _identity(old) != _identity(yaml.safe_load(yaml.safe_dump(run.to_dict(), sort_keys=False)))


def _train_and_evaluate(run, run_dir: Path, args, evaluation, threads: int) -> None:
    """Train one run (the Trainer reseeds every random source and sets rl.num_threads), then, with an
    evaluation, score it with the thread count of a fresh process."""
    import time

    import torch

    t0 = time.perf_counter()
    _train(run, run_dir, args)
    t1 = time.perf_counter()
    if evaluation is None:
        return
    from evals.cli import evaluate_run_folder

    torch.set_num_threads(threads)
    run_id = None
    id_file = run_dir / "mlflow_run_id"
    if not args.no_mlflow and id_file.is_file():  # as the pipeline's evaluate job finds it (run_info.py)
        run_id = id_file.read_text().strip() or None
    out = evaluate_run_folder(run_dir, *evaluation, mlflow_run_id=run_id, progress=not args.no_progress)
    what = f"evaluated into {out.parent}" if out else "evaluation already complete"
    print(f"cppo train: {run_dir}: {what}; {t1 - t0:.2f} s training, {time.perf_counter() - t1:.2f} s evaluation",
          flush=True)


def _train(run, run_dir: Path, args) -> None:
    if (run_dir / "done").exists():
        print(f"cppo train: {run_dir} is complete (done marker); nothing to do")
        return
    resolved = run.to_dict()
    cfg_file = run_dir / "config.yaml"
    # validated: from here on the run folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg_file.exists():
        from cppo.train.checkpoint import atomic_write_text
        import yaml

        atomic_write_text(cfg_file, yaml.safe_dump(resolved, sort_keys=False))
    run_id = None
    if not args.no_mlflow:
        from cppo import tracking

        run_id = tracking.start_child(run.profile, run.setting, run.method.name, run.scale, run.seed,
                                      run.method.rule, resolved, run_dir)
    from cppo.train.rl import Trainer

    trainer = Trainer(run, run_dir, run.init, mlflow_run_id=run_id, progress=not args.no_progress)
    try:
        last = trainer.run()
    except BaseException:
        if run_id:  # a crashed run must not stay RUNNING in MLflow (a rerun resumes it)
            from cppo import tracking

            tracking.end_run(run_id, "FAILED")
        raise
    msg = f"cppo train: {run_dir} done at step {trainer.step}"
    if "rollout/reward_mean" in last:
        msg += f", last reward {last['rollout/reward_mean']:.3f}"
    if trainer.stopped_reason:
        msg += f" (stopped: {trainer.stopped_reason})"
    print(msg, flush=True)
