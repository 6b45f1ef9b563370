"""The `cppo` command: one subcommand per pipeline stage.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``.
Modules are imported only when their subcommand (or ``--help`` of it) is asked for, so that
``cppo --help`` does not pay for torch, transformers or MLflow. A :class:`cppo.config.ConfigError`
that a subcommand does not handle itself (e.g. a profile failing the schema check) ends the command
with exit status 2 and its message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("cppo.train.sft_cli", "warm-start a model on worked solutions (the scale's base checkpoint)"),
    "train": ("cppo.train.train_cli", "RL training of one (method, scale, seed) run, or of several seeds one after the other in one process (--eval: each evaluated there too)"),
    "eval": ("evals.cli", "evaluate a checkpoint, a hub model or every kept checkpoint of a run (--run) on benchmarks (avg@k, pass@k, maj@k)"),
    "mlflow-init": ("cppo.tracking_cli", "create a profile's MLflow experiment and parent runs"),
    "report": ("cppo.report.cli", "tables, stability curves and summary of a profile from MLflow"),
    "rules": ("cppo.rules.cli", "list the registered trust-region rules and their parameters"),
    "verl-cmd": ("cppo.integrations.verl_backend", "print (or run) the verl command line of one run"),
    "prepare-data": ("cppo.integrations.prepare_data", "write a math training set as verl parquet"),
    "data": ("cppo.data_cli", "download the benchmark data directory (CPPO_DATA_DIR) from the hub"),
}


def _build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cppo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:  # import only the module that will run
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    from cppo.numerics import NumericsError, requested

    try:
        requested()
    except NumericsError as err:
        print(f"cppo: error: {err}", file=sys.stderr)
        return 2
    if selected is not None and selected not in COMMANDS:
        print(f"cppo: unknown command {selected!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    args = _build_parser(selected).parse_args(argv)
    if args.command is None:
        _build_parser(None).print_help()
        return 0
    from cppo.config import ConfigError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).main(args) or 0)
    except ConfigError as err:  # a bad profile or option is the user's to fix: one line each, no traceback
        for line in str(err).splitlines():
            print(f"cppo {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
