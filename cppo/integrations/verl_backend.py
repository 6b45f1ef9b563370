"""`cppo verl-cmd`: the verl (==0.9.1) command line of one run of a profile with `backend: verl`.

Why generate, not wrap: verl is driven by Hydra overrides of `python -m verl.trainer.main_ppo`; one
explicit, reviewable command per run (printed, or written as a script for a SLURM job) keeps the
paper profile reproducible outside this package, and the golden tests pin every key that matters.

What the command encodes (keys checked against verl 0.9.1's `trainer/config/_generated_ppo_trainer.yaml`):
- model: `scales.<s>.hub` (or `scales.<s>.path`) -> actor_rollout_ref.model.path;
- data: `<data_dir>/<train_source>.parquet` and one `<benchmark>.parquet` per eval benchmark, written by
  `cppo prepare-data` (the pipeline's prepare rule); max prompt length; reward = math-verify
  (`cppo.integrations.verl.compute_score`), the same check as `cppo eval`;
- batch sizes (paper Table 3): data.train_batch_size = rl.prompts_per_rollout, rollout.n =
  rl.samples_per_prompt, ppo_mini_batch_size = prompts_per_rollout / updates_per_rollout (verl counts
  mini-batches in prompts), one pass (ppo_epochs = 1), max response length = rl.max_new_tokens;
- optimiser: AdamW lr, weight decay, betas, gradient clipping (`null` -> a 1e9 bound: off);
- the rule: actor policy_loss.loss_mode = `cppo` / `cppo_<rule>` (our plugin, cppo.integrations.verl)
  with its parameters in policy_loss.rule_params (config class CPPOPolicyLossConfig); loss
  aggregation and, for `seq-mean-token-sum-norm`, loss_scale_factor = max response length;
- the anchor: algorithm.rollout_correction.bypass_mode=true, so `old_log_prob` in the loss is the
  rollout engine's log-prob μ (calculate_log_probs=true), with no IS re-weighting or rejection;
- GRPO advantages (std normalisation from rl.std_norm), no KL loss / KL reward / entropy bonus;
  groups with zero reward variance are skipped (algorithm.filter_groups on the reward);
- seeds (data shuffle, actor data loader, rollout, FSDP), checkpoint cadence (rl.save_every, with
  Hugging Face weights saved beside the shards) and retention (rl.keep_checkpoints ->
  trainer.max_actor_ckpt_to_keep), validation cadence (rl.eval_every) with the profile's eval sampling
  (n, temperature, top-p);
- resume: checkpoints in `<run_dir>/checkpoints` (trainer.default_local_dir) and
  trainer.resume_mode=auto, so a re-submitted job (SLURM preemption, time limit, `verl.retries`)
  continues from the step that `latest_checkpointed_iteration.txt` names (verl writes it after a
  checkpoint is complete); the script says which step it resumes from and skips verl when the last
  checkpoint is already the final step;
- intermediate weights (`eval.every`): verl keeps only `rl.keep_checkpoints` checkpoints, so the script
  hard-links (`cp -al`) the HF weights of every complete checkpoint whose step is a multiple of
  `eval.every` to `<run_dir>/steps/step_<n>` while verl runs and once more after it (see
  `VerlCommand.script`); step 0 has no checkpoint (the pipeline evaluates the base model for it);
- MLflow: trainer.logger=[console,mlflow], MLFLOW_TRACKING_URI = our store, experiment = profile,
  run name = `<setting>/<method>/<scale>/seed<k>`; with a run folder the child run is created first by
  `cppo.tracking.start_child` and verl attaches to it through MLFLOW_RUN_ID (verl 0.9.1 honours it).

Where values come from (lowest first): the `rl` section, `scales.<s>.rl` (per-model Table 3 values),
the chosen setting, `--set`; method parameters from `methods.<m>` then `scales.<s>.methods.<m>`;
cluster settings from `verl` then `scales.<s>.verl` (see `VerlSettings`).

Top-K divergences: verl records no top-K log-probs of μ, so a method using `topk_tv`/`topk_kl` runs
with the binary counterpart and the command says so (`verl.topk_fallback: error` refuses instead).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

VERL_VERSION = "0.9.1"
VERL_PIP = f"verl=={VERL_VERSION}"
ENTRYPOINT = ("-m", "verl.trainer.main_ppo")  # after the interpreter (VerlSettings.python)
GRAD_CLIP_OFF = 1.0e9


@dataclass
class VerlSettings:
    """The `verl` section of a profile (and `scales.<s>.verl` per model): cluster and engine settings."""

    data_dir: Optional[str] = None
    """Folder of the prepared parquet files; default `<results_dir>/<profile>/data`."""
    train_source: str = "dapo-math-17k"
    """Training set name (`<data_dir>/<train_source>.parquet`, written by `cppo prepare-data`)."""
    val_sources: Optional[list[str]] = None
    """Validation set names; default the profile's `eval.benchmarks`."""
    max_prompt_length: int = 1024
    """Prompt token limit (longer prompts are filtered out)."""
    rollout_engine: str = "vllm"
    """verl rollout engine: vllm or sglang."""
    nnodes: int = 1
    """Nodes of the run."""
    n_gpus_per_node: int = 8
    """GPUs per node."""
    rollout_tp: int = 1
    """Tensor-parallel size of the rollout engine."""
    gpu_memory_utilization: float = 0.6
    """Fraction of GPU memory the rollout engine may take."""
    max_token_len_per_gpu: Optional[int] = None
    """Token budget of one micro-batch (dynamic batch size); default 2 × (prompt + response limits)."""
    param_offload: bool = False
    """FSDP parameter offload to CPU (large models)."""
    optimizer_offload: bool = False
    """FSDP optimizer-state offload to CPU."""
    filter_zero_variance: bool = True
    """Skip prompt groups whose rewards are all equal (the paper's protocol)."""
    hf_checkpoints: bool = True
    """Also save Hugging Face weights in each checkpoint (for `cppo eval`)."""
    val_before_train: bool = True
    """Validate the initial model (step 0 of the eval curve)."""
    topk_fallback: str = "binary"
    """A top-K divergence under verl: `binary` (use binary TV/KL, noted in the output) or `error`."""
    time_limit: Optional[str] = None
    """SLURM time limit of one run (e.g. `48:00:00`), for the pipeline's resources."""
    retries: int = 5
    """Times the pipeline re-submits a failed, preempted or timed-out run; each attempt resumes from the
    run's last complete checkpoint (`trainer.resume_mode=auto`), so a retry repeats at most
    `rl.save_every` steps. The train rule takes the largest value over the grid's scales."""
    extra_overrides: list[str] = field(default_factory=list)
    """Hydra overrides appended verbatim (they win over the generated ones)."""
    python: str = "python3"
    """Interpreter of the verl environment on the cluster (verl[vllm]==0.9.1 plus this package)."""
    ray_port: int = 6379
    """Port of the Ray head that the script starts on multi-node SLURM jobs (nnodes > 1)."""


