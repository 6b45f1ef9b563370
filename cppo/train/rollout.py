"""Rollout engines: sample responses and record the behaviour policy μ's log-probabilities.

The trainer never trusts its own recomputation for μ: the engine that samples a token records
log μ(y_t) at that moment (and, when a rule needs it, μ's top-K ids and log-probs), because that
is the distribution the trust region is measured against (docs/methods.md §Notation).

**Which distribution is μ** (choice): log μ = log_softmax(logits / temperature), i.e. after the
temperature and *before* top-p truncation. The trainer computes log π with the same temperature,
so with fresh weights μ and π_old agree up to numerics (KV-cache vs full-sequence forward). With
top_p < 1 the tokens are drawn from the truncated distribution while μ is recorded untruncated, as
in verl; at temperature 1 and top_p 1 μ is exactly the model's distribution. ``temperature=0``
means greedy decoding (log μ then recorded at temperature 1).

The ``hf`` engine is a plain KV-cached sampling loop over ``Qwen3ForCausalLM.forward`` (any HF
causal LM works): it is faster than ``generate()`` at these sizes and records exactly what we
need without the logits processors' bookkeeping. Other engines (vLLM, a fused fast engine) register
in ``ENGINES`` with the same interface.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Protocol

import torch


@dataclass
class RolloutBatch:
    """Responses to a batch of prompts with the behaviour policy's log-probabilities."""

    prompt_ids: list[list[int]]
    """One token list per sequence (each prompt repeated n times, groups contiguous)."""
    response_ids: torch.Tensor
    """(B, T) long, right-padded with the pad id."""
    response_mask: torch.Tensor
    """(B, T) bool: True on generated tokens, the end token included."""
    logp: torch.Tensor
    """(B, T) float32 log μ(y_t) of the sampled tokens (0 on padding)."""
    topk_ids: torch.Tensor | None
    """(B, T, K) long: μ's top-K ids (None when not requested)."""
    topk_logp: torch.Tensor | None
    """(B, T, K) float32 log μ at ``topk_ids``."""
    texts: list[str]
    """Decoded responses without special tokens."""
    finished: torch.Tensor | None = None
    """(B,) bool: the response ended with the end token (False = cut at max_new_tokens)."""

    @property
    def n_tokens(self) -> int:
        return int(self.response_mask.sum())


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], n: int, max_new_tokens: int, temperature: float,
                 top_p: float, topk: int | None, generator: torch.Generator | None) -> RolloutBatch: ...

    def sync_weights(self, model) -> None: ...


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) ids left-padded with ``pad_id`` and the (B, P) bool mask of real tokens."""
    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), P), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if s:
            ids[i, P - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, P - len(s):] = True
    return ids, mask


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` itself when it lives on ``device``'s type, else a generator on ``device`` seeded
    with one draw from it: the caller keeps one (CPU) random stream, whose state is what checkpoints
    save, whatever device samples."""
    if generator is None or generator.device.type == torch.device(device).type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def outside_nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) bool: True on the tokens that top-p (nucleus) sampling drops, for log-probs ``logp`` (B, V).

    The nucleus is the smallest set of most likely tokens whose mass reaches ``top_p``: a token is
    dropped when the mass strictly before it (in descending order) already reaches ``top_p``, so the
    top token always stays. The one implementation of the rule, shared by every engine.
    """
    sorted_logp, order = logp.sort(dim=-1, descending=True)  # (B, V)
    p = sorted_logp.exp()
    drop_sorted = (p.cumsum(dim=-1) - p) >= top_p  # (B, V) in sorted order
    return torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None):
    """Draw one token per row. Returns (tokens (B,), log μ (B, V) after temperature, before top-p)."""
    logits = logits.float()
    if temperature <= 0:  # greedy
        logp = torch.log_softmax(logits, dim=-1)  # (B, V)
        return logp.argmax(dim=-1), logp
    logp = torch.log_softmax(logits / temperature, dim=-1)  # (B, V)
    probs = logp.exp()
    if top_p < 1.0:
        probs = probs.masked_fill(outside_nucleus(logp, top_p), 0.0)  # multinomial renormalises
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
    return tokens, logp


def eos_ids_of(model, tokenizer) -> list[int]:
    """The end tokens a response stops on: the tokenizer's EOS plus every id in the model's
    ``generation_config.eos_token_id`` (a single id or a list, e.g. a chat model's end-of-turn token).

    Every engine stops on this same set, so ``hf``, ``hf_fast`` and ``vllm`` cut a response at the same
    token (returns sorted ids).
    """
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(e) for e in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]))
    return sorted(ids)


class HFEngine:
    """KV-cached sampling with a Hugging Face causal LM, recording μ's log-probs (and top-K).

    Args:
        model: the policy; the engine keeps its *own* copy when ``copy_model`` (needed for stale
            rollouts), else it samples with the trainer's model object itself.
        tokenizer: supplies the pad id and decoding; the end tokens are :func:`eos_ids_of` (the
            tokenizer's EOS and the model's generation config's), as in every engine.
        copy_model: keep a private copy updated by :meth:`sync_weights`.
        rollout_dtype: e.g. ``"bfloat16"``: sample from a private copy in that precision, so that μ
            differs from the trainer's float32 π_old by precision, as with a separate inference
            engine (implies a copy; :meth:`sync_weights` casts on load).
    """

    def __init__(self, model, tokenizer, copy_model: bool = False, rollout_dtype: str | None = None):
        dtype = getattr(torch, rollout_dtype) if isinstance(rollout_dtype, str) else rollout_dtype
        if dtype == torch.float32:
            dtype = None
        self.model = copy.deepcopy(model) if (copy_model or dtype is not None) else model
        if dtype is not None:
            self.model = self.model.to(dtype)
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.eos_ids = eos_ids_of(model, tokenizer)  # every end token (see eos_ids_of), not only the tokenizer's

    def sync_weights(self, model_or_state) -> None:
        """Load weights from a model or a state dict (no-op when the engine shares the trainer's model)."""
        if model_or_state is self.model:
            return
        state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
        self.model.load_state_dict(state)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]

    @torch.inference_mode()
    def generate(self, prompts: list[str], n: int = 1, max_new_tokens: int = 32, temperature: float = 1.0,
                 top_p: float = 1.0, topk: int | None = None, generator: torch.Generator | None = None) -> RolloutBatch:
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"generate: n and max_new_tokens must be >= 1, got {n}, {max_new_tokens}")
        model = self.model
        was_training = model.training
        model.eval()
        try:
            return self._generate(prompts, n, max_new_tokens, temperature, top_p, topk, generator)
        finally:  # also when generation raises: the trainer's model must not stay in eval mode
            model.train(was_training)

    def _generate(self, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float,
                  topk: int | None, generator: torch.Generator | None) -> RolloutBatch:
        model = self.model
        dev = next(model.parameters()).device  # every tensor below lives on the model's device
        generator = device_generator(generator, dev)
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=dev)  # (E,)
        unique_ids = self.encode(prompts)
        prompt_ids = [ids for ids in unique_ids for _ in range(n)]
        # prefill each prompt once, then copy its KV cache to its n samples (n× less prefill work)
        ids, pmask = (t.to(dev) for t in left_pad(unique_ids, self.pad_id))  # (G, P)
        padded = not bool(pmask.all())
        attn = pmask.long() if padded else None  # no mask at all when every prompt has the same length
        pos = (pmask.long().cumsum(-1) - 1).clamp(min=0)  # (G, P)
        cache_kw = _cache_kwarg(model)
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        past, logits = _out_cache(out), out.logits[:, -1]  # (G, V)
        if n > 1:
            past.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)  # (B, V)
            attn = None if attn is None else attn.repeat_interleave(n, dim=0)
            pos = pos.repeat_interleave(n, dim=0)
        B = logits.shape[0]
        next_pos = pos[:, -1:] + 1  # (B, 1)

        toks, logps, tk_ids, tk_logp = [], [], [], []
        alive = torch.ones(B, dtype=torch.bool, device=dev)
        for t in range(max_new_tokens):
            tok, logp_all = sample_next(logits, temperature, top_p, generator)
            tok = torch.where(alive, tok, torch.full_like(tok, self.pad_id))
            toks.append(tok)
            logps.append(logp_all.gather(-1, tok[:, None]).squeeze(-1))  # (B,)
            if topk:
                v, i = logp_all.topk(topk, dim=-1)  # (B, K)
                tk_ids.append(i)
                tk_logp.append(v)
            alive = alive & ~torch.isin(tok, eos)
            if not alive.any() or t == max_new_tokens - 1:
                break
            if attn is not None:
                attn = torch.cat([attn, torch.ones(B, 1, dtype=attn.dtype, device=dev)], dim=1)
            out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos,
                        use_cache=True, logits_to_keep=1, **{cache_kw: past})
            past, logits = _out_cache(out), out.logits[:, -1]
            next_pos = next_pos + 1

        resp = torch.stack(toks, dim=1)  # (B, T)
        is_end = torch.isin(resp, eos).long()  # (B, T)
        # a token is a response token if no end token came strictly before it
        mask = (torch.cumsum(is_end, dim=1) - is_end) == 0  # (B, T)
        resp = resp.masked_fill(~mask, self.pad_id)
        logp = torch.stack(logps, dim=1).float().masked_fill(~mask, 0.0)  # (B, T)
        finished = (is_end.bool() & mask).any(dim=1)  # (B,)
        texts = self.tokenizer.batch_decode(resp.tolist(), skip_special_tokens=True)
        return RolloutBatch(
            prompt_ids=prompt_ids, response_ids=resp, response_mask=mask, logp=logp,
            topk_ids=torch.stack(tk_ids, dim=1) if topk else None,
            topk_logp=torch.stack(tk_logp, dim=1).float() if topk else None,
            texts=texts, finished=finished,
        )


def _cache_kwarg(model) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns, then goes)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


ENGINES: dict[str, Callable[..., RolloutEngine]] = {"hf": HFEngine}


def register_engine(name: str, factory: Callable[..., RolloutEngine]) -> None:
    """Add an engine factory ``factory(model, tokenizer, **kw)`` under ``name``."""
    ENGINES[name] = factory


def get_engine(name: str, model, tokenizer, **kw) -> RolloutEngine:
    """Build a rollout engine by name (``hf``; ``hf_fast`` / ``vllm`` when their modules are installed)."""
    if name not in ENGINES:
        _load_optional_engines()
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; available: {sorted(ENGINES)}")
    return ENGINES[name](model, tokenizer, **kw)


def _load_optional_engines() -> None:
    """Engines that live in other modules register themselves on import (scale-out helper)."""
    import importlib

    for mod in ("cppo.train.fastgen", "cppo.train.vllm_engine"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
