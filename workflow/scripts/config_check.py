"""Check profile files against the pipeline's schema from the command line:

    python workflow/scripts/config_check.py config/tiny.yaml [more.yaml ...]

The check itself is `cppo.schema.check_config`, the same function Snakemake (workflow/rules/common.smk)
and every `cppo` command run, with the registered rule names (entry points included) filled in; this
script only reads the files and reports `<file>: ok` or one line per problem.
"""

from __future__ import annotations

import sys

import yaml

from cppo.schema import SCHEMA, ConfigError, check_config

__all__ = ["SCHEMA", "ConfigError", "check_config"]


def main(paths: list[str]) -> int:
    rc = 0
    for f in paths:
        try:
            with open(f, encoding="utf-8") as fh:
                check_config(yaml.safe_load(fh))
        except (OSError, yaml.YAMLError, ConfigError) as err:
            for line in str(err).splitlines():
                print(f"{f}: {line}", file=sys.stderr)
            rc = 1
        else:
            print(f"{f}: ok")
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
