"""vLLM rollout engine for the built-in trainer on one GPU (`vllm`, optional extra `cppo-bench[vllm]`).

What: generation through a colocated `vllm.LLM`, recording mu's sampled-token log-probs and its top-K
ids/log-probs (`SamplingParams(logprobs=K)`), with the trainer's weights loaded into vLLM's model after
each update (`sync_weights`). It returns the same `RolloutBatch` as the `hf` and `hf_fast` engines, so a
rule sees the same batch whichever engine produced it; only mu's numerics differ (vLLM kernels, bf16),
which is exactly the rollout/trainer mismatch the trust-region rules are about.

Design decisions:
- vLLM is imported lazily, inside the engine, with a clear error when it is missing: the rest of the
  suite never needs it.
- Log-probs are requested as `logprobs_mode="processed_logprobs"` (after the temperature), the
  convention of the other engines (`cppo.train.rollout`: log_softmax(logits / temperature)); vLLM's
  default ("raw_logprobs") would be the untempered model's. One difference remains: with top_p < 1
  vLLM's processed log-probs are also truncated and renormalised to the nucleus, whereas the `hf`
  engines record them before truncation; the engine warns when asked for top_p < 1.
- The engine runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so that the trainer's state dict can be
  handed to the vLLM model's own `load_weights` without serialisation.
- vLLM reports, per generated position, a dict {token id: Logprob} holding the top-K tokens and, when it
  is not among them, the sampled token. Turning that into tensors is `assemble_batch`, a pure function,
  tested on CPU with hand-made outputs (vLLM itself cannot run without a GPU).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from cppo.train.rollout import RolloutBatch, register_engine

INSTALL_HINT = "the vllm engine needs vLLM on a CUDA machine: pip install 'cppo-bench[vllm]'"


def _logprob_value(entry: Any) -> float:
    """A vLLM `Logprob` object (has `.logprob`) or a plain float."""
    return float(getattr(entry, "logprob", entry))


def _rank(entry: Any) -> float:
    rank = getattr(entry, "rank", None)
    return float("inf") if rank is None else float(rank)


def assemble_batch(prompt_ids: list[list[int]], outputs: Sequence[Any], topk: int | None, pad_id: int,
                   eos_ids: Sequence[int] = (), device: torch.device | str | None = None) -> RolloutBatch:
    """Convert vLLM-style completions into a `RolloutBatch`.

    Args:
        prompt_ids: one token list per sequence (the prompt repeated for each of its samples).
        outputs: one completion per sequence, in the same order, with attributes `token_ids` (sequence of
            int, EOS included when the sequence stopped on it), `logprobs` (one mapping per generated token:
            token id -> float or an object with `.logprob` / `.rank`) and `text`.
        topk: K, the number of mu's top tokens to record per position (None: none recorded).
        pad_id: id used to right-pad `response_ids`.
        eos_ids: end tokens; a sequence whose last token is one of them is `finished`.
    Returns:
        RolloutBatch with response_ids/response_mask/logp (B, T) and topk_ids/topk_logp (B, T, K), T = the
        longest response. Top-K entries are the K highest log-probs at the position (ties: lower vLLM rank,
        then lower id), so an extra entry for a sampled token outside the top-K is left out of them.
    """
    if len(prompt_ids) != len(outputs):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(outputs)} completions")
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    B = len(outputs)
    T = max([len(o.token_ids) for o in outputs] + [1])
    K = topk or 0
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    logp = torch.zeros(B, T, dtype=torch.float32)
    k_ids = torch.zeros(B, T, K, dtype=torch.long)
    k_logp = torch.zeros(B, T, K, dtype=torch.float32)
    for b, out in enumerate(outputs):
        toks = [int(t) for t in out.token_ids]
        steps: Sequence[Mapping[int, Any]] | None = out.logprobs
        if toks and (steps is None or len(steps) != len(toks)):
            got = "none" if steps is None else len(steps)
            raise ValueError(f"sequence {b}: {len(toks)} tokens but {got} log-prob entries "
                             "(request SamplingParams(logprobs=...))")
        for t, (tok, entries) in enumerate(zip(toks, steps or [])):
            if tok not in entries:
                raise ValueError(f"sequence {b}, position {t}: sampled token {tok} has no log-prob")
            ids[b, t] = tok
            mask[b, t] = True
            logp[b, t] = _logprob_value(entries[tok])
            if K:
                ranked = sorted(entries.items(), key=lambda kv: (-_logprob_value(kv[1]), _rank(kv[1]), kv[0]))
                if _rank(entries[tok]) != float("inf") and _rank(entries[tok]) > K:
                    ranked = [kv for kv in ranked if kv[0] != tok]  # the extra entry of a sampled non-top-K token
                if len(ranked) < K:
                    raise ValueError(f"sequence {b}, position {t}: {len(ranked)} top log-prob entries, fewer than "
                                     f"K={K} (is max_logprobs >= {K}?)")
                top = ranked[:K]
                k_ids[b, t] = torch.tensor([i for i, _ in top], dtype=torch.long)
                k_logp[b, t] = torch.tensor([_logprob_value(e) for _, e in top], dtype=torch.float32)
    texts = [str(getattr(o, "text", "")) for o in outputs]
    eos = {int(e) for e in eos_ids}
    finished = torch.tensor([len(o.token_ids) > 0 and int(o.token_ids[-1]) in eos for o in outputs], dtype=torch.bool)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return RolloutBatch(
        prompt_ids=[list(p) for p in prompt_ids],
        response_ids=ids.to(dev),
        response_mask=mask.to(dev),
        logp=logp.to(dev),
        topk_ids=k_ids.to(dev) if K else None,
        topk_logp=k_logp.to(dev) if K else None,
        texts=texts,
        finished=finished.to(dev),
    )


def _import_vllm():
    try:
        import vllm
    except ImportError as err:  # the optional extra is not installed
        raise ImportError(INSTALL_HINT) from err
    return vllm


def _driver_model(llm) -> torch.nn.Module | None:
    """vLLM's in-process model module, across vLLM versions (None when not reachable in-process)."""
    chains = (
        ("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),  # V1, in-process
        ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"),  # V0
    )
    for chain in chains:
        obj = llm
        for attr in chain:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


class VLLMEngine:
    """`vllm` rollout engine (see the module docstring). Needs a CUDA GPU and `pip install cppo-bench[vllm]`.

    Args:
        model, tokenizer: the trainer's model and tokenizer; they are saved once to a temporary folder that
            vLLM loads, then kept in step with `sync_weights` (vLLM always holds its own copy, so
            `copy_model` is accepted for interface parity and has no effect). When no `sync_weights` came
            since the last `generate`, the engine loads the live trainer model's weights first, so a trainer
            that never syncs (fresh rollouts) still samples with its current weights.
        gpu_memory_utilization: fraction of GPU memory vLLM may take (the trainer needs the rest).
        dtype: vLLM's compute dtype ("bfloat16" as in production RL stacks; "float32" to reduce mu != pi).
        max_logprobs: upper bound on K that vLLM will serve.
        enforce_eager: disable vLLM's CUDA graphs (slower; for debugging).
        llm_kwargs: passed to `vllm.LLM` unchanged.
    """

    name = "vllm"

    def __init__(self, model, tokenizer, copy_model: bool = True, gpu_memory_utilization: float = 0.4,
                 dtype: str = "bfloat16", max_logprobs: int = 64, enforce_eager: bool = False, seed: int = 0,
                 **llm_kwargs):
        vllm = _import_vllm()
        if not torch.cuda.is_available():
            raise RuntimeError("the vllm engine needs a CUDA GPU; use the `hf` or `hf_fast` engine on CPU")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.tokenizer = tokenizer
        self.source = model
        self._synced = True  # vLLM starts from the saved copy of the source
        self._warned_top_p = False
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        from cppo.train.rollout import eos_ids_of

        self.eos_ids = eos_ids_of(model, tokenizer)
        self._dir = tempfile.mkdtemp(prefix="cppo-vllm-")
        model.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        try:
            self.llm = vllm.LLM(model=self._dir, tokenizer=self._dir, dtype=dtype, seed=seed,
                                gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                                max_logprobs=max_logprobs, logprobs_mode="processed_logprobs", **llm_kwargs)
        except TypeError as err:
            shutil.rmtree(self._dir, ignore_errors=True)
            if "logprobs_mode" in str(err):  # added in vLLM 0.10.2; without it log mu would be untempered
                raise ImportError(f"the vllm engine needs vLLM >= 0.10.2 (logprobs_mode); found "
                                  f"{getattr(vllm, '__version__', '?')}") from err
            raise

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def sampling_params(self, n: int, max_new_tokens: int, temperature: float, top_p: float, topk: int | None,
                        generator: torch.Generator | None, **extra):
        from vllm import SamplingParams

        if top_p < 1.0 and not self._warned_top_p:
            warnings.warn("vllm engine: with top_p < 1 the recorded log mu is truncated to the nucleus "
                          "(the hf engines record it before truncation)", stacklevel=3)
            self._warned_top_p = True

        # vLLM seeds each request; draw that seed from the caller's generator so runs are reproducible
        seed = None if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        return SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                              logprobs=topk or 0, seed=seed, stop_token_ids=self.eos_ids,
                              skip_special_tokens=True, **extra)

    def generate(self, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float,
                 topk: int | None, generator: torch.Generator | None):
        if not self._synced:
            self.sync_weights(self.source)
        self._synced = False
        encoded = self.encode(prompts)
        params = self.sampling_params(n, max_new_tokens, temperature, top_p, topk, generator)
        results = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False)
        prompt_ids, outputs = [], []
        for ids, res in zip(encoded, results):  # vLLM keeps request order; samples of a prompt stay together
            for comp in sorted(res.outputs, key=lambda c: c.index):
                prompt_ids.append(ids)
                outputs.append(comp)
        return assemble_batch(prompt_ids, outputs, topk, self.pad_id, eos_ids=self.eos_ids, device=self.device)

    @torch.no_grad()
    def sync_weights(self, model_or_state) -> None:
        """Load a model's (or a state dict's) weights into vLLM's model (vLLM renames/fuses them in its
        `load_weights`)."""
        self._synced = True
        state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
        weights: Iterable[tuple[str, torch.Tensor]] = ((k, v.detach()) for k, v in state.items())
        target = _driver_model(self.llm)
        if target is not None:
            target.load_weights(weights)
        elif hasattr(self.llm, "apply_model"):  # newer vLLM: run the load inside the worker
            pairs = list(weights)
            self.llm.apply_model(lambda m: m.load_weights(pairs))
        else:
            raise RuntimeError("cannot reach vLLM's model to load weights (unsupported vLLM version)")
        if hasattr(self.llm, "reset_prefix_cache"):  # cached prompt K/V were computed with the old weights
            self.llm.reset_prefix_cache()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


register_engine("vllm", VLLMEngine)
