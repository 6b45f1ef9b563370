"""Typed profile configs: load a profile YAML, apply overrides, resolve one run, validate early.

A profile (``config/<name>.yaml``, docs/contracts.md §Profiles) holds defaults (``rl``, ``sft``), named
variants (``settings``), model shapes (``scales``) and methods (name -> rule + params). One run is
(method, scale, seed, setting); :func:`resolve_run` turns the profile into the fully resolved
:class:`RunConfig` that the trainer uses and writes next to its outputs.

Precedence of an ``rl``/``sft`` value, lowest first: the section's default in this file, the
profile's section, the chosen setting (``settings.<x>``), then ``--set`` overrides (applied to the
raw YAML before anything else, so they can touch any key, e.g. ``settings.stale.staleness=2``).
Any ``rl``/``sft`` value may be a per-scale mapping ``{s: 150, m: 60}``; the run's scale picks.

Validation happens here, before any work: unknown keys in typed sections, bad ranges (each section
checks its own: :meth:`RLConfig.validate`, :meth:`SFTConfig.validate`, as rule parameters do), an
unknown method, and rule parameters (through ``get_rule``, which raises a ValueError naming valid ones).
Whether a device is actually there is the trainer's check (:mod:`cppo.train.device`).
A method name that is a registered rule with no ``methods`` entry resolves to that rule with its
defaults, so every rule is runnable by name from any profile.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cppo.errors import ConfigError
from evals import defaults as eval_defaults  # the evaluation defaults live with the evaluation code

ROLLOUT_DTYPES = ("float32", "bfloat16", "float16")
RECOMPUTE_OLD_LOGP = ("auto", "always")  # rl.recompute_old_logp (cppo.train.rl.Trainer.needs_old)


# --------------------------------------------------------------------------- sections
@dataclass
class TaskConfig:
    name: str = "chain"
    """Task: ``chain`` (synthetic chain arithmetic) or ``math`` (JSONL prompts, math-verify reward)."""
    K: int = 24
    """chain: operations per problem (training and ``chain_id``); with ``K_min``, the longest chain."""
    K_min: int | None = None
    """chain: variable lengths, each problem draws its length from [K_min, K] (null: always K)."""
    modulus: int = 10
    """chain: arithmetic modulus (values are single characters)."""
    ood_K: int | None = None
    """chain: operations in the harder ``chain_ood`` split (default K + 8)."""
    max_operand: int | None = None
    """chain: largest |d| of an operation (default min(3, modulus - 1))."""
    op_format: str = "char"
    """chain: ``char`` (one letter per operation: A=+1, a=-1, ...) or ``sign`` (``+1``, ``-1``)."""
    n_test: int = 256
    """Problems per evaluation split."""
    train_file: str = "math_train"
    """math: training JSONL name in the data directory."""
    test_files: list[str] = field(default_factory=lambda: ["math500"])
    """math: evaluation JSONL names."""
    template: str | None = None
    """math: prompt template with ``{problem}`` (default: step by step, answer in \\boxed{})."""
    timeout_s: float = 5.0
    """math: time limit of one answer check (seconds)."""
    workers: int = 2
    """math: reward worker processes."""


@dataclass
class SFTConfig:
    batch_size: int = 64
    """Worked solutions per optimizer step (fresh samples every step: the task is generated)."""
    lr: float = 3.0e-3
    """AdamW learning rate (constant after warm-up)."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float | None = 1.0
    """Gradient-norm clip (null = off)."""
    max_steps: int = 4000
    """Upper bound on optimizer steps (early stopping usually ends sooner)."""
    eval_every: int = 25
    """Validation interval in steps."""
    val_n: int = 256
    """Validation problems (``chain_val`` split, disjoint from the test splits)."""
    target_sampled_acc: float | None = 0.30
    """Stop once sampled accuracy (at ``temperature``) on validation reaches this (null = run max_steps)."""
    temperature: float = 1.0
    """Sampling temperature of the validation check (the RL rollout temperature)."""
    max_new_tokens: int | None = None
    """Generation limit in validation (default: the RL ``max_new_tokens``)."""
    seed: int = 0
    """Seed of the data stream and the initialisation."""
    num_threads: int = 1
    """torch intra-op threads."""
    device: str = "cpu"
    """Where the model trains: ``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (cuda when available, else cpu)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first out-of-range value (the message names the key)."""
        _require(self.batch_size >= 1, "sft.batch_size must be >= 1")
        _require(self.lr > 0, "sft.lr must be > 0")
        _require(self.max_steps >= 0, f"sft.max_steps must be >= 0, got {self.max_steps}")
        _require(self.eval_every >= 1, "sft.eval_every must be >= 1")
        _require(self.val_n >= 1, "sft.val_n must be >= 1")
        _require(self.temperature > 0, "sft.temperature must be > 0")
        _require(self.target_sampled_acc is None or 0 < self.target_sampled_acc <= 1,
                 "sft.target_sampled_acc must be in (0, 1] or null")
        _require(self.grad_clip is None or self.grad_clip > 0, "sft.grad_clip must be > 0 or null")
        check_device(self.device, "sft.device")


