"""Verifiable tasks: the synthetic chain-arithmetic task and the real math path.

``get_task(cfg, data_dir)`` builds the task named by a config's ``task`` section (a mapping or a
typed ``TaskConfig``). Every task exposes ``sample(rng, n)`` (rows with ``id``, ``problem``,
``answer``, ``solution``), ``rewards(responses, answers, stopped)``, ``eval_split(name, n, seed)``
and ``eval_splits(configured)``, the splits the trainer evaluates periodically. Task-specific
choices live on the task objects, so the trainer never asks which task it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from cppo.tasks.chain import ChainTask, make_split

__all__ = ["ChainTask", "make_split", "get_task", "ChainTaskWithSplits"]


class ChainTaskWithSplits(ChainTask):
    """A chain task that also knows its named evaluation splits (``chain_id``, ``chain_ood``)."""

    def __init__(self, K: int = 24, modulus: int = 10, ood_K: int | None = None, max_operand: int | None = None,
                 op_format: str = "char", K_min: int | None = None):
        super().__init__(K=K, modulus=modulus, max_operand=max_operand, op_format=op_format, K_min=K_min)
        object.__setattr__(self, "ood_K", ood_K or K + 8)

    def eval_split(self, name: str, n: int, seed: int = 0) -> list[dict]:
        return make_split(name, n, seed=seed, K=self.K, modulus=self.modulus, ood_K=self.ood_K,
                          op_format=self.op_format, max_operand=self.max_operand, K_min=self.K_min)

    def eval_splits(self, configured: Sequence[str]) -> list[str]:
        """The periodic evaluation splits: the configured chain splits (``rl.eval_splits``)."""
        return list(configured)


def get_task(cfg: Any, data_dir: str | None = None):
    """Build a task from its config section: ``{name: chain, K, modulus, ood_K}`` or ``{name: math, ...}``.

    ``data_dir`` is the profile's benchmark data folder (``CPPO_DATA_DIR`` wins over it); a task that
    reads no files (chain) ignores it. When None, a ``data_dir`` key of ``cfg`` is used.
    """
    if is_dataclass(cfg):
        cfg = asdict(cfg)
    cfg = dict(cfg or {})
    if data_dir is not None:
        cfg["data_dir"] = data_dir
    name = cfg.pop("name", "chain")
    if name == "chain":
        return ChainTaskWithSplits(K=int(cfg.get("K", 24)), modulus=int(cfg.get("modulus", 10)),
                                   ood_K=cfg.get("ood_K"), max_operand=cfg.get("max_operand"),
                                   op_format=cfg.get("op_format", "char"), K_min=cfg.get("K_min"))
    if name == "math":
        from cppo.tasks.math import MathTask

        keys = {"train_file", "test_files", "template", "timeout_s", "workers", "data_dir"}
        kw = {k: v for k, v in cfg.items() if k in keys and v is not None}
        if "test_files" in kw:
            kw["test_files"] = tuple(kw["test_files"])
        return MathTask(**kw)
    raise ValueError(f"unknown task {name!r}; choose from ['chain', 'math']")