@dataclass
class VerlCommand:
    """One generated run: environment, argv and what the reader should know."""

    argv: list[str]
    """`<python> -m verl.trainer.main_ppo` and its Hydra overrides."""
    env: dict[str, str]
    """Environment variables the command needs (MLflow store and run)."""
    run_dir: Path
    """The run folder (checkpoints under `checkpoints/`, HF weights linked as `final`)."""
    notes: list[str] = field(default_factory=list)
    """Deviations and facts worth a comment line (e.g. a top-K divergence replaced by binary)."""
    settings: Optional[VerlSettings] = None
    """The resolved cluster settings."""
    keep_every: Optional[int] = None
    """`eval.every`: keep the HF weights of every multiple of it as `steps/step_<n>` (None: none kept)."""

    @property
    def overrides(self) -> list[str]:
        return self.argv[1 + len(ENTRYPOINT):]

    def override_map(self) -> dict[str, str]:
        """key -> value of the Hydra overrides (a leading `+` kept in the key)."""
        return dict(o.split("=", 1) for o in self.overrides)

    def shell(self) -> str:
        """The command as one shell line per override (env assignments first)."""
        env = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        head = self.argv[:1 + len(ENTRYPOINT)]
        parts = [" ".join(env + [shlex.quote(a) for a in head])] + [shlex.quote(o) for o in self.overrides]
        return " \\\n    ".join(parts)

    def script(self) -> str:
        """A bash script: notes, resume check, the verl run, then `final` -> the last checkpoint's HF
        weights, `done`.

        The script is what a (re-submitted) pipeline job runs. verl itself resumes (resume_mode=auto
        with the run's checkpoint folder); the script reports the step it resumes from and, when the last
        complete checkpoint already is the final step, links it without starting verl (and Ray) again.

        With `keep_every` (eval.every) a background loop (every CPPO_HARVEST_EVERY_S seconds, default 60)
        hard-links `global_step_<m>/actor/huggingface` to `steps/step_<m>` for each multiple m of it up to
        the step the tracker names, and one more pass runs after verl (or instead of it) and on every
        re-submission. Why that is race-free enough: step m is complete once the tracker names >= m, and
        with retention K >= 2 verl deletes m only when it starts saving m + K·save_freq (keeping K-1
        checkpoints before a save), so the harvest has K-1 >= 1 whole save intervals (many minutes)
        against a 60 s poll, and the checkpoint the tracker names is never the one being deleted; with
        K = 1 verl deletes m right after saving m + save_freq, before the tracker moves on (so
        `verl_command` refuses that). verl never prunes the checkpoints of an earlier attempt (its list
        of saved paths starts empty), so a retry harvests what a killed attempt left. A linked step is
        never rewritten: verl re-saves only steps after the tracker. Step 0 has no checkpoint: verl saves
        none before training, and the pipeline evaluates the base model for it.
        """
        q = shlex.quote
        ckpt = self.run_dir / "checkpoints"
        steps = int(self.override_map().get("trainer.total_training_steps", "0"))
        lines = ["#!/usr/bin/env bash", f"# generated by `cppo verl-cmd` for {VERL_PIP}", "set -euo pipefail"]
        lines += [f"# NOTE: {n}" for n in self.notes]
        lines += [
            f"mkdir -p {q(str(self.run_dir))}",
            f"ckpt={q(str(ckpt))}",
        ]
        if self.keep_every:
            lines += _harvest_lines(self.run_dir / "steps", self.keep_every)
        lines += [
            "# resume: verl continues from the step its tracker file names (written once a checkpoint is complete)",
            "last=0",
            'if [ -f "$ckpt/latest_checkpointed_iteration.txt" ]; then',
            '    last=$(cat "$ckpt/latest_checkpointed_iteration.txt")',
            '    echo "cppo: resuming from $ckpt/global_step_$last (trainer.resume_mode=auto)" >&2',
            'elif compgen -G "$ckpt/global_step_*" > /dev/null; then',
            '    echo "cppo: warning: global_step_* in $ckpt but no complete checkpoint: starting from step 0" >&2',
            "else",
            '    echo "cppo: no checkpoint yet: starting from step 0" >&2',
            "fi",
            f'if [ "$last" -ge {steps} ]; then',
            f'    echo "cppo: the last checkpoint is the final step {steps}: not starting verl" >&2',
            "else",
        ]
        body = []
        if self.settings is not None and self.settings.nnodes > 1:
            body += _ray_cluster_lines(self.settings)
        if self.keep_every:
            body += ["harvest_loop &", "harvester=$!", "trap stop_harvest EXIT"]
        body += self.shell().split("\n")
        if self.keep_every:
            body += ["stop_harvest", "trap - EXIT"]
        lines += ["    " + b for b in body]
        lines += ["fi"]
        if self.keep_every:
            lines += ["harvest final"]
        lines += [
            'step=$(cat "$ckpt/latest_checkpointed_iteration.txt")',
            f'ln -sfn "$ckpt/global_step_${{step}}/actor/huggingface" {q(str(self.run_dir / "final"))}',
            f"touch {q(str(self.run_dir / 'done'))}",
        ]
        return "\n".join(lines) + "\n"


