"""The one check of a profile against the JSON schema, shared by the pipeline and every `cppo` command.

What: :func:`check_config` validates a profile dict (after ``--set`` overrides) against
``cppo/config.schema.yaml`` (package data, so a non-editable install has it) and raises :class:`ConfigError` listing every problem, one
line each, naming the key: ``config key grid.seeds.1: 'two' is not of type 'integer'``.

Why one function: Snakemake (``workflow/rules/common.smk``), ``workflow/scripts/config_check.py`` and
``cppo.config.read_profile`` (so ``cppo train``, ``sft``, ``eval --config``, ``report``,
``mlflow-init``, ``verl-cmd``) all call it, so a profile the CLI accepts is one the pipeline plans,
and the other way round.

Rule names are not written in the schema file: ``$defs.rule_name`` is only ``{type: string}`` there,
and the registered names (:func:`cppo.rules.registry.list_rules`: built-ins and ``cppo.rules`` entry
points) are put into it as an ``enum`` each time the schema is loaded. A rule installed from another
package is therefore accepted without editing this repository.

Why not ``snakemake.utils.validate``: its message is jsonschema's full dump (schema path, instance).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cppo.errors import ConfigError

SCHEMA = Path(__file__).resolve().with_name("config.schema.yaml")  # the one copy; the Snakefile reads it too

__all__ = ["SCHEMA", "ConfigError", "check_config", "load_schema"]


@lru_cache(maxsize=4)
def _read(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"profile schema not found at {p} (an incomplete cppo install: reinstall the package)")
    with open(p, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_schema(path: Path | str = SCHEMA) -> dict[str, Any]:
    """The profile schema with the registered rule names filled in (``$defs.rule_name.enum``)."""
    from cppo.rules.registry import list_rules

    schema = copy.deepcopy(_read(str(path)))
    rule_name = schema.get("$defs", {}).get("rule_name")
    if rule_name is None:
        raise ConfigError(f"{path}: the schema has no $defs.rule_name (the slot for the registered rule names)")
    rule_name["enum"] = list_rules()
    return schema


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(err: jsonschema.ValidationError) -> str:
    where = _key(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(allowed))
        names = ", ".join(f"{where}.{k}" if err.absolute_path else k for k in extra)
        return f"unknown config key {names} (allowed here: {', '.join(allowed)})"
    if err.validator == "enum" and err.absolute_path and err.absolute_path[-1] == "rule" \
            and "methods" in err.absolute_path:
        return (f"config key {where}: {err.instance!r} is not one of the registered rules "
                f"({', '.join(map(str, err.validator_value))}); `cppo rules` lists them, and a package adds "
                "one through the `cppo.rules` entry point")
    err = _closest(err)
    return f"config key {_key(err.absolute_path)}: {err.message}"


def _closest(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For anyOf/oneOf ("-1 is not valid under any of the given schemas", which says nothing), the
    failure of the alternative whose type the value has (``-1 is less than the minimum of 0``)."""
    while err.validator in ("anyOf", "oneOf") and err.context:
        same_type = [e for e in err.context if not (e.validator == "type" and not e.relative_path)]
        err = jsonschema.exceptions.best_match(same_type or err.context)
    return err


def check_config(cfg: Any, schema_path: Path | str = SCHEMA) -> None:
    """Raise :class:`ConfigError` listing every schema violation of ``cfg`` (one per line, sorted by key)."""
    validator = jsonschema.Draft202012Validator(load_schema(schema_path))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(_describe(e) for e in errors)))