@dataclass
class RolloutCorrectionConfig:
    """verl's ``algorithm.rollout_correction`` (decoupled mode) for the builtin trainer: importance weights
    and rejection of the rollout policy μ against π_old, applied to each rollout batch before the rule
    (:mod:`cppo.rules.rollout_correction` has the equations)."""

    rollout_is: str | None = None
    """IS weights π_old/μ per ``token`` or per ``sequence`` (product over the response); null: none."""
    rollout_is_threshold: str | float = 2.0
    """A number U: truncate weights at U (TIS); a string ``"L_U"``: zero weights outside [L, U] (IcePop)."""
    rollout_is_batch_normalize: bool = False
    """Divide the weights by their batch mean (over tokens, or over sequences for ``sequence``)."""
    rollout_rs: str | None = None
    """Rejection: comma-separated ``token_k1|k2|k3``, ``seq_sum_k*``, ``seq_mean_k*``, ``seq_max_k2|k3``; null: none."""
    rollout_rs_threshold: str | float | None = None
    """One bound per ``rollout_rs`` option (or one for all): k2/k3 an upper bound, k1 ``"L_U"`` ratio bounds."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the option when a value is invalid (verl's rules)."""
        from cppo.rules.rollout_correction import parse

        try:
            parse(**dataclasses.asdict(self))
        except ValueError as e:
            raise ConfigError(f"rl.rollout_correction: {e}") from e


