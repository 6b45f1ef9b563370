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
    declared(cfg)  # a misspelt comparison stops the plan, not the report at the end
    return out


def parents(cfg: dict) -> list[tuple[str, str, str, str]]:
    """The distinct (setting, method, scale, rule) parent cells, in grid order."""
    seen: dict[tuple[str, str, str, str], None] = {}
    for c in cells(cfg):
        seen[(c.setting, c.method, c.scale, c.rule)] = None
    return list(seen)


MEASURES = ("time_to_collapse", "auc", "best", "final", "score")
"""What a declared comparison can test: the stability measures of a run (from the trainer's periodic
evaluations of `report.collapse_metric`) or `score`, the final checkpoint's headline metric."""


@dataclass(frozen=True)
class Declared:
    """`report.comparisons` resolved: focal − each of `against`, on `primary`, at each of `settings`."""

    primary: str
    focal: str
    against: tuple[str, ...]
    settings: tuple[str, ...]
    paired: bool = False
    alpha: float = 0.05
    resamples: int = 9999


def declared(cfg: dict) -> Declared | None:
    """The profile's declared comparisons with their defaults (None when the grid has no focal method).

    Defaults: focal `cppo`, against every other method of the grid, at every setting but the
    on-policy reference rung, primary measure `auc`, unpaired. Names are checked against the grid.
    A profile with `report.claims` and no `report.comparisons` has none: its claims are its declared
    family (a second, default family beside them would be tested at 5% on its own).
    """
    report = cfg.get("report") or {}
    if report.get("claims") and not report.get("comparisons"):
        return None
    spec = dict(report.get("comparisons") or {})
    methods = [str(m) for m in (cfg.get("grid") or {}).get("methods") or []]
    focal = str(spec.get("focal", "cppo"))
    if focal not in methods:
        if "focal" in spec:
            raise ValueError(f"report.comparisons.focal: {focal!r} is not one of grid.methods {methods}")
        return None
    against = [str(m) for m in spec.get("against") or [m for m in methods if m != focal]]
    bad = [m for m in against if m not in methods or m == focal]
    if bad:
        raise ValueError(f"report.comparisons.against: {bad} must be methods of the grid other than {focal!r}")
    ref = reference(cfg)
    compared = [s for s in settings_of(cfg) if not (ref and s == ref[0])]
    settings = [str(s) for s in spec.get("settings") or compared]
    bad = [s for s in settings if s not in compared]
    if bad:
        raise ValueError(f"report.comparisons.settings: {bad} must be settings of the grid where every method "
                         f"runs ({compared})")
    primary = str(spec.get("primary", "auc"))
    if primary not in MEASURES:
        raise ValueError(f"report.comparisons.primary: {primary!r} is not one of {list(MEASURES)}")
    return Declared(primary, focal, tuple(against), tuple(settings), bool(spec.get("paired", False)),
                    float(spec.get("alpha", 0.05)), int(spec.get("resamples", 9999)))