def _harvest_lines(steps_dir: Path, every: int) -> list[str]:
    """Bash functions that keep the HF weights of complete checkpoints at multiples of `every` as
    `<steps_dir>/step_<n>` by hard link (no bytes copied): `harvest` (one pass, safe to repeat),
    `harvest_loop` (a pass every $CPPO_HARVEST_EVERY_S s until TERM), `stop_harvest`."""
    return [
        f"# keep the HF weights of every step that is a multiple of eval.every={every} before verl prunes them",
        f"steps={shlex.quote(str(steps_dir))}",
        f"every={every}",
        'harvest_every="${CPPO_HARVEST_EVERY_S:-60}"',
        "harvest() {  # one pass; `harvest final` also names the steps it could not keep",
        "    local last d m n",
        '    last=$(cat "$ckpt/latest_checkpointed_iteration.txt" 2>/dev/null) || return 0',
        '    case "$last" in ""|*[!0-9]*) return 0;; esac  # none yet, or read while verl rewrites it',
        '    mkdir -p "$steps"',
        '    for d in "$ckpt"/global_step_*; do',
        '        m="${d##*/global_step_}"',
        '        case "$m" in ""|*[!0-9]*) continue;; esac',
        # a step above the tracker may be a save in progress; a linked step is never rewritten
        '        if [ "$m" -gt "$last" ] || [ $((10#$m % every)) -ne 0 ] || [ -e "$steps/step_$m" ] \\',
        '            || [ ! -d "$d/actor/huggingface" ]; then continue; fi',
        '        rm -rf "$steps/.step_$m.tmp"  # left by a pass that was killed',
        # atomic: a step_<n> folder is always whole
        '        if cp -al "$d/actor/huggingface" "$steps/.step_$m.tmp" \\',
        '            && mv -T "$steps/.step_$m.tmp" "$steps/step_$m"; then',
        '            echo "cppo: kept the HF weights of step $m as $steps/step_$m (hard links)" >&2',
        "        else",
        '            rm -rf "$steps/.step_$m.tmp"',
        '            echo "cppo: warning: could not keep the HF weights of step $m" >&2',
        "        fi",
        "    done",
        '    if [ "${1:-}" = final ]; then',
        "        for ((n = every; n <= last; n += every)); do",
        '            [ -e "$steps/step_$n" ] || echo "cppo: warning: no HF weights kept for step $n' +
        ' ($ckpt/global_step_$n/actor/huggingface is gone)" >&2',
        "        done",
        "    fi",
        "    return 0",
        "}",
        "harvest_loop() {  # TERM ends it between passes, so no cp is cut short",
        "    local stop=0 nap=",
        '    trap \'stop=1; [ -z "$nap" ] || kill "$nap" 2>/dev/null || true\' TERM',
        '    while [ "$stop" = 0 ]; do',
        "        harvest || true",
        '        [ "$stop" = 0 ] || break',
        '        sleep "$harvest_every" & nap=$!',
        '        wait "$nap" || true',
        "    done",
        "}",
        'stop_harvest() { kill "$harvester" 2>/dev/null || true; wait "$harvester" 2>/dev/null || true; }',
    ]