@dataclass
class RLConfig:
    prompts_per_rollout: int = 16
    """Prompts per rollout batch."""
    samples_per_prompt: int = 8
    """Responses per prompt (the GRPO group size n)."""
    updates_per_rollout: int = 8
    """Mini-batches (one optimizer step each) per rollout batch: the off-policy degree."""
    steps: int = 150
    """Rollout steps (each = one rollout batch and ``updates_per_rollout`` optimizer steps)."""
    lr: float = 1.0e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value (null = no clipping; the pre-clip norm is logged anyway)."""
    staleness: int = 0
    """Rollouts are generated from weights this many optimizer steps old (emulates async inference)."""
    staleness_rollouts: int = 0
    """Rollouts are generated from the weights at the start of the rollout step this many rollouts ago
    (lag counted in rollouts, whatever the number of updates each made; exclusive with ``staleness``)."""
    rollout_dtype: str = "float32"
    """Precision of the rollout engine's copy of the policy (``float32``, ``bfloat16``, ``float16``):
    μ is sampled and recorded in it while the trainer recomputes π in float32, as when vLLM samples
    in bf16 for an fp32 trainer. The mismatch shows in ``rule/k3_old_mu``."""
    temperature: float = 1.0
    """Rollout temperature (π's log-probs in the loss use the same temperature)."""
    top_p: float = 1.0
    """Rollout nucleus mass (μ is recorded before truncation)."""
    max_new_tokens: int = 32
    """Response length limit; also the norm constant of ``seq-mean-token-sum-norm``."""
    loss_agg: str = "seq-mean-token-sum-norm"
    """Loss aggregation mode (same for every rule in a comparison)."""
    topk: int = 20
    """K of the top-K divergences (recorded at rollout only when the rule needs it)."""
    std_norm: bool = True
    """Divide group advantages by the group's std (GRPO); false = mean-centering only (Dr. GRPO)."""
    adv_eps: float = 1.0e-6
    """Added to the group std before dividing."""
    minibatch_by: str = "group"
    """Mini-batches hold whole prompt groups (``group``; each prompt's forward is then shared by its
    samples) or single sequences (``sequence``), split at random."""
    engine: str = "hf"
    """Rollout engine (``hf``; ``hf_fast``/``vllm`` when installed)."""
    eval_every: int = 25
    """Periodic evaluation interval in rollout steps (0 = only at the end)."""
    eval_n: int = 128
    """Problems per split in periodic evaluation."""
    eval_splits: list[str] = field(default_factory=lambda: ["chain_id", "chain_ood"])
    """Splits evaluated periodically (greedy and sampled accuracy)."""
    save_every: int = 25
    """Checkpoint interval in rollout steps (0 = final checkpoint only)."""
    keep_checkpoints: int = 1
    """Step checkpoints kept on disk (oldest deleted first); ``final/`` is always kept."""
    max_bad_steps: int = 5
    """Stop after this many consecutive optimizer steps with a non-finite loss or gradient."""
    position_buckets: int = 8
    """Buckets of the per-position divergence/mask profile."""
    num_threads: int = 1
    """torch intra-op threads (1: two runs share two cores)."""
    attn_implementation: str = "sdpa"
    """Attention kernel of from-scratch models (``sdpa`` or ``eager``)."""
    recompute_old_logp: str = "auto"
    """π_old's forward pass before each rollout step's updates: ``auto`` skips it when neither the rule
    (its registered ``reads_old``) nor rollout correction reads π_old and μ samples with the trainer's
    own weights (``hf``/``hf_fast``, no lag, float32), computing it then only at evaluated steps, for
    ``rule/k3_old_mu``; ``always`` computes it every step (the same metrics, plus ``k3_old_mu`` at every
    step; docs/training.md)."""
    device: str = "cpu"
    """Where model, optimizer state and rollout tensors live: ``cpu``, ``cuda``, ``cuda:N``, or ``auto``
    (cuda when available, else cpu). Not part of a run's identity: a run may resume on another device."""
    rollout_correction: RolloutCorrectionConfig | None = None
    """Rollout correction of μ against π_old (IS weights, rejection), orthogonal to the rule; null: off
    (then it is left out of the resolved config, which stays what it was before the option existed)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first out-of-range value (the message names the key)."""
        from cppo.rules.aggregation import AGG_MODES  # the rules own the modes (torch: import on use)

        _require(self.steps >= 0, f"rl.steps must be >= 0, got {self.steps}")
        _require(self.prompts_per_rollout >= 1, "rl.prompts_per_rollout must be >= 1")
        _require(self.samples_per_prompt >= 2, "rl.samples_per_prompt must be >= 2 (group advantages need a group)")
        _require(1 <= self.updates_per_rollout <= self.prompts_per_rollout * self.samples_per_prompt,
                 "rl.updates_per_rollout must be in [1, prompts_per_rollout * samples_per_prompt]")
        _require(self.lr > 0, f"rl.lr must be > 0, got {self.lr}")
        _require(self.grad_clip is None or self.grad_clip > 0,
                 f"rl.grad_clip must be > 0 or null, got {self.grad_clip}")
        _require(self.staleness >= 0, f"rl.staleness must be >= 0, got {self.staleness}")
        _require(self.staleness_rollouts >= 0,
                 f"rl.staleness_rollouts must be >= 0, got {self.staleness_rollouts}")
        _require(not (self.staleness and self.staleness_rollouts),
                 "rl.staleness (optimizer steps) and rl.staleness_rollouts (rollouts) are exclusive: set one")
        _require(self.rollout_dtype in ROLLOUT_DTYPES,
                 f"rl.rollout_dtype must be one of {list(ROLLOUT_DTYPES)}, got {self.rollout_dtype!r}")
        _require(self.temperature > 0, f"rl.temperature must be > 0, got {self.temperature}")
        _require(0 < self.top_p <= 1, f"rl.top_p must be in (0, 1], got {self.top_p}")
        _require(self.max_new_tokens >= 1, "rl.max_new_tokens must be >= 1")
        _require(self.loss_agg in AGG_MODES,
                 f"rl.loss_agg must be one of {list(AGG_MODES)}, got {self.loss_agg!r}")
        _require(self.topk >= 1, "rl.topk must be >= 1")
        _require(self.eval_every >= 0 and self.save_every >= 0, "rl.eval_every and rl.save_every must be >= 0")
        _require(self.keep_checkpoints >= 1, "rl.keep_checkpoints must be >= 1")
        _require(self.max_bad_steps >= 1, "rl.max_bad_steps must be >= 1")
        _require(self.num_threads >= 1, "rl.num_threads must be >= 1")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                 "rl.betas must be two values in [0, 1)")
        _require(self.attn_implementation in ("sdpa", "eager"), "rl.attn_implementation must be 'sdpa' or 'eager'")
        _require(self.minibatch_by in ("group", "sequence"), "rl.minibatch_by must be 'group' or 'sequence'")
        _require(self.recompute_old_logp in RECOMPUTE_OLD_LOGP,
                 f"rl.recompute_old_logp must be one of {list(RECOMPUTE_OLD_LOGP)}, got {self.recompute_old_logp!r}")
        check_device(self.device, "rl.device")
        if self.rollout_correction is not None:
            self.rollout_correction.validate()


