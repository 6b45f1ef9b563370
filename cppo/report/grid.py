"""A profile's grid: the (setting, method, scale, seed) cells a config asks for, and their paths.

Why here: the Snakemake workflow, `cppo mlflow-init` and `cppo report` must agree on the cells and
on the run folder layout (`results/<profile>/runs/setting~<x>/method~<m>/scale~<s>/seed~<k>/`), so
the expansion lives once, in plain Python with no heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cppo.config import apply_overrides, read_profile, reference, settings_of

__all__ = ["Cell", "apply_sets", "load_config", "settings_of", "cells", "reference", "parents"]


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    setting: str
    """named variant of `rl.*` (`settings:` of the config)"""
    method: str
    """method name (`methods:` of the config), e.g. grpo, cppo_no_prefix"""
    rule: str
    """the registered rule the method uses (`methods.<m>.rule`)"""
    scale: str
    """model scale name (`scales:` of the config)"""
    seed: int
    """random seed of the run"""

    def run_dir(self, profile: str, root: Path | str = "results") -> Path:
        return Path(root) / profile / "runs" / f"setting~{self.setting}" / f"method~{self.method}" / \
            f"scale~{self.scale}" / f"seed~{self.seed}"


def apply_sets(cfg: dict, sets: Iterable[str] | None) -> dict:
    """`key=value` overrides on a copy of `cfg`, parsed exactly as `cppo train --set` parses them."""
    return apply_overrides(cfg, list(sets or ()))


def load_config(path: Path | str, sets: Iterable[str] | None = None) -> dict:
    """Read a profile YAML (plus `--set` overrides) as a plain dict."""
    return read_profile(path, list(sets or ()))


def cells(cfg: dict) -> list[Cell]:
    """Every (setting, method, scale, seed) of `cfg["grid"]`, with names checked against the config."""
    grid = cfg.get("grid")
    if not isinstance(grid, dict):
        raise ValueError("config has no `grid:` section (methods, scales, seeds, settings)")
    methods = cfg.get("methods") or {}
    scales = cfg.get("scales") or {}
    settings = cfg.get("settings") or {}
    ref = reference(cfg)
    out = []
    for setting in settings_of(cfg):
        if setting != "default" and setting not in settings:
            raise ValueError(f"grid.settings: unknown setting {setting!r}; defined: {sorted(settings)}")
        # the on-policy reference rung: one method stands for all (every rule is the PG there)
        methods_here = [ref[1]] if ref and setting == ref[0] else grid["methods"]
        for method in methods_here:
            if method not in methods:
                raise ValueError(f"grid.methods: unknown method {method!r}; defined: {sorted(methods)}")
            rule = methods[method].get("rule") if isinstance(methods[method], dict) else None
            if not rule:
                raise ValueError(f"methods.{method}: missing `rule:`")
            for scale in grid["scales"]:
                if scale not in scales:
                    raise ValueError(f"grid.scales: unknown scale {scale!r}; defined: {sorted(scales)}")
                for seed in grid["seeds"]:
                    out.append(Cell(str(setting), str(method), str(rule), str(scale), int(seed)))
    return out


def parents(cfg: dict) -> list[tuple[str, str, str, str]]:
    """The distinct (setting, method, scale, rule) parent cells, in grid order."""
    seen: dict[tuple[str, str, str, str], None] = {}
    for c in cells(cfg):
        seen[(c.setting, c.method, c.scale, c.rule)] = None
    return list(seen)
