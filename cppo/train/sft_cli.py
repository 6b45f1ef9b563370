"""``cppo sft``: the warm start of a from-scratch model; writes the scale's base checkpoint.

    cppo sft CONFIG --scale S --out DIR [--steps N] [--set key=value ...]

``DIR`` receives the model in Hugging Face format and ``sft_metrics.json`` (written last).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="profile YAML (e.g. config/tiny.yaml)")
    p.add_argument("--scale", required=True, help="scale name of the profile")
    p.add_argument("--out", required=True, type=Path, help="output folder (e.g. results/tiny/base/scale~s)")
    p.add_argument("--steps", type=int, default=None, help="cap on SFT steps (overrides sft.max_steps)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (dotted, YAML value), e.g. sft.lr=1e-3; repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    from cppo.config import ConfigError, load_config, resolve_sft
    from cppo.train.device import resolve_device

    try:
        cfg = load_config(args.config, args.set)
        sft = resolve_sft(cfg, args.scale, steps=args.steps)
        if cfg.task.name != "chain" or "hub" in cfg.scales[args.scale]:
            raise ConfigError("cppo sft warm-starts from-scratch models on the chain task; "
                              f"scale {args.scale!r} / task {cfg.task.name!r} does not need it")
        resolve_device(sft.device, "sft.device")  # a CUDA request on a machine without CUDA stops here
    except ConfigError as e:
        print(f"cppo sft: error: {e}", file=sys.stderr)
        return 2
    from cppo.train.sft import run_sft

    m = run_sft(cfg, args.scale, sft, args.out, progress=not args.no_progress)
    print(f"cppo sft: {args.out}: {m['params']} params, {m['steps']} steps in {m['time_s']:.1f}s, "
          f"val sampled acc {m['val_sampled_acc']:.3f}, greedy {m['val_greedy_acc']:.3f} ({m['stopped']})")
    return 0
