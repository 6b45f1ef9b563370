"""GRPO-style RL with any registered trust-region rule: the builtin update loop.

One rollout step:
  1. μ samples n responses to each of P prompts (the rollout engine records log μ(y_t), and μ's
     top-K ids/log-probs only when the rule needs them). With ``staleness`` k, μ holds the weights
     of k optimizer steps ago; with ``staleness_rollouts`` k, the weights at the start of the rollout
     step k rollouts ago (emulating asynchronous inference). With ``rollout_dtype`` bfloat16/float16
     μ samples with a low-precision copy (the bf16-engine / fp32-trainer mismatch of real systems).
  2. Rewards → group advantages Â (std normalisation optional); groups with zero reward variance
     are dropped and counted (the paper skips them).
  3. π_old = the current weights, evaluated once on the whole batch (no gradient), when needed (see
     :meth:`Trainer.needs_old`: skipped for a rule that does not read π_old while μ samples with the
     trainer's own weights, except at evaluated steps, where ``rule/k3_old_mu`` is logged). With
     ``rollout_correction`` (verl's names, :mod:`cppo.rules.rollout_correction`), μ is corrected
     against π_old here, once per rollout batch: rejected tokens leave the mask that the rule and the
     aggregation see, and IS weights multiply the rule's per-token loss; diagnostics ``rollout_corr/*``.
  4. The kept sequences are shuffled and split into ``updates_per_rollout`` mini-batches; each gets
     one AdamW step on  aggregate(rule(PolicyBatch).loss)  (mini-batch j > 1 is off-policy: π has
     moved j − 1 steps away from π_old and from μ; this is where trust regions act).
  5. The gradient norm is measured before clipping (and logged even with clipping off); a step
     whose loss or gradient is not finite is skipped and counted; after ``max_bad_steps`` in a
     row the run stops.

Everything trainer-side (model, optimizer state, rollout tensors, advantages, PolicyBatch) lives on
``rl.device`` (default cpu; docs/gpu-and-cluster.md, "One GPU"); random streams stay on the CPU, so checkpoints resume anywhere.

No KL-to-reference term and no entropy bonus (as in the paper's protocol). π's log-probs use the
rollout temperature, so that with fresh weights π_old = μ up to numerics.

Files (run folder, docs/contracts.md §Runs): ``config.yaml``, ``metrics.jsonl`` (one JSON object per rollout
step, deterministic values only), ``perf.jsonl`` (timings), ``checkpoints/step_<n>/``, ``final/``,
``steps/step_<n>/`` (weights at every multiple of ``eval.every``, for the pipeline's evaluations),
``position_profile.json``, ``done`` (written last). MLflow gets the same metrics, flushed at
checkpoint boundaries only, so a resumed run never logs a step twice.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cppo.config import RunConfig
from cppo.train import checkpoint as ckpt
from cppo.train.advantages import group_advantages
from cppo.train.rollout import HFEngine, RolloutBatch, get_engine, left_pad

# rule metrics aggregated by max over mini-batches (others: mean)
_MAX_METRICS = {"div_max", "ratio_max"}
# periodic evaluation samples with seed·EVAL_SEED_STRIDE + step: a reproducible stream per (seed, step),
# distinct for every pair as long as step < EVAL_SEED_STRIDE
EVAL_SEED_STRIDE = 100_003
# engines that may sample with the trainer's own model object: only with them (and no lag, no rollout
# precision of its own) is μ = π_old up to numerics, so that π_old may be skipped; with any other engine
# (vllm) the μ-vs-π_old mismatch is what is measured, every update
SHARED_MODEL_ENGINES = ("hf", "hf_fast")
# the mini-batch shuffling stream is seeded run.seed + SHUFFLE_SEED_OFFSET, so that it is not the
# same torch stream as rollout sampling (seeded run.seed)
SHUFFLE_SEED_OFFSET = 1


@dataclass
class SequenceBatch:
    """Trainer-side tensors of the kept sequences of one rollout batch.

    Prompts are stored once per group (G unique prompts); ``group`` maps each sequence to its
    prompt. The forward pass runs each prompt once and shares its KV cache with the group's
    responses, which halves the tokens processed at the tiny profile's lengths.
    """

    prompts: torch.Tensor  # (G, P) unique prompts, left-padded
    prompt_mask: torch.Tensor  # (G, P) bool
    group: torch.Tensor  # (N,) long: prompt index of each sequence
    response_ids: torch.Tensor  # (N, T)
    mask: torch.Tensor  # (N, T) bool
    rollout_logp: torch.Tensor  # (N, T)
    advantages: torch.Tensor  # (N, T)
    topk_ids: torch.Tensor | None  # (N, T, K)
    topk_logp: torch.Tensor | None  # (N, T, K)

    def select(self, idx: torch.Tensor) -> "SequenceBatch":
        def s(t):
            return None if t is None else t[idx]
        return SequenceBatch(self.prompts, self.prompt_mask, self.group[idx], s(self.response_ids), s(self.mask),
                             s(self.rollout_logp), s(self.advantages), s(self.topk_ids), s(self.topk_logp))


def build_sequences(rb: RolloutBatch, adv: torch.Tensor, keep: torch.Tensor, pad_id: int) -> SequenceBatch:
    """The kept sequences' tensors, on the rollout batch's device (the model's)."""
    dev = rb.response_ids.device
    adv, idx = adv.to(dev), keep.nonzero().squeeze(-1).to(dev)
    index: dict[tuple, int] = {}
    group = torch.tensor([index.setdefault(tuple(rb.prompt_ids[i]), len(index)) for i in idx.tolist()],
                         dtype=torch.long, device=dev)
    prompts, pmask = (t.to(dev) for t in left_pad([list(p) for p in index], pad_id))  # (G, P)
    resp, mask = rb.response_ids[idx], rb.response_mask[idx]  # (N, T)
    A = adv[idx].float()[:, None].expand_as(resp).contiguous()  # (N, T)
    return SequenceBatch(prompts, pmask, group, resp, mask, rb.logp[idx], torch.where(mask, A, 0.0),
                         None if rb.topk_ids is None else rb.topk_ids[idx],
                         None if rb.topk_logp is None else rb.topk_logp[idx])


def sequence_logits(model, sb: SequenceBatch) -> torch.Tensor:
    """(N, T, V) logits predicting each response token y_t (position t sees the prompt and y_<t).

    Each distinct prompt of the batch is run once; its KV cache is gathered to its sequences, and
    the responses run on top of it. Gradients flow through the shared prompt computation.
    """
    from cppo.train.rollout import _cache_kwarg, _out_cache

    used, inv = torch.unique(sb.group, return_inverse=True)  # prompts present in this batch
    prompts, pmask = sb.prompts[used], sb.prompt_mask[used]  # (G', P)
    padded = not bool(pmask.all())
    ppos = (pmask.long().cumsum(-1) - 1).clamp(min=0)  # (G', P)
    out = model(input_ids=prompts, attention_mask=pmask.long() if padded else None, position_ids=ppos,
                use_cache=True, logits_to_keep=1)
    cache = _out_cache(out)
    cache.batch_select_indices(inv)  # (N, ...) per layer: a differentiable gather
    first = out.logits[:, -1][inv]  # (N, V): predicts y_0
    T = sb.response_ids.shape[1]
    if T == 1:
        return first[:, None]
    rpos = ppos[inv][:, -1:] + 1 + torch.arange(T - 1, device=ppos.device)  # (N, T-1)
    attn = None
    if padded:  # the full mask: the prompt's padding stays hidden; right padding never matters
        attn = torch.cat([pmask[inv], torch.ones(len(inv), T - 1, dtype=torch.bool, device=pmask.device)], dim=1).long()
    rest = model(input_ids=sb.response_ids[:, :-1], attention_mask=attn, position_ids=rpos,
                 use_cache=True, **{_cache_kwarg(model): cache}).logits  # (N, T-1, V): predicts y_1..y_{T-1}
    return torch.cat([first[:, None], rest], dim=1)


def policy_logprobs(model, sb: SequenceBatch, temperature: float, want_topk: bool, want_entropy: bool):
    """log π(y_t) (B, T), log π at μ's top-K ids (B, T, K) or None, entropy (B, T) or None."""
    logits = sequence_logits(model, sb).float() / temperature  # (B, T, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, sb.response_ids[..., None]).squeeze(-1)  # (B, T)
    topk = logp_all.gather(-1, sb.topk_ids) if want_topk and sb.topk_ids is not None else None  # (B, T, K)
    ent = None
    if want_entropy:
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1)  # (B, T)
    return logp, topk, ent