@dataclass
class MethodSpec:
    name: str
    """The method's name in the grid (e.g. ``grpo``)."""
    rule: str
    """The registered rule it runs (e.g. ``ppo_clip``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The rule's parameters as given in the config (defaults filled in by the rule)."""


@dataclass
class EvalConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["chain_id", "chain_ood"])
    """Benchmarks of the final evaluation (``cppo eval``)."""
    n: int = eval_defaults.N
    """Samples per problem (default: the protocol's, ``evals.defaults``)."""
    temperature: float = eval_defaults.TEMPERATURE
    """Sampling temperature."""
    top_p: float = eval_defaults.TOP_P
    """Nucleus mass."""
    max_tokens: int | None = None
    """Generation limit (None: each benchmark's own)."""
    every: int | None = None
    """Evaluation cadence in training steps: the weights of step 0 and of every multiple are kept under
    ``<run>/steps/step_<n>/`` and the pipeline scores each (the best checkpoint within [0, T_stop]);
    None: the final checkpoint only."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other keys of the section (owned by the evaluation/pipeline parts), kept as given."""


@dataclass
class GridConfig:
    methods: list[str] = field(default_factory=list)
    """Methods of the grid."""
    scales: list[str] = field(default_factory=list)
    """Scales of the grid."""
    seeds: list[int] = field(default_factory=lambda: [1])
    """Seeds of the grid."""
    settings: list[str] = field(default_factory=list)
    """Settings of the grid (names under ``settings``)."""
    runs_per_job: int = 1
    """Pipeline: seeds of one (setting, method, scale) trained and evaluated in one process (job), k at a
    time; 1 = one train and one evaluate job per run."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other keys of the section, kept as given."""


@dataclass
class Config:
    """A whole profile, after ``--set`` overrides, before choosing a run."""

    profile: str
    """Experiment name (MLflow experiment, ``results/<profile>/``)."""
    raw: dict[str, Any]
    """The YAML mapping after overrides (what is dumped, minus nothing)."""
    task: TaskConfig
    scales: dict[str, dict[str, Any]]
    """Scale name -> Qwen3Config kwargs, or ``{hub: <name>}``."""
    sft: dict[str, Any]
    """Raw ``sft`` section (may hold per-scale mappings; resolved by :func:`resolve_sft`)."""
    rl: dict[str, Any]
    """Raw ``rl`` section (may hold per-scale mappings; resolved by :func:`resolve_run`)."""
    settings: dict[str, dict[str, Any]]
    """Setting name -> ``rl`` overrides."""
    methods: dict[str, dict[str, Any]]
    """Method name -> ``{rule: <rule>, <param>: <value>, ...}``."""
    grid: GridConfig
    eval: EvalConfig
    data_dir: str | None = None
    """Benchmark data folder (``CPPO_DATA_DIR`` wins)."""
    backend: str = "builtin"
    """Trainer backend: ``builtin`` or ``verl``."""
    results_dir: str = "results"
    """Root of ``<profile>/runs`` and ``<profile>/base`` (relative to the working directory)."""

    def base_dir(self, scale: str) -> Path:
        """Where the scale's SFT base checkpoint lives: ``results/<profile>/base/scale~<s>/``."""
        return Path(self.results_dir) / self.profile / "base" / f"scale~{scale}"


