"""Validate a profile config against workflow/schemas/config.schema.yaml, naming the bad key.

Why not `snakemake.utils.validate`: its message is jsonschema's full dump (schema path, instance);
this one says `config key rl.lr: 'fast' is not of type 'number'` and lists every problem at once.
Usable alone: `python workflow/scripts/config_check.py config/tiny.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that does not match the schema."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(allowed))
        where = _key(err.absolute_path)
        names = ", ".join(f"{where}.{k}" if err.absolute_path else k for k in extra)
        return f"unknown config key {names} (allowed here: {', '.join(allowed)})"
    if err.validator == "required":
        return f"config key {_key(err.absolute_path)}: {err.message}"
    return f"config key {_key(err.absolute_path)}: {err.message}"


def check_config(cfg: dict, schema_path: Path | str = SCHEMA) -> None:
    """Raise ConfigError listing every schema violation of `cfg` (one per line)."""
    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError("\n".join(_describe(e) for e in errors))


if __name__ == "__main__":
    try:
        for f in sys.argv[1:]:
            check_config(yaml.safe_load(open(f)))
            print(f"{f}: ok")
    except ConfigError as err:
        print(f"{f}: {err}", file=sys.stderr)
        raise SystemExit(1)