def minibatch_loss(rule, model, mb: SequenceBatch, old_logp: torch.Tensor | None, old_topk: torch.Tensor | None, rl,
                   is_weights: torch.Tensor | None = None):
    """The scalar loss of one mini-batch: aggregate(rule(PolicyBatch).loss), the per-token loss times the
    rollout-correction weights `is_weights` (B, T) when given. `old_logp` None: π_old was skipped (a rule
    that does not read it). Returns (loss, out, batch)."""
    from cppo.rules import PolicyBatch, aggregate_loss

    logp, pol_topk, ent = policy_logprobs(model, mb, rl.temperature, rule.needs_topk, True)  # (B, T)
    batch = PolicyBatch(
        logp=logp, old_logp=old_logp, rollout_logp=mb.rollout_logp, advantages=mb.advantages, mask=mb.mask,
        rollout_topk_ids=mb.topk_ids, rollout_topk_logp=mb.topk_logp, policy_topk_logp=pol_topk,
        old_topk_logp=old_topk, token_ids=mb.response_ids, entropy=ent,
    )
    out = rule(batch)
    per_token = out.loss if is_weights is None else out.loss * is_weights  # (B, T)
    # norm constant of seq-mean-token-sum-norm: the response length limit (Dr. GRPO)
    loss = aggregate_loss(per_token, mb.mask, rl.loss_agg, norm_constant=float(rl.max_new_tokens))
    return loss, out, batch