@dataclass
class RunConfig:
    """Everything one RL run needs, fully resolved (written as the run's ``config.yaml``)."""

    profile: str
    method: MethodSpec
    scale: str
    seed: int
    setting: str
    task: TaskConfig
    model: dict[str, Any]
    """The scale's model shape (or hub name)."""
    rl: RLConfig
    eval: EvalConfig
    data_dir: str | None = None
    backend: str = "builtin"
    init: str | None = None
    """Checkpoint the run starts from (default: the scale's base checkpoint)."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["rl"].get("rollout_correction", 0) is None:
            del d["rl"]["rollout_correction"]
        d["eval"] = {**{k: v for k, v in d["eval"].items() if k != "extra"}, **d["eval"]["extra"]}
        return d


# --------------------------------------------------------------------------- loading
def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value; numeric strings like 3e-4 become floats).

    A key part that contains a dot (or ``=``) is quoted with ``"`` or ``'``:
    ``scales."1.7b".rl.steps=5`` -> (["scales", "1.7b", "rl", "steps"], 5). In a shell, quote the whole
    argument so the quotes reach us: ``--set 'scales."1.7b".rl.steps=5'``.
    """
    parts, value = _split_override(item)
    return parts, _coerce_number(yaml.safe_load(value) if value.strip() else None)


def _split_override(item: str) -> tuple[list[str], str]:
    """Split ``--set`` text into its key parts (dots outside quotes separate them) and the raw value
    (everything after the first ``=`` outside quotes). A quote must enclose a whole key part."""
    parts: list[str] = []
    cur, quoted, i, n = "", False, 0, len(item)
    while i < n:
        c = item[i]
        if c in "\"'" and cur == "" and not quoted:
            end = item.find(c, i + 1)
            if end < 0:
                raise ConfigError(f"--set {item!r}: unterminated quote {c} in the key")
            cur, quoted, i = item[i + 1:end], True, end + 1
            if i < n and item[i] not in ".=":
                raise ConfigError(f"--set {item!r}: a quoted key part must be followed by '.' or '='")
            continue
        if c in "\"'":
            raise ConfigError(f"--set {item!r}: a quote may only enclose a whole key part, e.g. scales.\"1.7b\".rl")
        if c in ".=":
            if not (cur if quoted else cur.strip()):
                raise ConfigError(f"--set: bad key {item.split('=', 1)[0]!r} (empty part)")
            parts.append(cur if quoted else cur.strip())
            cur, quoted = "", False
            if c == "=":
                return parts, item[i + 1:]
        else:
            cur += c
        i += 1
    raise ConfigError(f"--set expects key=value, got {item!r}")


