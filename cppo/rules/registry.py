"""The rule registry: names -> rule implementations with typed, documented parameters.

A rule is registered once with `@register_rule(name, Params, paper=..., summary=...)` on a function
`fn(batch: PolicyBatch, p: Params) -> RuleOutput`, where `Params` is a dataclass whose fields carry
their default and a one-line doc (`param(default, "doc")`). `get_rule(name, **params)` validates the
parameters and returns a plain callable `Rule` object with `.name`, `.params`, `.needs_topk` and
`.reads_old`.

Which inputs a rule reads is declared at registration: every rule reads π (`logp`), μ
(`rollout_logp`) and Â; `reads_old` says whether it also reads π_old (`old_logp`, `old_topk_logp`):
`True`, `False`, or a function of the parameters (`anchor_is_old`: only with `anchor: old`). The
trainer skips π_old's forward pass for a rule that does not read it (docs/training.md); such a rule
is called with `old_logp=None`, so a wrong declaration fails loudly instead of reading stale data.
Undeclared means `True` (the safe side: π_old is computed).

Built-in rules live in `cppo/rules/cppo.py` and `baselines/<name>.py` and are imported lazily, on
first use. Third-party packages add rules through the entry-point group `cppo.rules`:

    [project.entry-points."cppo.rules"]
    my_rule = "my_pkg.my_rule:my_rule"     # a function decorated with @register_rule

The entry point is loaded (imported) only when its name is asked for or when `list_rules()` runs.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # annotations only: listing rule names must not import torch
    from cppo.rules.types import PolicyBatch, RuleOutput

ENTRY_POINT_GROUP = "cppo.rules"

# name -> module that registers it on import
_BUILTIN: dict[str, str] = {
    "pg_is": "baselines.pg_is",
    "ppo_clip": "baselines.ppo_clip",
    "dppo": "baselines.dppo",
    "trm_max": "baselines.trm_max",
    "trm_avg": "baselines.trm_avg",
    "cispo": "baselines.cispo",
    "gspo": "baselines.gspo",
    "minpro": "baselines.minpro",
    "sapo": "baselines.sapo",
    "gpg": "baselines.gpg",
    "clip_cov": "baselines.clip_cov",
    "kl_cov": "baselines.kl_cov",
    "geo_mean": "baselines.geo_mean",
    "dro": "baselines.dro",
    "cppo": "cppo.rules.cppo",
}


def param(default: Any, doc: str, choices: Optional[tuple] = None) -> Any:
    """A rule-parameter dataclass field with its default, one-line doc and (optionally) allowed values."""
    return field(default=default, metadata={"doc": doc, "choices": choices})


@dataclass(frozen=True)
class RuleSpec:
    """A registered rule: its function, its parameter dataclass and where it comes from."""

    name: str
    fn: Callable[[PolicyBatch, Any], RuleOutput]
    params_cls: type
    paper: str
    summary: str
    reads_old: bool | Callable[[Any], bool] = True
    """Whether `fn` reads π_old (`PolicyBatch.old_logp` / `old_topk_logp`): a bool, or a function of the params."""


def anchor_is_old(params: Any) -> bool:
    """`reads_old` of the rules with an `anchor` parameter: π_old is read only as the anchor `old`."""
    return params.anchor == "old"


_REGISTRY: dict[str, RuleSpec] = {}


def register_rule(name: str, params_cls: type, paper: str = "", summary: str = "",
                  reads_old: bool | Callable[[Any], bool] = True):
    """Decorator registering `fn(batch, params) -> RuleOutput` under `name`; `reads_old`: whether it reads
    π_old (a bool, or a function of the params such as `anchor_is_old`)."""
    if not dataclasses.is_dataclass(params_cls):
        raise TypeError(f"register_rule({name!r}): params_cls must be a dataclass")

    def deco(fn):
        spec = RuleSpec(name=name, fn=fn, params_cls=params_cls, paper=paper, summary=summary, reads_old=reads_old)
        old = _REGISTRY.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"rule name {name!r} is already registered by {old.fn.__module__}.{old.fn.__qualname__}")
        _REGISTRY[name] = spec
        fn.rule_spec = spec
        return fn

    return deco


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load(name: str) -> Optional[RuleSpec]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
        return _REGISTRY.get(name)
    ep = _entry_points().get(name)
    if ep is None:
        return None
    obj = ep.load()
    if name not in _REGISTRY:  # the object was not decorated: accept a RuleSpec or a decorated function
        spec = obj if isinstance(obj, RuleSpec) else getattr(obj, "rule_spec", None)
        if spec is None:
            raise ValueError(f"entry point {ep.value!r} (group {ENTRY_POINT_GROUP}) did not register rule {name!r}")
        _REGISTRY[name] = dataclasses.replace(spec, name=name)
    return _REGISTRY[name]


def builtin_rules() -> list[str]:
    """Names of the rules shipped in this repository (`_BUILTIN`), in their listing order."""
    return list(_BUILTIN)


def list_rules() -> list[str]:
    """Names of all available rules: built-ins, then third-party entry points (sorted)."""
    names = list(_BUILTIN)
    extra = sorted((set(_REGISTRY) | set(_entry_points())) - set(names))
    return names + extra


def get_spec(name: str) -> RuleSpec:
    """The RuleSpec of `name`; ValueError naming the valid rules when unknown."""
    spec = _load(name)
    if spec is None:
        raise ValueError(f"unknown rule {name!r}; valid rules: {', '.join(list_rules())}")
    return spec


def rule_param_defaults(name: str) -> dict[str, Any]:
    """Parameter name -> default value of rule `name` (for building config classes, e.g. verl's)."""
    return {f.name: f.default for f in dataclasses.fields(get_spec(name).params_cls)}


def rule_param_docs(name: str) -> dict[str, dict[str, Any]]:
    """Parameter name -> {default, doc, choices} of rule `name`."""
    return {f.name: {"default": f.default, "doc": f.metadata.get("doc", ""), "choices": f.metadata.get("choices")}
            for f in dataclasses.fields(get_spec(name).params_cls)}


def _check_choices(name: str, params: Any) -> None:
    for f in dataclasses.fields(params):
        choices = f.metadata.get("choices")
        value = getattr(params, f.name)
        if choices is not None and value not in choices:
            raise ValueError(f"rule {name!r}: parameter {f.name}={value!r} is not one of {choices}")


class Rule:
    """A configured rule: `rule(batch) -> RuleOutput`, with `.name`, `.params`, `.needs_topk`, `.reads_old`."""

    def __init__(self, spec: RuleSpec, params: Any):
        self.spec = spec
        self.config = params
        self.name = spec.name

    @property
    def params(self) -> dict[str, Any]:
        """The resolved parameters (defaults filled in)."""
        return dataclasses.asdict(self.config)

    @property
    def needs_topk(self) -> bool:
        """True when the rule's divergence needs log π at μ's top-K ids (`PolicyBatch.policy_topk_logp`)."""
        return bool(getattr(self.config, "needs_topk", False))

    @property
    def reads_old(self) -> bool:
        """True when the rule reads π_old (`PolicyBatch.old_logp`, `old_topk_logp`); False: it may be None."""
        r = self.spec.reads_old
        return bool(r(self.config) if callable(r) else r)

    def __call__(self, batch: PolicyBatch) -> RuleOutput:
        if self.needs_topk and not batch.has_topk:
            raise ValueError(f"rule {self.name!r} ({self.params}) uses a top-K divergence: the batch needs "
                             "rollout_topk_logp and policy_topk_logp")
        return self.spec.fn(batch, self.config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Rule({self.name!r}, {args})"


def get_rule(name: str, **params: Any) -> Rule:
    """Build rule `name` with `params` (unspecified ones take their defaults).

    Raises:
        ValueError: unknown rule (naming the valid rules), unknown parameter (naming the valid
            parameters) or an invalid parameter value.
    """
    spec = get_spec(name)
    valid = [f.name for f in dataclasses.fields(spec.params_cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"rule {name!r}: unknown parameter(s) {', '.join(unknown)}; valid parameters: "
                         f"{', '.join(valid)}")
    cfg = spec.params_cls(**params)
    _check_choices(name, cfg)
    return Rule(spec, cfg)
