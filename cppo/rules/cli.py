"""`cppo rules`: list the registered trust-region rules with their parameters and defaults."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show only this rule")
    parser.add_argument("--json", action="store_true", help="print the registry as JSON")


def main(args: argparse.Namespace) -> int:
    from cppo.rules.registry import get_spec, list_rules, rule_param_docs

    names = [args.name] if getattr(args, "name", None) else list_rules()
    table = {}
    for name in names:
        try:
            spec = get_spec(name)
        except ValueError as e:
            print(f"cppo rules: {e}")
            return 2
        table[name] = {"paper": spec.paper, "summary": spec.summary, "params": rule_param_docs(name)}
    if getattr(args, "json", False):
        print(json.dumps(table, indent=2, default=str))
        return 0
    for name, info in table.items():
        print(f"{name}  —  {info['summary']}  [{info['paper']}]")
        for pname, p in info["params"].items():
            choices = f"  {{{', '.join(map(str, p['choices']))}}}" if p["choices"] else ""
            print(f"    {pname:<14} = {p['default']!r:<12} {p['doc']}{choices}")
        print()
    return 0