def _coerce_number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v) if any(c in v.lower() for c in ".e") or v.lower() in ("inf", "-inf", "nan") else int(v)
        except ValueError:
            return v
    return v


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """A deep copy of ``raw`` with ``--set`` overrides applied (missing intermediate mappings created)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        parts, value = parse_override(item)
        node = raw
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a mapping")
            node = node[p]
        node[parts[-1]] = value
    return raw


def read_profile(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A profile YAML as a plain dict, with ``--set`` overrides applied and checked against the
    pipeline's JSON schema (:func:`cppo.schema.check_config`, the check Snakemake runs)."""
    from cppo.schema import check_config

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    raw = apply_overrides(raw, overrides)
    check_config(raw)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a profile YAML, apply ``--set`` overrides and check its structure."""
    return config_from_dict(read_profile(path, overrides), source=str(path))


def settings_of(raw: dict[str, Any]) -> list[str]:
    """The names of ``grid.settings`` (``["default"]`` when there are none)."""
    return [str(s) for s in raw["grid"].get("settings") or ["default"]]


def reference(raw: dict[str, Any]) -> tuple[str, str] | None:
    """(setting, method) of the on-policy reference rung (``grid.reference``), or None.

    The setting must be one of ``grid.settings``, and the method one of ``methods:``; whether the
    setting really is on-policy is checked by :func:`config_from_dict`. Here, in the config layer,
    because both the config checks and the report's grid (:mod:`cppo.report.grid`) read it."""
    ref = (raw.get("grid") or {}).get("reference")
    if not ref:
        return None
    setting, method = str(ref["setting"]), str(ref["method"])
    if setting not in settings_of(raw):
        raise ConfigError(f"grid.reference.setting: {setting!r} is not one of grid.settings {settings_of(raw)}")
    if method not in (raw.get("methods") or {}):
        raise ConfigError(f"grid.reference.method: unknown method {method!r}; "
                          f"defined: {sorted(raw.get('methods') or {})}")
    return setting, method


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    profile = raw.get("profile") or Path(source).stem
    scales = raw.get("scales") or {}
    if not isinstance(scales, dict) or not all(isinstance(v, dict) for v in scales.values()):
        raise ConfigError(f"{source}: `scales` must map scale names to model settings")
    settings = raw.get("settings") or {}
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ConfigError(f"{source}: `settings` must map setting names to rl overrides")
    methods = raw.get("methods") or {}
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ConfigError(f"{source}: `methods` must map method names to {{rule: ..., params}}")
    rl = dict(raw.get("rl") or {})
    sft = dict(raw.get("sft") or {})
    _check_keys(rl, RLConfig, "rl")
    _check_keys(sft, SFTConfig, "sft")
    for sname, s in settings.items():
        _check_keys(s, RLConfig, f"settings.{sname}")
    grid_raw = dict(raw.get("grid") or {})
    grid = GridConfig(**{k: grid_raw.pop(k) for k in ("methods", "scales", "seeds", "settings", "runs_per_job")
                         if k in grid_raw},
                      extra=grid_raw)
    eval_raw = dict(raw.get("eval") or {})
    evalc = _build(EvalConfig, {k: eval_raw.pop(k) for k in ("benchmarks", "n", "temperature", "top_p", "max_tokens",
                                                        "every") if k in eval_raw}, "eval")
    if evalc.every is not None and evalc.every < 1:
        raise ConfigError(f"eval.every must be >= 1 (training steps) or null, got {evalc.every}")
    evalc.extra = eval_raw
    cfg = Config(
        profile=str(profile), raw=raw, task=_build(TaskConfig, dict(raw.get("task") or {}), "task"),
        scales=scales, sft=sft, rl=rl, settings=settings, methods=methods, grid=grid, eval=evalc,
        data_dir=raw.get("data_dir"), backend=raw.get("backend", "builtin"),
        results_dir=raw.get("results_dir", "results"),
    )
    if cfg.backend not in ("builtin", "verl"):
        raise ConfigError(f"backend must be 'builtin' or 'verl', got {cfg.backend!r}")
    if grid.runs_per_job > 1 and cfg.backend != "builtin":
        raise ConfigError(f"grid.runs_per_job {grid.runs_per_job}: several runs per job need the builtin "
                          f"backend (a {cfg.backend} run is a job of its own); set it to 1")
    for name in grid.scales:
        if name not in scales:
            raise ConfigError(f"grid.scales: unknown scale {name!r}; defined: {sorted(scales)}")
    for name in grid.settings:
        if name not in settings:
            raise ConfigError(f"grid.settings: unknown setting {name!r}; defined: {sorted(settings)}")
    ref = reference(raw)  # (setting, method) of the on-policy rung, names checked there
    if ref:
        dflt = RLConfig()
        for sc in grid.scales or list(scales):
            rl_ref = _pick_scale({**rl, **(settings.get(ref[0]) or {})}, sc, scales, "rl")
            if any(rl_ref.get(k, getattr(dflt, k)) != want
                   for k, want in (("updates_per_rollout", 1), ("staleness", 0), ("staleness_rollouts", 0))):
                raise ConfigError(f"grid.reference.setting {ref[0]!r} is not on-policy: it needs updates_per_rollout 1 "
                                  "and no staleness, so that every rule reduces to the policy gradient")
    return cfg


# --------------------------------------------------------------------------- resolving
def resolve_method(cfg: Config, method: str) -> MethodSpec:
    """The method's rule and params; a bare registered rule name works without a ``methods`` entry."""
    from cppo.rules import list_rules

    if method in cfg.methods:
        entry = dict(cfg.methods[method])
        rule = entry.pop("rule", method)
        return MethodSpec(name=method, rule=str(rule), params=entry)
    if method in list_rules():
        return MethodSpec(name=method, rule=method, params={})
    raise ConfigError(f"unknown method {method!r}; methods of this profile: {sorted(cfg.methods)}; "
                      f"registered rules (usable by name): {list_rules()}")