class ProfileAccumulator:
    """Sums of the per-position profile over every mini-batch of the run."""

    def __init__(self, n_buckets: int):
        self.n = n_buckets
        self.sums = {k: [0.0] * n_buckets for k in ("tokens", "div_sum", "eligible", "masked")}
        self.batches = 0

    def add(self, prof: dict) -> None:
        for k in self.sums:
            self.sums[k] = [a + b for a, b in zip(self.sums[k], prof[k])]
        self.batches += 1

    def result(self) -> dict:
        s = self.sums
        return {"by": "relative", "n_buckets": self.n, "batches": self.batches, **s,
                "div_mean": [d / t if t else 0.0 for d, t in zip(s["div_sum"], s["tokens"])],
                "masked_frac": [m / e if e else 0.0 for m, e in zip(s["masked"], s["eligible"])]}

    def state(self) -> dict:
        return {"sums": self.sums, "batches": self.batches}

    def load(self, st: dict) -> None:
        self.sums, self.batches = st["sums"], st["batches"]


@torch.no_grad()
def evaluate(engine: HFEngine, task, splits: list[str], n: int, temperature: float, max_new_tokens: int,
             seed: int, modes: tuple[str, ...] = ("greedy", "sampled")) -> dict[str, float]:
    """Greedy and/or sampled (one sample, at ``temperature``) accuracy on each split."""
    out = {}
    for split in splits:
        rows = task.eval_split(split, n, seed=0)
        limit = max_new_tokens
        if all(r.get("solution") for r in rows):  # chain: room for the whole answer and the end token
            limit = max(limit, max(len(r["solution"]) for r in rows) + 1)
        prompts, answers = [r["problem"] for r in rows], [r["answer"] for r in rows]
        for mode, temp in (("greedy", 0.0), ("sampled", temperature)):
            if mode not in modes:
                continue
            gen = torch.Generator().manual_seed(seed)
            rb = engine.generate(prompts, n=1, max_new_tokens=limit, temperature=temp, top_p=1.0, topk=None,
                                 generator=gen)
            r = task.rewards(rb.texts, answers, rb.finished.tolist())
            out[f"eval/{split}/{mode}_acc"] = sum(r) / max(len(r), 1)
    return out


