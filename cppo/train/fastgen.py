"""Fast rollouts for Qwen3-architecture models: a decode loop over a preallocated KV cache (`hf_fast`).

Why: on a GPU, `model.generate` is launch-bound for the small models of this suite (issue 6: on an
H200, 256 prompts x 256 new tokens ran at ~4.5k tokens/s for a 21M-parameter model, 20-150x slower
than the update step). The fix is to make one decode step a fixed sequence of kernels over
fixed-shape tensors, capture it once as a CUDA graph, and replay it for every new token.
`generate(cache_implementation="static")` under `torch.compile(mode="reduce-overhead")` does not
work with transformers 5.x (the static cache's in-place counter update breaks graph capture), so this
module owns the decode step instead of patching transformers'.

Design decisions:
- Reuse the model's own modules (token embedding, per-layer q/k/v/o projections, q/k RMSNorm, rotary
  embedding, MLP, final norm, lm_head), so the trainer's weights are used directly and there is
  nothing to convert. Only the KV cache and the attention call are ours (torch SDPA).
- Static cache: per layer K, V of shape (B, H_kv, L, D), zero-initialised, plus a (B, L) bool
  "slot holds a real token" mask updated in place. L is rounded up to a multiple of `bucket`, so
  prompts of slightly different lengths reuse the same buffers and the same captured graph.
- Left-padded prompts: slot j < P holds prompt token j (pad slots are never attended to); the t-th
  generated token of every row goes to slot P + t. Positions count real tokens only
  (cumsum(mask) - 1, as transformers' generate does), so a padded row sees the same positions as it
  would alone.
- Grouped-query attention without repeating K/V: the G query heads that share a KV head are folded
  into SDPA's query axis, (B, H, S, D) -> (B, H_kv, G*S, D).
- One decode step reads its inputs from static buffers (token, position, slot) and has no host
  synchronisation, so it can be captured as a CUDA graph (`torch.cuda.CUDAGraph`). Sampling
  (temperature, top-p, the draw) runs eagerly after the graph: a handful of kernels that use the
  caller's `torch.Generator`. On CPU everything runs eagerly.
- Finished rows keep decoding (static shapes) but their tokens are replaced by padding and masked out;
  the loop stops early once every row has finished (checked every `check_every` steps so the host
  does not wait on the device after each token).

Log-probs (the convention of the plain `hf` engine, see `cppo.train.rollout`): log mu(y_t) =
log_softmax(logits / temperature), after the temperature and before top-p truncation (tokens are drawn
from the truncated, renormalised distribution); greedy decoding (temperature 0) records the untempered
log-softmax. At temperature 1 and top_p 1 this is the model's own distribution. mu's top-K ids/log-probs
come from the same log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cppo.train.rollout import RolloutBatch, device_generator, eos_ids_of, left_pad, outside_nucleus, register_engine

# rope variants whose frequencies depend on the sequence length (data-dependent, not capturable)
_DYNAMIC_ROPE = ("dynamic", "longrope")


# ----------------------------------------------------------------------------------------------
# sampling: pure tensor functions
# ----------------------------------------------------------------------------------------------


def recorded_logprobs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log mu over the vocabulary, (B, V) float32: log_softmax(logits / temperature) (temperature 0: of logits)."""
    logits = logits.float()
    return torch.log_softmax(logits / temperature if temperature > 0 else logits, dim=-1)


def nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """Restrict log-probs (B, V) to the top-p nucleus and renormalise; the rest gets -inf.

    Which tokens are dropped is `cppo.train.rollout.outside_nucleus` (the same rule as the `hf` engine).
    """
    if top_p >= 1.0:
        return logp
    kept = logp.masked_fill(outside_nucleus(logp, top_p), float("-inf"))
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