def _ray_cluster_lines(s: VerlSettings) -> list[str]:
    """Start a Ray cluster over the nodes of the SLURM allocation (head on the first node), so that
    verl's `ray.init()` finds it through RAY_ADDRESS. The usual Ray-on-SLURM recipe."""
    n, g, port = s.nnodes, s.n_gpus_per_node, s.ray_port
    return [
        f"# multi-node: {n} nodes x {g} GPUs in one SLURM allocation; Ray head on the first node",
        # snakemake's SLURM job step drops SLURM_* (node list, CPUs per task) from the job's environment but
        # keeps SLURM_JOB_ID: read them from the job; a step without -c would give Ray one CPU per node
        'nodelist=${SLURM_JOB_NODELIST:-$(squeue -h -j "${SLURM_JOB_ID:?not inside a SLURM job}" -o %N)}',
        'nodes=($(scontrol show hostnames "$nodelist"))',
        f'if [ "${{#nodes[@]}}" -lt {n} ]; then echo "this run needs {n} nodes, the allocation has ${{#nodes[@]}}" >&2; '
        'exit 1; fi',
        'cpus=$(scontrol show job "$SLURM_JOB_ID" | grep -o "CPUs/Task=[0-9]*" | cut -d= -f2 || true)',
        'onenode="srun --nodes=1 --ntasks=1 --cpus-per-task=${cpus:-1}"',
        'head_ip=$($onenode -w "${nodes[0]}" hostname --ip-address | awk \'{print $1}\')',
        f'$onenode -w "${{nodes[0]}}" ray start --head --node-ip-address="$head_ip" '
        f'--port={port} --num-gpus={g} --block &',
        "sleep 15",
        f'for node in "${{nodes[@]:1:{n - 1}}}"; do $onenode -w "$node" ray start '
        f'--address="$head_ip:{port}" --num-gpus={g} --block & done',
        "sleep 15",
        f'export RAY_ADDRESS="$head_ip:{port}"',
    ]