def build_rule(spec: MethodSpec):
    """Instantiate the method's rule (raises ConfigError naming the method on a bad rule/param)."""
    from cppo.rules import get_rule

    try:
        return get_rule(spec.rule, **spec.params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"method {spec.name!r}: {e}") from e


def resolve_run(cfg: Config, method: str, scale: str, seed: int, setting: str | None = None,
                steps: int | None = None, init: str | None = None) -> RunConfig:
    """Resolve one (method, scale, seed, setting) run and validate it (no side effects)."""
    if scale not in cfg.scales:
        raise ConfigError(f"unknown scale {scale!r}; scales of this profile: {sorted(cfg.scales)}")
    if setting is not None and setting not in cfg.settings:
        raise ConfigError(f"unknown setting {setting!r}; settings of this profile: {sorted(cfg.settings)}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    spec = resolve_method(cfg, method)
    build_rule(spec)  # validates the rule name and its parameters now, before any work
    rl_raw = {**cfg.rl, **(cfg.settings.get(setting) or {})}
    if steps is not None:
        rl_raw["steps"] = steps
    rl = _build(RLConfig, _pick_scale(rl_raw, scale, cfg.scales, "rl"), "rl")
    rl.validate()
    return RunConfig(profile=cfg.profile, method=spec, scale=scale, seed=seed, setting=setting or "default",
                     task=cfg.task, model=dict(cfg.scales[scale]), rl=rl, eval=cfg.eval,
                     data_dir=cfg.data_dir, backend=cfg.backend, init=init)


def resolve_sft(cfg: Config, scale: str, steps: int | None = None) -> SFTConfig:
    """The SFT settings of a scale (per-scale mappings picked, ``--steps`` caps max_steps)."""
    if scale not in cfg.scales:
        raise ConfigError(f"unknown scale {scale!r}; scales of this profile: {sorted(cfg.scales)}")
    raw = dict(cfg.sft)
    if steps is not None:
        raw["max_steps"] = steps
    sft = _build(SFTConfig, _pick_scale(raw, scale, cfg.scales, "sft"), "sft")
    sft.validate()
    return sft


def check_device(spec: str, where: str = "rl.device") -> None:
    """The syntax of a device setting (availability is checked by :func:`cppo.train.device.resolve_device`,
    when a run starts: validating a profile must not need torch or a GPU)."""
    _require(re.fullmatch(r"cpu|auto|cuda(:\d+)?", spec) is not None,
             f"{where} must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {spec!r}")


def dump_yaml(d: dict[str, Any], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(d, f, sort_keys=False)


# --------------------------------------------------------------------------- helpers
def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _check_keys(d: dict[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def _pick_scale(d: dict[str, Any], scale: str, scales: dict[str, Any], where: str) -> dict[str, Any]:
    """Replace per-scale mappings ``{s: .., m: ..}`` by the value for ``scale``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and set(v) <= set(scales):
            if scale not in v:
                raise ConfigError(f"{where}.{k}: no value for scale {scale!r} (given for {sorted(v)})")
            v = v[scale]
        out[k] = v
    return out


def _build(cls: type, d: dict[str, Any], where: str):
    """Instantiate a section dataclass with type coercion and clear errors."""
    _check_keys(d, cls, where)
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in d.items():
        kw[k] = _coerce(v, hints[k], f"{where}.{k}")
    return cls(**kw)


def _coerce(v: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if v is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where}: may not be null")
    if len([a for a in args if a is not type(None)]) > 1:  # e.g. str | float: the section's validate() checks it
        return v
    base = next((a for a in args if a is not type(None)), tp) if args and type(None) in args else tp
    if dataclasses.is_dataclass(base):
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: expected a mapping, got {v!r}")
        return _build(base, v, where)
    origin = typing.get_origin(base)
    v = _coerce_number(v) if base in (int, float) else v
    if base is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {v!r}")
        return float(v)
    if base is int:
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {v!r}")
        return int(v)
    if base is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: expected true/false, got {v!r}")
        return v
    if base is str:
        if not isinstance(v, str):
            raise ConfigError(f"{where}: expected a string, got {v!r}")
        return v
    if origin is list:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {v!r}")
        (item_tp,) = typing.get_args(base) or (Any,)
        return [v_ if item_tp is Any else _coerce(v_, item_tp, where) for v_ in v]
    return v