def draw(logp: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one token per row from exp(logp) (already tempered/truncated); argmax when temperature is 0.

    Uses the exponential race (argmax_i p_i / E_i with E_i ~ Exp(1), equivalent to Gumbel-max), which is
    one elementwise pass plus an argmax and consumes a fixed amount of randomness per step.
    Returns (B,) long.
    """
    if temperature <= 0:
        return logp.argmax(dim=-1)
    noise = torch.empty_like(logp).exponential_(generator=generator)  # (B, V)
    noise.clamp_min_(torch.finfo(noise.dtype).tiny)  # log(0) = -inf would turn a dropped token into NaN
    return (logp - noise.log()).argmax(dim=-1)


# ----------------------------------------------------------------------------------------------
# the model step over a static cache
# ----------------------------------------------------------------------------------------------


@dataclass
class StaticKVCache:
    """Preallocated keys/values of every layer and the slot-validity mask."""

    k: list[torch.Tensor]
    """per layer (B, H_kv, L, D) keys after q/k norm and RoPE"""
    v: list[torch.Tensor]
    """per layer (B, H_kv, L, D) values"""
    valid: torch.Tensor
    """(B, L) bool: the slot holds a real (non-pad) token that later tokens may attend to"""

    @classmethod
    def allocate(cls, model, batch: int, length: int) -> "StaticKVCache":
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        param = next(model.parameters())
        shape = (batch, cfg.num_key_value_heads, length, head_dim)
        k = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(cfg.num_hidden_layers)]
        v = [torch.zeros(shape, device=param.device, dtype=param.dtype) for _ in range(cfg.num_hidden_layers)]
        return cls(k=k, v=v, valid=torch.zeros(batch, length, dtype=torch.bool, device=param.device))

    def reset(self) -> None:
        # zero values too: masked slots get weight exactly 0, and 0 * stale-but-finite stays 0
        for t in (*self.k, *self.v):
            t.zero_()
        self.valid.zero_()


def check_supported(model) -> None:
    """Raise ValueError unless `model` is a decoder this module reproduces exactly."""
    cfg = getattr(model, "config", None)
    base = getattr(model, "model", None)
    if cfg is None or base is None or not hasattr(base, "layers") or not hasattr(model, "lm_head"):
        raise ValueError("hf_fast needs a Qwen3/Qwen2/Llama-style *ForCausalLM (model.model.layers, lm_head)")
    if cfg.model_type not in ("qwen3", "qwen2", "llama"):
        raise ValueError(f"hf_fast supports model_type qwen3, qwen2, llama; got {cfg.model_type!r}")
    layer_types = getattr(cfg, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        raise ValueError("hf_fast does not implement sliding-window layers; use the plain `hf` engine")
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope in _DYNAMIC_ROPE:
        raise ValueError(f"hf_fast needs a static RoPE (got rope_type={rope!r})")


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half form). x (B, H, S, D); cos, sin (B, S, D)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _attention(attn, x, cos, sin, k_cache, v_cache, slots, mask, over_cache: bool) -> torch.Tensor:
    """One attention block: project, norm, rotate, write K/V at `slots`, attend.

    x (B, S, hidden); slots (S,) long cache slots of the S new tokens. `over_cache`: attend over the whole
    cache with mask (B, 1, S, L) (decode); else over the S new tokens only with mask (B, 1, S, S) (prefill
    of a fresh cache: cheaper, and the mask stays (S, S) however long the cache is).
    """
    B, S, _ = x.shape
    hd = attn.head_dim
    q = attn.q_proj(x).view(B, S, -1, hd)  # (B, S, H, D)
    k = attn.k_proj(x).view(B, S, -1, hd)  # (B, S, Hkv, D)
    v = attn.v_proj(x).view(B, S, -1, hd)
    if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over the head dim of q and k
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H*, S, D)
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    k_cache.index_copy_(2, slots, k)
    v_cache.index_copy_(2, slots, v)
    keys, values = (k_cache, v_cache) if over_cache else (k, v)  # (B, Hkv, L or S, D)
    H, Hkv, L = q.shape[1], keys.shape[1], keys.shape[2]
    G = H // Hkv
    # fold the G query heads sharing a KV head into the query axis (head h uses KV head h // G)
    qg = q.reshape(B, Hkv, G * S, hd)  # (B, Hkv, G*S, D)
    mg = mask.unsqueeze(2).expand(B, 1, G, S, L).reshape(B, 1, G * S, L)
    o = F.scaled_dot_product_attention(qg, keys, values, attn_mask=mg, scale=attn.scaling)
    o = o.reshape(B, H, S, hd).transpose(1, 2).reshape(B, S, H * hd)  # (B, S, H*D)
    return attn.o_proj(o)


def forward_cached(model, ids, pos, slots, mask, cache: StaticKVCache, over_cache: bool = True) -> torch.Tensor:
    """Run the decoder on S new tokens per row, writing their K/V into `cache`.

    ids, pos (B, S) long; slots (S,) long; mask (B, 1, S, L) bool, or (B, 1, S, S) with over_cache=False
    (see `_attention`). Returns the final-norm hidden state of the last new token, (B, hidden).
    """
    base = model.model
    h = base.embed_tokens(ids)  # (B, S, hidden)
    cos, sin = base.rotary_emb(h, pos)  # (B, S, D)
    for i, layer in enumerate(base.layers):
        h = h + _attention(layer.self_attn, layer.input_layernorm(h), cos, sin, cache.k[i], cache.v[i], slots, mask,
                           over_cache)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return base.norm(h[:, -1])


class _Runner:
    """Cache + static step inputs for one (B, L) shape, and the step, graphed on CUDA."""

    def __init__(self, model, batch: int, length: int, cuda_graph: bool, compile_step: bool = False):
        self.model = model
        # normal (not inference-mode) tensors, so the runner can be reused whatever mode the caller is in
        with torch.inference_mode(False):
            self.cache = StaticKVCache.allocate(model, batch, length)
            dev = self.cache.valid.device
            self.tok = torch.zeros(batch, dtype=torch.long, device=dev)  # (B,) input token
            self.pos = torch.zeros(batch, dtype=torch.long, device=dev)  # (B,) its position
            self.slot = torch.zeros(1, dtype=torch.long, device=dev)  # (1,) its cache slot
        self.graph = None
        self.logits = None
        # optional: fuse the step's elementwise work (norms, RoPE, SiLU) with inductor before capture
        self._fn = torch.compile(self._step, dynamic=False) if compile_step else self._step
        if cuda_graph:
            self._capture()

    def _step(self) -> torch.Tensor:
        cache = self.cache
        cache.valid.index_fill_(1, self.slot, True)
        mask = cache.valid[:, None, None, :]  # (B, 1, 1, L)
        h = forward_cached(self.model, self.tok[:, None], self.pos[:, None], self.slot, mask, cache)
        return self.model.lm_head(h).float()  # (B, V)

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream, as CUDA-graph capture requires
            for _ in range(2):
                self._fn()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._fn()
        self.cache.reset()  # the warm-up wrote into slot 0

    def step(self) -> torch.Tensor:
        if self.graph is None:
            return self._fn()
        self.graph.replay()
        return self.logits


@dataclass
class DecodeOutput:
    """What one decode call produced, (B, N) with N <= max_new_tokens (trimmed to the longest row)."""

    tokens: torch.LongTensor  # (B, N) generated ids, pad after EOS
    finished: torch.BoolTensor  # (B,) the row ended with an EOS token
    mask: torch.BoolTensor  # (B, N) True on generated tokens incl. EOS
    logp: torch.Tensor  # (B, N) float32 log mu(y_t)
    topk_ids: torch.LongTensor | None  # (B, N, K)
    topk_logp: torch.Tensor | None  # (B, N, K)


class FastDecoder:
    """Decode loop over a static KV cache for one model (see the module docstring).

    Args:
        model: a Qwen3 (or Qwen2/Llama) *ForCausalLM; its modules are used as they are.
        cuda_graph: capture the decode step as a CUDA graph; None = on when the model is on CUDA.
        bucket: cache length granularity; L = round_up(P + max_new_tokens, bucket).
        check_every: steps between host checks for "every row finished".
        compile_step: `torch.compile` the decode step (inductor fuses the small elementwise kernels) before
            it is captured; off by default (compilation takes a while and needs a C++/Triton toolchain).
    """

    def __init__(self, model, cuda_graph: bool | None = None, bucket: int = 64, check_every: int = 8,
                 compile_step: bool = False):
        check_supported(model)
        if bucket < 1 or check_every < 1:
            raise ValueError(f"bucket and check_every must be >= 1 (got {bucket}, {check_every})")
        self.model = model
        device = next(model.parameters()).device
        self.cuda_graph = (device.type == "cuda") if cuda_graph is None else bool(cuda_graph)
        if self.cuda_graph and device.type != "cuda":
            raise ValueError("cuda_graph=True needs the model on a CUDA device")
        self.bucket = bucket
        self.check_every = check_every
        self.compile_step = compile_step
        self._runners: dict[tuple[int, int], _Runner] = {}

    def _runner(self, batch: int, length: int) -> _Runner:
        key = (batch, length)
        if key not in self._runners:
            self._runners.clear()  # one shape at a time: caches are large on GPU
            self._runners[key] = _Runner(self.model, batch, length, self.cuda_graph, self.compile_step)
        return self._runners[key]

    @torch.no_grad()
    def run(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        topk: int | None = None,
        eos_ids: list[int] | None = None,
        pad_id: int = 0,
        generator: torch.Generator | None = None,
        forced_tokens: torch.LongTensor | None = None,
    ) -> DecodeOutput:
        """Generate (or, with `forced_tokens`, teacher-force) up to `max_new_tokens` per row.

        Args:
            input_ids: (B, P) left-padded prompts. attention_mask: (B, P), 1/True on real tokens; every row
                needs at least one.
            forced_tokens: (B, N) tokens to feed instead of sampling; their log-probs are recorded. Used to
                score a fixed continuation through exactly the decode path that generation uses.
        """
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids and attention_mask must be (B, P); got {tuple(input_ids.shape)}, "
                             f"{tuple(attention_mask.shape)}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if topk is not None and not 1 <= topk <= self.model.config.vocab_size:
            raise ValueError(f"topk must be in [1, vocab_size], got {topk}")
        if forced_tokens is not None and forced_tokens.shape != (input_ids.shape[0], max_new_tokens):
            raise ValueError(f"forced_tokens must be (B, max_new_tokens); got {tuple(forced_tokens.shape)}")
        dev = next(self.model.parameters()).device
        input_ids = input_ids.to(dev)
        amask = attention_mask.to(dev).bool()
        if not bool(amask.any(dim=1).all()):
            raise ValueError("every prompt needs at least one real token")
        B, P = input_ids.shape
        N = max_new_tokens
        L = -(-(P + N) // self.bucket) * self.bucket
        run = self._runner(B, L)
        cache = run.cache
        cache.reset()
        gen = device_generator(generator, dev)
        eos = torch.tensor(sorted(set(eos_ids or [])), dtype=torch.long, device=dev)  # (E,)

        # prefill: causal attention among real prompt tokens; a pad query attends to itself only, which
        # keeps its (never used) hidden state finite
        cache.valid[:, :P] = amask
        lengths = amask.sum(dim=1)  # (B,) real prompt lengths = position of the first new token
        pos = (amask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
        s = torch.arange(P, device=dev)
        causal = s[None, :] <= s[:, None]  # (P, P) key j <= query i
        mask = (causal[None] & amask[:, None, :]) | torch.eye(P, dtype=torch.bool, device=dev)[None]  # (B, P, P)
        h = forward_cached(self.model, input_ids, pos, s, mask[:, None], cache, over_cache=False)
        logits = self.model.lm_head(h).float()  # (B, V)

        tokens = torch.full((B, N), pad_id, dtype=torch.long, device=dev)
        out_mask = torch.zeros(B, N, dtype=torch.bool, device=dev)
        out_logp = torch.zeros(B, N, dtype=torch.float32, device=dev)
        k_ids = torch.zeros(B, N, topk, dtype=torch.long, device=dev) if topk else None
        k_logp = torch.zeros(B, N, topk, dtype=torch.float32, device=dev) if topk else None
        finished = torch.zeros(B, dtype=torch.bool, device=dev)
        steps = N
        for t in range(N):
            logp_all = recorded_logprobs(logits, temperature)  # (B, V) log mu
            if forced_tokens is not None:
                tok = forced_tokens[:, t].to(dev)
            else:
                tok = draw(nucleus(logp_all, top_p) if temperature > 0 else logp_all, temperature, gen)
            live = ~finished
            tokens[:, t] = torch.where(live, tok, pad_id)
            out_mask[:, t] = live
            out_logp[:, t] = torch.where(live, logp_all.gather(1, tok[:, None]).squeeze(1), 0.0)
            if topk:
                v, i = logp_all.topk(topk, dim=-1)  # (B, K)
                k_logp[:, t], k_ids[:, t] = v, i
            finished = finished | torch.isin(tok, eos)
            if t == N - 1 or ((t + 1) % self.check_every == 0 and bool(finished.all())):
                steps = t + 1
                break
            run.tok.copy_(tokens[:, t])
            run.pos.copy_(lengths + t)
            run.slot.fill_(P + t)
            logits = run.step()
        T = max(int(out_mask[:, :steps].sum(dim=1).max()), 1)
        return DecodeOutput(
            tokens=tokens[:, :T],
            finished=finished,
            mask=out_mask[:, :T],
            logp=out_logp[:, :T],
            topk_ids=k_ids[:, :T] if topk else None,
            topk_logp=k_logp[:, :T] if topk else None,
        )


# ----------------------------------------------------------------------------------------------
# the rollout engine (the interface of cppo/train/rollout.py)
# ----------------------------------------------------------------------------------------------


class FastHFEngine:
    """`hf_fast` rollout engine: the trainer's model through `FastDecoder`.

    Same `generate`/`sync_weights` interface and the same `RolloutBatch` as the plain `hf` engine.

    Args:
        model, tokenizer: the trainer's model. By default it is used in place: weights updated by the
            optimizer are seen by the next rollout, also by a captured CUDA graph, since parameters are
            updated in place.
        copy_model: keep a private copy (needed for stale rollouts).
        rollout_dtype: e.g. "bfloat16": roll out from a private copy in that dtype (mu then differs from
            pi_old by precision, as with a separate inference engine). Implies a copy.
        cuda_graph, bucket, check_every, compile_step: see `FastDecoder`.

    A private copy is filled by `sync_weights` (the trainer's stale weights, say); when no `sync_weights`
    came since the last `generate`, the copy is first refreshed from the live trainer model, so a trainer
    that never syncs (fresh rollouts) still samples with its current weights.
    """

    name = "hf_fast"

    def __init__(self, model, tokenizer, copy_model: bool = False, rollout_dtype: str | None = None,
                 cuda_graph: bool | None = None, bucket: int = 64, check_every: int = 8,
                 compile_step: bool = False):
        self.tokenizer = tokenizer
        dtype = getattr(torch, rollout_dtype) if isinstance(rollout_dtype, str) else rollout_dtype
        self.model = self.source = model
        self._synced = True  # the copy starts equal to the source
        if copy_model or dtype is not None:
            import copy

            self.model = copy.deepcopy(model).eval()
            if dtype is not None:
                self.model = self.model.to(dtype)
        self.decoder = FastDecoder(self.model, cuda_graph=cuda_graph, bucket=bucket, check_every=check_every,
                                   compile_step=compile_step)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        self.eos_ids = eos_ids_of(model, tokenizer)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def generate(self, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float,
                 topk: int | None, generator: torch.Generator | None):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not self._synced:
            self.sync_weights(self.source)
        self._synced = False
        prompt_ids = [ids for ids in self.encode(prompts) for _ in range(n)]  # each prompt n times, grouped
        ids, mask = left_pad(prompt_ids, self.pad_id)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.decoder.run(ids, mask, max_new_tokens, temperature=temperature, top_p=top_p, topk=topk,
                                   eos_ids=self.eos_ids, pad_id=self.pad_id, generator=generator)
        finally:
            self.model.train(was_training)
        texts = [self.tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
                 for row, m in zip(out.tokens.cpu(), out.mask.cpu())]
        return RolloutBatch(
            prompt_ids=prompt_ids,
            response_ids=out.tokens,
            response_mask=out.mask,
            logp=out.logp,
            topk_ids=out.topk_ids,
            topk_logp=out.topk_logp,
            texts=texts,
            finished=out.finished,
        )

    @torch.no_grad()
    def sync_weights(self, model_or_state) -> None:
        """Load weights from a model or a state dict: a no-op when the engine uses the trainer's model
        itself, else an in-place copy (in place, so that a captured CUDA graph keeps pointing at them)."""
        self._synced = True
        if model_or_state is self.model:
            return
        src = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
        for name, p in self.model.state_dict().items():
            p.copy_(src[name])


register_engine("hf_fast", FastHFEngine)