# --------------------------------------------------------------------------- value formatting
def hydra_value(v: Any) -> str:
    """A Python value as a Hydra override value (null, true/false, numbers, [a,b], quoted odd strings)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    s = str(v)
    # Hydra's grammar takes bare [A-Za-z0-9_-./:@]; anything else (e.g. the `~` of run folders) is quoted
    if s and all(c.isalnum() or c in "_-./:@" for c in s) and s.lower() not in ("null", "true", "false"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _merge(base: dict, over: Optional[dict]) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = copy.deepcopy(v)
    return out


def _settings(cfg, scale: str) -> VerlSettings:
    return settings_for(cfg.raw, scale)


def settings_for(profile: dict, scale: str) -> VerlSettings:
    """The cluster settings of `scale` in a raw profile dict: `verl`, then `scales.<scale>.verl`.

    Also what the pipeline reads for a run's SLURM resources (nodes, GPUs) and retries.
    """
    scales = profile.get("scales") or {}
    if scale not in scales:
        raise ValueError(f"unknown scale {scale!r}; scales of this profile: {sorted(scales)}")
    raw = _merge(profile.get("verl") or {}, ((scales[scale] or {}).get("verl") or {}))
    known = {f.name for f in dataclasses.fields(VerlSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"verl settings: unknown key(s) {unknown}; known: {sorted(known)}")
    s = VerlSettings(**raw)
    if s.topk_fallback not in ("binary", "error"):
        raise ValueError(f"verl.topk_fallback must be 'binary' or 'error', got {s.topk_fallback!r}")
    if s.rollout_engine not in ("vllm", "sglang"):
        raise ValueError(f"verl.rollout_engine must be 'vllm' or 'sglang', got {s.rollout_engine!r}")
    if isinstance(s.retries, bool) or not isinstance(s.retries, int) or s.retries < 0:
        raise ValueError(f"verl.retries must be an integer >= 0, got {s.retries!r}")
    return s


def resolve(cfg, method: str, scale: str, seed: int, setting: Optional[str] = None):
    """The RunConfig of the run with `scales.<s>.rl` and `scales.<s>.methods.<m>` merged in."""
    from cppo.config import resolve_run

    if scale not in cfg.scales:
        raise ValueError(f"unknown scale {scale!r}; scales of this profile: {sorted(cfg.scales)}")
    sc = cfg.scales[scale]
    methods = copy.deepcopy(cfg.methods)
    for m, over in (sc.get("methods") or {}).items():
        if m not in methods:
            raise ValueError(f"scales.{scale}.methods: unknown method {m!r}; methods: {sorted(methods)}")
        methods[m] = _merge(methods[m], over)
    scaled = dataclasses.replace(cfg, rl=_merge(cfg.rl, sc.get("rl")), methods=methods)
    return resolve_run(scaled, method, scale, seed, setting)


def default_run_dir(cfg, run) -> Path:
    """`<results_dir>/<profile>/runs/setting~<x>/method~<m>/scale~<s>/seed~<k>` (docs/contracts.md §Runs)."""
    return (Path(cfg.results_dir) / cfg.profile / "runs" / f"setting~{run.setting}" / f"method~{run.method.name}"
            / f"scale~{run.scale}" / f"seed~{run.seed}")


def verl_command(cfg, method: str, scale: str, seed: int, setting: Optional[str] = None,
                 run_dir: Optional[str | Path] = None, mlflow_run_id: Optional[str] = None,
                 tracking_uri: Optional[str] = None) -> VerlCommand:
    """Build the verl command of one run (pure: no files, no MLflow calls).

    Args:
        cfg: a loaded profile (`cppo.config.load_config`).
        method, scale, seed, setting: the run.
        run_dir: the run folder (default: the docs/contracts.md §Runs path under the profile's results).
        mlflow_run_id: attach verl's MLflow logger to this existing run (MLFLOW_RUN_ID).
        tracking_uri: MLflow store (default `cppo.tracking.tracking_uri(cfg.results_dir)`).
    """
    from cppo.integrations.verl import CONFIG_TARGET, verl_loss_name
    from cppo.rules import get_rule

    run = resolve(cfg, method, scale, seed, setting)
    s = _settings(cfg, scale)
    rl, ev, sc = run.rl, run.eval, cfg.scales[scale]
    notes: list[str] = []
    model = sc.get("hub") or sc.get("path")
    if not model:
        raise ValueError(f"scales.{scale}: the verl backend needs `hub` (a Hugging Face model id) or `path`")
    if rl.prompts_per_rollout % rl.updates_per_rollout:
        raise ValueError(f"rl.prompts_per_rollout={rl.prompts_per_rollout} is not divisible by "
                         f"rl.updates_per_rollout={rl.updates_per_rollout} (verl mini-batches are whole prompts)")
    mini = rl.prompts_per_rollout // rl.updates_per_rollout
    keep_every = _keep_every(cfg.eval.every, rl, s, scale)
    gpus = s.nnodes * s.n_gpus_per_node
    if (mini * rl.samples_per_prompt) % gpus:
        notes.append(f"mini-batch of {mini * rl.samples_per_prompt} sequences does not split evenly over {gpus} GPUs")

    # the rule and its parameters (top-K divergences are unavailable under verl)
    params = dict(run.method.params)
    rule = get_rule(run.method.rule, **params)
    div = rule.params.get("divergence")
    if isinstance(div, str) and div.startswith("topk"):
        if s.topk_fallback == "error":
            raise ValueError(f"method {method!r} uses divergence {div!r}; verl has no top-K log-probs of the "
                             "rollout policy (set verl.topk_fallback: binary to run the binary counterpart)")
        params["divergence"] = div.replace("topk", "binary")
        notes.append(f"method {method!r}: divergence {div} -> {params['divergence']} (verl records no top-K "
                     "log-probs of the rollout policy)")
        rule = get_rule(run.method.rule, **params)
    if rl.rollout_correction is not None:  # it compares μ with π_old, which bypass mode makes equal
        raise ValueError("rl.rollout_correction is a builtin-trainer option: the verl backend runs verl's bypass "
                         "mode (old_log_prob = the rollout log-prob μ), where μ and π_old coincide; for verl's own "
                         "decoupled rollout correction pass algorithm.rollout_correction.* in verl.extra_overrides")
    if "anchor" in rule.params and rule.params["anchor"] != "rollout":
        notes.append(f"method {method!r}: anchor {rule.params['anchor']!r} is ignored under verl: with "
                     "bypass mode old_log_prob is the rollout log-prob μ")

    # absolute paths: Ray workers do not share the launching shell's working directory
    data_dir = Path(s.data_dir if s.data_dir else Path(cfg.results_dir) / cfg.profile / "data").absolute()
    val = s.val_sources if s.val_sources is not None else list(ev.benchmarks)
    run_dir = Path(run_dir if run_dir else default_run_dir(cfg, run)).absolute()
    max_tok = s.max_token_len_per_gpu or 2 * (s.max_prompt_length + rl.max_new_tokens)
    run_name = f"{run.setting}/{run.method.name}/{scale}/seed{seed}"
    a, r, t = "actor_rollout_ref.actor", "actor_rollout_ref.rollout", "trainer"
    ov: list[tuple[str, Any]] = [
        ("algorithm.adv_estimator", "grpo"),
        ("algorithm.norm_adv_by_std_in_grpo", bool(rl.std_norm)),
        ("algorithm.use_kl_in_reward", False),
        ("algorithm.rollout_correction.bypass_mode", True),
        ("algorithm.rollout_correction.rollout_is", None),
        ("algorithm.rollout_correction.rollout_rs", None),
        ("algorithm.filter_groups.enable", bool(s.filter_zero_variance)),
    ]
    if s.filter_zero_variance:
        ov.append(("algorithm.filter_groups.metric", "reward"))
    ov += [
        ("data.train_files", str(data_dir / f"{s.train_source}.parquet")),
        ("data.val_files", [str(data_dir / f"{v}.parquet") for v in val]),
        ("data.prompt_key", "prompt"),
        ("data.max_prompt_length", s.max_prompt_length),
        ("data.max_response_length", rl.max_new_tokens),
        ("data.train_batch_size", rl.prompts_per_rollout),
        ("data.filter_overlong_prompts", True),
        ("data.truncation", "error"),
        ("data.seed", seed),
        ("actor_rollout_ref.model.path", model),
        (f"{a}.optim.lr", float(rl.lr)),
        (f"{a}.optim.weight_decay", float(rl.weight_decay)),
        (f"{a}.optim.betas", [float(b) for b in rl.betas]),
        (f"{a}.optim.clip_grad", float(rl.grad_clip) if rl.grad_clip is not None else GRAD_CLIP_OFF),
        (f"{a}.ppo_mini_batch_size", mini),
        (f"{a}.ppo_epochs", 1),
        (f"{a}.use_dynamic_bsz", True),
        (f"{a}.ppo_max_token_len_per_gpu", max_tok),
        (f"{a}.use_kl_loss", False),
        (f"{a}.entropy_coeff", 0),
        (f"{a}.loss_agg_mode", rl.loss_agg),
    ]
    if rl.loss_agg == "seq-mean-token-sum-norm":
        ov.append((f"{a}.loss_scale_factor", rl.max_new_tokens))
    ov += [
        (f"{a}.policy_loss._target_", CONFIG_TARGET),
        (f"{a}.policy_loss.loss_mode", verl_loss_name(run.method.rule)),
    ]
    ov += [(f"+{a}.policy_loss.rule_params.{k}", v) for k, v in params.items()]
    ov += [
        (f"{a}.data_loader_seed", seed),
        (f"{a}.fsdp_config.seed", seed),
        (f"{a}.fsdp_config.param_offload", bool(s.param_offload)),
        (f"{a}.fsdp_config.optimizer_offload", bool(s.optimizer_offload)),
        (f"{a}.checkpoint.save_contents",
         ["model", "optimizer", "extra"] + (["hf_model"] if s.hf_checkpoints else [])),
        (f"{r}.name", s.rollout_engine),
        (f"{r}.n", rl.samples_per_prompt),
        (f"{r}.temperature", float(rl.temperature)),
        (f"{r}.top_p", float(rl.top_p)),
        (f"{r}.calculate_log_probs", True),
        (f"{r}.tensor_model_parallel_size", s.rollout_tp),
        (f"{r}.gpu_memory_utilization", float(s.gpu_memory_utilization)),
        (f"{r}.seed", seed),
        (f"{r}.val_kwargs.n", ev.n),
        (f"{r}.val_kwargs.temperature", float(ev.temperature)),
        (f"{r}.val_kwargs.top_p", float(ev.top_p)),
        (f"{r}.val_kwargs.do_sample", True),
        ("reward.custom_reward_function.path", "pkg://cppo.integrations.verl"),
        ("reward.custom_reward_function.name", "compute_score"),
        (f"{t}.logger", ["console", "mlflow"]),
        (f"{t}.project_name", cfg.profile),
        (f"{t}.experiment_name", run_name),
        (f"{t}.nnodes", s.nnodes),
        (f"{t}.n_gpus_per_node", s.n_gpus_per_node),
        (f"{t}.total_training_steps", rl.steps),
        (f"{t}.total_epochs", 1000),  # the step count ends the run, not the epoch count
        (f"{t}.save_freq", rl.save_every if rl.save_every > 0 else rl.steps),
        (f"{t}.test_freq", rl.eval_every if rl.eval_every > 0 else rl.steps),
        (f"{t}.val_before_train", bool(s.val_before_train)),
        (f"{t}.default_local_dir", str(run_dir / "checkpoints")),
        (f"{t}.resume_mode", "auto"),  # continue from latest_checkpointed_iteration.txt when it exists
        (f"{t}.max_actor_ckpt_to_keep", rl.keep_checkpoints),
        # the v1 trainer (verl 0.9.1's default) only swaps old_log_prob for the rollout log-prob in bypass
        # mode; the legacy one also rewrites loss_mode on the driver, so pin v1
        (f"{t}.use_v1", True),
    ]
    argv = [s.python, *ENTRYPOINT] + [f"{k}={hydra_value(v)}" for k, v in ov] + list(s.extra_overrides)
    if tracking_uri is None:
        from cppo.tracking import tracking_uri as _uri

        tracking_uri = _uri(cfg.results_dir)
    env = {"MLFLOW_TRACKING_URI": tracking_uri}
    if mlflow_run_id:
        env["MLFLOW_RUN_ID"] = mlflow_run_id
    return VerlCommand(argv=argv, env=env, run_dir=run_dir, notes=notes, settings=s, keep_every=keep_every)


def _keep_every(every: Optional[int], rl, s: VerlSettings, scale: str) -> Optional[int]:
    """`eval.every` (validated with the profile's eval section), checked against the scale's resolved rl:
    the script can keep only what verl saves (HF weights at save steps) and only while verl still holds
    it (retention >= 2)."""
    if every is None:
        return None
    if not s.hf_checkpoints:
        raise ValueError(f"eval.every={every} needs verl.hf_checkpoints: true (the steps are evaluated from "
                         "their Hugging Face weights)")
    if rl.save_every < 1 or every % rl.save_every:
        raise ValueError(f"eval.every={every} is not a multiple of rl.save_every={rl.save_every} (scale {scale}): "
                         "verl writes Hugging Face weights only at save steps")
    if rl.keep_checkpoints < 2:
        raise ValueError(f"eval.every={every} needs rl.keep_checkpoints >= 2 (scale {scale} has "
                         f"{rl.keep_checkpoints}): with 1, verl deletes a step's checkpoint while its tracker "
                         "still names it, so the script cannot keep its weights safely")
    return every


def write_run_config(cfg, method: str, scale: str, seed: int, setting: Optional[str], cmd: VerlCommand) -> Path:
    """`<run_dir>/config.yaml`: the resolved run (as the built-in trainer writes it) plus the verl command."""
    from cppo.config import dump_yaml

    run = resolve(cfg, method, scale, seed, setting)
    d = run.to_dict()
    d["verl"] = {"version": VERL_VERSION, "argv": cmd.argv, "env": {k: v for k, v in cmd.env.items()},
                 "notes": cmd.notes, "settings": dataclasses.asdict(cmd.settings) if cmd.settings else None}
    cmd.run_dir.mkdir(parents=True, exist_ok=True)
    path = cmd.run_dir / "config.yaml"
    dump_yaml(d, path)
    return path


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="profile YAML (backend: verl), e.g. config/paper.yaml")
    parser.add_argument("--method", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--setting", default=None, help="a name under `settings` (default: none)")
    parser.add_argument("--run-dir", default=None, help="run folder (default results/<profile>/runs/...)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted, value parsed as YAML; quote a part that contains a dot: "
                        "'scales.\"1.7b\".rl.steps=5'); repeatable")
    parser.add_argument("--mlflow", action="store_true",
                        help="create (or reopen) the run's MLflow child run now and attach verl to it")
    parser.add_argument("--format", choices=("shell", "script", "json"), default="shell",
                        help="shell: the command; script: a bash script (run, link final HF weights, done); "
                        "json: argv/env/notes")
    parser.add_argument("--out", default=None, help="write the output to this file instead of stdout")


def main(args: argparse.Namespace) -> int:
    from cppo.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
        if cfg.backend != "verl":
            print(f"cppo verl-cmd: note: {args.config} has backend {cfg.backend!r}; generating a verl command anyway",
                  file=sys.stderr)
        run_id = None
        if args.mlflow:
            from cppo import tracking

            tracking.use_results_dir(cfg.results_dir)
            run = resolve(cfg, args.method, args.scale, args.seed, args.setting)
            run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg, run)
            run_id = tracking.start_child(cfg.profile, run.setting, run.method.name, run.scale, run.seed,
                                          run.method.rule, run.to_dict(), run_dir)
        cmd = verl_command(cfg, args.method, args.scale, args.seed, args.setting, run_dir=args.run_dir,
                           mlflow_run_id=run_id)
        if args.format == "script":  # the run is being set up: record its resolved config (docs/contracts.md §Runs)
            write_run_config(cfg, args.method, args.scale, args.seed, args.setting, cmd)
    except (ConfigError, ValueError) as e:
        print(f"cppo verl-cmd: {e}", file=sys.stderr)
        return 2
    for n in cmd.notes:
        print(f"cppo verl-cmd: note: {n}", file=sys.stderr)
    if args.format == "json":
        text = json.dumps({"argv": cmd.argv, "env": cmd.env, "notes": cmd.notes, "run_dir": str(cmd.run_dir),
                           "verl": VERL_PIP}, indent=1) + "\n"
    elif args.format == "script":
        text = cmd.script()
    else:
        text = "".join(f"# NOTE: {n}\n" for n in cmd.notes) + cmd.shell() + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        if args.format == "script":
            Path(args.out).chmod(0o755)
    else:
        sys.stdout.write(text)
    return 0
