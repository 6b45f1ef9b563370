"""``cppo train``: one RL run (method × scale × seed × setting) of a profile.

    cppo train CONFIG --method M --scale S --seed K [--setting X] [--steps N] --run-dir DIR
               [--init CKPT] [--set key=value ...] [--no-mlflow]

Everything is validated before the run folder is created (unknown method/scale/setting, bad
values, rule parameters, a missing base checkpoint): a bad call leaves nothing behind. An existing
run folder is resumed from its newest checkpoint; a folder with a ``done`` marker is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="profile YAML (e.g. config/tiny.yaml)")
    p.add_argument("--method", required=True, help="method name of the profile, or any registered rule name")
    p.add_argument("--scale", required=True, help="scale name of the profile")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--setting", default=None, help="setting name (rl overrides); default: none")
    p.add_argument("--steps", type=int, default=None, help="rollout steps (overrides rl.steps)")
    p.add_argument("--run-dir", required=True, type=Path, help="run folder (created; resumed when it exists)")
    p.add_argument("--init", default=None, help="starting checkpoint (default results/<profile>/base/scale~<s>/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (dotted, YAML value), e.g. rl.lr=3e-4; repeatable")
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


def main(args) -> int:
    from cppo.config import ConfigError, load_config, resolve_run
    from cppo.train.device import resolve_device

    try:
        cfg = load_config(args.config, args.set)
        run = resolve_run(cfg, args.method, args.scale, args.seed, args.setting, steps=args.steps)
        run.init = resolve_init(cfg, args.scale, args.init)
        if cfg.backend != "builtin":
            raise ConfigError(f"backend {cfg.backend!r}: use `cppo verl-cmd` for the verl backend")
        resolve_device(run.rl.device)  # a CUDA request on a machine without CUDA stops here
    except ConfigError as e:
        print(f"cppo train: error: {e}", file=sys.stderr)
        return 2
    run_dir: Path = args.run_dir
    if (run_dir / "done").exists():
        print(f"cppo train: {run_dir} is complete (done marker); nothing to do")
        return 0
    resolved = run.to_dict()
    cfg_file = run_dir / "config.yaml"
    if cfg_file.exists():
        import yaml

        old = yaml.safe_load(cfg_file.read_text())
        if _identity(old) != _identity(yaml.safe_load(yaml.safe_dump(resolved, sort_keys=False))):
            print(f"cppo train: error: {cfg_file} holds a different resolved config; "
                  f"use a fresh --run-dir or delete the old one", file=sys.stderr)
            return 2
    # validated: from here on the run folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg_file.exists():
        from cppo.train.checkpoint import atomic_write_text
        import yaml

        atomic_write_text(cfg_file, yaml.safe_dump(resolved, sort_keys=False))
    run_id = None
    if not args.no_mlflow:
        from cppo import tracking

        tracking.use_results_dir(cfg.results_dir)  # the store beside the profile's run folders
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
    print(msg)
    return 0