class Trainer:
    """One RL run. Build, then :meth:`run` (resumes from the newest step checkpoint if any)."""

    def __init__(self, run: RunConfig, run_dir: Path, init: str, mlflow_run_id: str | None = None,
                 progress: bool = True):
        from cppo.config import build_rule
        from cppo.models import load_model
        from cppo.tasks import get_task
        from cppo.train.device import resolve_device

        self.run_cfg, self.rl, self.run_dir = run, run.rl, Path(run_dir)
        self.device = resolve_device(self.rl.device)  # before any work: a CUDA request without CUDA fails here
        torch.set_num_threads(self.rl.num_threads)
        ckpt.seed_everything(run.seed)
        self.rule = build_rule(run.method)
        self.correction = None  # rollout correction of μ against π_old (None: off)
        if self.rl.rollout_correction is not None:
            from cppo.rules.rollout_correction import parse

            self.correction = parse(**dataclasses.asdict(self.rl.rollout_correction))
        self.task = get_task(run.task, data_dir=run.data_dir)
        self.model, self.tok = load_model(init)
        if getattr(self.model.config, "_attn_implementation", None) in ("sdpa", "eager"):
            self.model.config._attn_implementation = self.rl.attn_implementation
        self.model.to(self.device)  # before the engines (their copies) and the optimizer (its state) exist
        self.model.train()
        # μ's own copy of the weights: needed when it lags behind π, or samples in another precision
        self.lag = self.rl.staleness or self.rl.staleness_rollouts
        engine_kw = {"copy_model": self.lag > 0}
        if self.rl.rollout_dtype != "float32":
            engine_kw["dtype" if self.rl.engine == "vllm" else "rollout_dtype"] = self.rl.rollout_dtype
        self.engine = get_engine(self.rl.engine, self.model, self.tok, **engine_kw)
        self.eval_engine = HFEngine(self.model, self.tok)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.rl.lr, betas=tuple(self.rl.betas),
                                     weight_decay=self.rl.weight_decay, foreach=True)
        # independent random streams: prompts, sampling, mini-batch shuffling. They stay on the CPU
        # whatever the device (engines derive device generators from them), so a checkpoint resumes anywhere.
        self.prompt_rng = random.Random(run.seed)
        self.sample_gen = torch.Generator().manual_seed(run.seed)
        self.shuffle_gen = torch.Generator().manual_seed(run.seed + SHUFFLE_SEED_OFFSET)
        # μ's lagged weights; history[0] is what μ samples with. `staleness` k: the weights after each of
        # the last k optimizer steps; `staleness_rollouts` k: the weights at the start of each of the last
        # k rollout steps (the first entry is the initial weights until k rollouts have passed)
        self.history: collections.deque = collections.deque(maxlen=self.lag + 1)
        if self.lag > 0:
            self.history.append(_clone_state(self.model))
        self.profile = ProfileAccumulator(self.rl.position_buckets)
        self.counters = {"updates": 0, "bad_steps": 0, "bad_in_a_row": 0, "skipped_rollouts": 0, "zero_var_groups": 0}
        self.step = 0
        self.stopped_reason: str | None = None
        self.mlflow_run_id = mlflow_run_id
        self.buffer = None
        if mlflow_run_id:
            from cppo.tracking import MetricBuffer

            self.buffer = MetricBuffer(mlflow_run_id)
        self.progress = progress

    # ------------------------------------------------------------------ files
    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def _append(self, path: Path, rec: dict) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    def _log(self, step: int, metrics: dict[str, float], perf: dict[str, float] | None = None) -> None:
        self._append(self.metrics_path, {"step": step, **metrics})
        if perf:
            self._append(self.run_dir / "perf.jsonl", {"step": step, **perf})
        if self.buffer is not None:
            self.buffer.add(step, {**metrics, **(perf or {})})

    def _state(self) -> dict:
        return {
            "step": self.step, "optimizer": self.opt.state_dict(), "history": list(self.history),
            "rng": ckpt.rng_state({"prompt": self.prompt_rng}, {"sample": self.sample_gen, "shuffle": self.shuffle_gen},
                                  cuda=self.device.type == "cuda"),
            "counters": dict(self.counters), "profile": self.profile.state(), "stopped_reason": self.stopped_reason,
        }

    def _save(self) -> None:
        ckpt.save_step(self.run_dir / "checkpoints", self.step, self.model, self.tok, self._state(),
                       keep=self.rl.keep_checkpoints)
        self._flush_mlflow()

    def _keep_weights(self) -> None:
        """At every multiple of ``eval.every`` (step 0 included): the weights, for the pipeline's
        evaluation of each checkpoint in [0, T_stop]. Written before the step checkpoint, so a resumed
        run has every kept step up to the one it resumes from (a later one is rewritten, identically)."""
        every = self.run_cfg.eval.every
        if every and self.step % every == 0:
            ckpt.save_weights(self.run_dir / "steps", self.step, self.model, self.tok)

    def _flush_mlflow(self) -> None:
        if self.buffer is not None:
            self.buffer.flush()
            ckpt.atomic_write_text(self.run_dir / "mlflow_logged_step", f"{self.step}\n")

    def _resume(self) -> bool:
        """Continue from the newest complete step checkpoint; returns True when one was found.

        Three steps: restore the trainer's state, drop the log lines the killed process wrote past
        the checkpoint (they are recomputed), and hand MLflow what it had not received up to it.
        """
        found = ckpt.step_dirs(self.run_dir / "checkpoints")
        if not found:
            # a fresh start: drop files of a run killed before its first checkpoint
            for name in ("metrics.jsonl", "perf.jsonl", "mlflow_logged_step"):
                (self.run_dir / name).unlink(missing_ok=True)
            return False
        step, path = found[-1]
        self._restore(path)
        self._truncate_logs(step)
        self._relog_mlflow(step)
        return True

    def _restore(self, path: Path) -> None:
        """Weights, optimizer moments, μ's weight history, random streams, counters and the profile of
        the checkpoint at ``path``."""
        from transformers import AutoModelForCausalLM

        weights = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
        self.model.load_state_dict(weights)  # copies into the parameters, on whatever device they are
        st = ckpt.load_state(path)  # on the CPU, whichever device saved it
        self.opt.load_state_dict(st["optimizer"])  # moves the moments to the parameters' device
        self.history = collections.deque([{k: v.to(self.device) for k, v in h.items()} for h in st["history"]],
                                         maxlen=self.lag + 1)
        ckpt.set_rng_state(st["rng"], {"prompt": self.prompt_rng}, {"sample": self.sample_gen, "shuffle": self.shuffle_gen},
                           cuda=self.device.type == "cuda")
        self.counters, self.step, self.stopped_reason = dict(st["counters"]), st["step"], st["stopped_reason"]
        self.profile.load(st["profile"])

    def _truncate_logs(self, step: int) -> None:
        """Drop the metrics/perf lines after ``step``: the killed process computed them, this one redoes them."""
        for name in ("metrics.jsonl", "perf.jsonl"):
            p = self.run_dir / name
            if p.exists():
                keep = [ln for ln in p.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
                ckpt.atomic_write_text(p, "".join(ln + "\n" for ln in keep))

    def _relog_mlflow(self, step: int) -> None:
        """Send MLflow the logged steps up to ``step`` that the killed process checkpointed but did not
        flush (never more, so no step is logged twice)."""
        if self.buffer is None:
            return
        lp = self.run_dir / "mlflow_logged_step"
        logged = int(lp.read_text()) if lp.exists() else -1
        if logged >= step:
            return
        for name in ("metrics.jsonl", "perf.jsonl"):
            p = self.run_dir / name
            for ln in (p.read_text().splitlines() if p.exists() else []):
                rec = json.loads(ln)
                if logged < rec["step"] <= step:
                    self.buffer.add(rec.pop("step"), rec)
        self._flush_mlflow()

    # ------------------------------------------------------------------ one rollout step
    def rollout(self) -> tuple[RolloutBatch, list[dict]]:
        rows = self.task.sample(self.prompt_rng, self.rl.prompts_per_rollout)
        # μ's weights: lagged (see __init__), else the live model (a no-op for engines sampling
        # with the trainer's model object itself; engines holding a copy load it here)
        if self.rl.staleness_rollouts > 0 and self.step > 0:
            self.history.append(_clone_state(self.model))  # the weights at the start of this rollout step
        self.engine.sync_weights(self.history[0] if self.lag > 0 else self.model)
        rb = self.engine.generate([r["problem"] for r in rows], n=self.rl.samples_per_prompt,
                                  max_new_tokens=self.rl.max_new_tokens, temperature=self.rl.temperature,
                                  top_p=self.rl.top_p, topk=self.rl.topk if self.rule.needs_topk else None,
                                  generator=self.sample_gen)
        return rb, rows

    def needs_old(self, step: int) -> bool:
        """Whether rollout step ``step`` (1-based, the one being trained) computes π_old's log-probs.

        Always with ``recompute_old_logp: always``, for a rule that reads π_old (its registered
        ``reads_old``), with rollout correction, and when μ does not sample with the trainer's own
        weights (another engine, a lagged copy, another precision): there the μ-vs-π_old mismatch is
        measured every update. Otherwise μ = π_old up to numerics and π_old only feeds the diagnostic
        ``rule/k3_old_mu``, which is then computed where it is cheap: at the evaluated steps.
        Skipping changes no other logged value (tests/test_train.py).
        """
        rl = self.rl
        shared = rl.engine in SHARED_MODEL_ENGINES and getattr(self.engine, "model", None) is self.model
        if rl.recompute_old_logp == "always" or self.rule.reads_old or self.correction is not None or not shared:
            return True
        return self.is_eval_step(step)

    def is_eval_step(self, step: int) -> bool:
        """Whether the loop evaluates after rollout step ``step`` (every ``eval_every``, and the last)."""
        rl = self.rl
        return bool(rl.eval_every) and (step % rl.eval_every == 0 or step == rl.steps)

    def update(self, sb: SequenceBatch) -> dict[str, float]:
        """π_old once (when needed), then one optimizer step per mini-batch. Returns averaged metrics."""
        from cppo.rules.diagnostics import position_profile

        rl, model = self.rl, self.model
        need_topk = self.rule.needs_topk
        old_logp = old_topk = None  # (N, T), (N, T, K): None when skipped
        if self.needs_old(self.step + 1):
            with torch.no_grad():
                old_logp, old_topk, _ = policy_logprobs(model, sb, rl.temperature, need_topk, False)
        m: dict[str, float] = {}
        is_w = None  # (N, T) rollout-correction weights
        if self.correction is not None:
            from cppo.rules.rollout_correction import rollout_correction

            corr = rollout_correction(old_logp, sb.rollout_logp, sb.mask, self.correction)
            sb = dataclasses.replace(sb, mask=corr.mask, advantages=torch.where(corr.mask, sb.advantages, 0.0))
            is_w = corr.weights
            m.update({f"rollout_corr/{k}": v for k, v in corr.metrics.items()})
        sums: dict[str, list[float]] = collections.defaultdict(list)
        for chunk in self.minibatches(sb):
            loss, out, batch = minibatch_loss(self.rule, model, sb.select(chunk),
                                              None if old_logp is None else old_logp[chunk],
                                              None if old_topk is None else old_topk[chunk], rl,
                                              None if is_w is None else is_w[chunk])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), rl.grad_clip if rl.grad_clip else math.inf,
                                                   foreach=True)
            gnorm, loss = float(gnorm), float(loss.detach())
            if math.isfinite(loss) and math.isfinite(gnorm):
                self.opt.step()
                self.counters["bad_in_a_row"] = 0
            else:  # NaN/inf guard: skip this update
                self.counters["bad_steps"] += 1
                self.counters["bad_in_a_row"] += 1
            self.opt.zero_grad(set_to_none=True)
            self.counters["updates"] += 1
            if rl.staleness > 0:  # lag in optimizer steps
                self.history.append(_clone_state(model))
            sums["train/loss"].append(loss)
            sums["train/grad_norm"].append(gnorm)
            for k, v in out.metrics.items():
                sums[f"rule/{k}"].append(float(v))
            self.profile.add(position_profile(batch, out, n_buckets=rl.position_buckets))
            if self.counters["bad_in_a_row"] >= rl.max_bad_steps:
                self.stopped_reason = f"{rl.max_bad_steps} non-finite updates in a row"
                break
        for k, vals in sums.items():
            name = k.split("/", 1)[1]
            m[k] = max(vals) if name in _MAX_METRICS else sum(vals) / len(vals)
        m["train/grad_norm_max"] = max(sums["train/grad_norm"])
        return m

    def minibatches(self, sb: SequenceBatch) -> list[torch.Tensor]:
        """Sequence indices of each mini-batch: a random split into ``updates_per_rollout`` parts,
        of whole groups (``minibatch_by: group``, the paper's "mini-batch (prompts)") or of single
        sequences. With fewer groups than updates (zero-variance groups dropped), there are fewer updates."""
        U = self.rl.updates_per_rollout
        if self.rl.minibatch_by == "sequence":
            N = sb.group.shape[0]
            perm = torch.randperm(N, generator=self.shuffle_gen).to(sb.group.device)  # CPU stream, any device
            return list(torch.tensor_split(perm, min(U, N)))
        G = int(sb.group.max()) + 1
        gperm = torch.randperm(G, generator=self.shuffle_gen).to(sb.group.device)
        return [torch.isin(sb.group, gs).nonzero().squeeze(-1) for gs in torch.tensor_split(gperm, min(U, G))]

    def train_step(self) -> tuple[dict[str, float], dict[str, float]]:
        rl = self.rl
        t0 = time.perf_counter()
        rb, rows = self.rollout()
        t1 = time.perf_counter()
        answers = [r["answer"] for r in rows for _ in range(rl.samples_per_prompt)]
        rewards = torch.tensor(self.task.rewards(rb.texts, answers, rb.finished.tolist()), dtype=torch.float32)
        adv, keep = group_advantages(rewards, rl.samples_per_prompt, rl.std_norm, rl.adv_eps)
        n_groups = rl.prompts_per_rollout
        zero_var = n_groups - int(keep.view(n_groups, -1)[:, 0].sum())
        self.counters["zero_var_groups"] += zero_var
        lens = rb.response_mask.sum(1).float()
        m = {
            "rollout/reward_mean": float(rewards.mean()),
            "rollout/response_len": float(lens.mean()),
            "rollout/finished_frac": float(rb.finished.float().mean()),
            "rollout/zero_var_frac": zero_var / n_groups,
            "rollout/seqs_used": int(keep.sum()),
        }
        if keep.any():
            m.update(self.update(build_sequences(rb, adv, keep, self.tok.pad_token_id)))
        else:
            self.counters["skipped_rollouts"] += 1
        t2 = time.perf_counter()
        m.update({"train/updates": self.counters["updates"], "train/bad_steps": self.counters["bad_steps"],
                  "train/skipped_rollouts": self.counters["skipped_rollouts"], "train/lr": rl.lr})
        gen_tokens = rb.n_tokens
        n_upd_tokens = int(rb.response_mask[keep.to(rb.response_mask.device)].sum()) if keep.any() else 0
        perf = {"perf/gen_s": t1 - t0, "perf/update_s": t2 - t1,
                "perf/gen_tokens_per_s": gen_tokens / max(t1 - t0, 1e-9),  # generated tokens
                "perf/update_tokens_per_s": n_upd_tokens / max(t2 - t1, 1e-9)}  # trained response tokens
        return m, perf

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.eval_engine, self.task, self.task.eval_splits(self.rl.eval_splits), self.rl.eval_n,
                        self.rl.temperature, self.rl.max_new_tokens,
                        seed=self.run_cfg.seed * EVAL_SEED_STRIDE + self.step)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        rl = self.rl
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self._resume()
        if not resumed and self.step == 0:
            m = self.evaluate() if rl.eval_every else {}
            self._log(0, m)
            self._keep_weights()
        bar = tqdm(total=rl.steps, initial=self.step, desc=f"{self.run_cfg.method.name}/{self.run_cfg.scale}/seed{self.run_cfg.seed}",
                   disable=not self.progress, dynamic_ncols=True)
        last = {}
        while self.step < rl.steps and self.stopped_reason is None:
            m, perf = self.train_step()
            self.step += 1
            if self.stopped_reason is not None:
                m["train/stopped_nonfinite"] = 1.0
            if self.is_eval_step(self.step) or (rl.eval_every and self.stopped_reason):
                m.update(self.evaluate())
            self._log(self.step, m, perf)
            last = m
            bar.update(1)
            bar.set_postfix(reward=f"{m['rollout/reward_mean']:.3f}",
                            masked=f"{m.get('rule/masked_frac', 0.0):.4f}")
            self._keep_weights()
            if (rl.save_every and self.step % rl.save_every == 0) or self.step == rl.steps or self.stopped_reason:
                self._save()
        bar.close()
        if self.step == 0 and not resumed:  # steps == 0: the start is the end
            self._save()
        self._finish()
        return last

    def _finish(self) -> None:
        from cppo.models import save_checkpoint

        if hasattr(self.task, "close"):  # the math task's reward workers
            self.task.close()

        save_checkpoint(self.model, self.tok, self.run_dir / "final")
        ckpt.atomic_write_json(self.run_dir / "position_profile.json",
                               {"rule": self.rule.name, "params": _jsonable(self.rule.params), **self.profile.result()})
        if self.mlflow_run_id:
            from cppo import tracking

            self._flush_mlflow()
            tracking.log_artifact(self.mlflow_run_id, self.run_dir / "position_profile.json")
            tracking.set_tags(self.mlflow_run_id, {"stopped_reason": self.stopped_reason or "completed",
                                                   "final_step": self.step})
            tracking.end_run(self.mlflow_run_id)
        ckpt.atomic_write_json(self.run_dir / "done", {"step": self.step, "stopped_reason": self.stopped_reason,
                                                       **{k: v for k, v in self.counters.items() if k != "bad_in_a_row"}})


def _clone_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _jsonable(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)) for k, v in d.items()}
