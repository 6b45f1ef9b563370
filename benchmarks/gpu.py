"""Rollout tokens/s and update-step MFU of the built-in trainer's engines on one GPU.

What: for Qwen3-shaped models built from configs (random weights, nothing downloaded) at ~20M, ~100M and
~0.4B parameters, generate B = 256 prompts x 256 new tokens with
  - `generate`  transformers' `model.generate` (sampling, per-step scores kept for the log-probs),
  - `hf`        the trainer's KV-cached loop over `forward` (`cppo.train.rollout.HFEngine`),
  - `hf_fast`   the static-cache decode loop captured as a CUDA graph (`cppo.train.fastgen`),
  - `vllm`      vLLM with logprobs=K, when installed (in a child process, so its memory is freed),
all recording mu's top-K (K = 20) where the engine supports it, EOS ignored so every row makes exactly
256 tokens; and time one update step (forward + backward + AdamW, bf16 autocast) on a batch of
sequences to report model FLOP utilisation, MFU = 6 * N * tokens / time / peak, with N the
parameters that do matmul work (decoder layers, final norm and the lm_head; the embedding lookup and
the attention-score FLOPs are left out, the usual 6N convention).

Why: issue 6 measured plain generate at ~4.5k tokens/s (21M params) and ~3.4k (0.4B) on an H200,
20-150x slower than the update; the goals are rollout >= 10x plain generate and update MFU >= 40% at
~0.4B.

Usage:
    python benchmarks/gpu.py                       # the three sizes on the current GPU
    python benchmarks/gpu.py --sizes 20m --vocab 151936 --json results/gpu_bench.json
    python benchmarks/gpu.py --cpu-smoke           # tiny sizes on CPU (what the tests run)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

# Qwen3Config kwargs per named size (vocab set separately). 0.4b is Qwen3-0.6B's body (28 layers).
SIZES: dict[str, dict] = {
    "smoke": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  intermediate_size=64),
    "20m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                intermediate_size=1792),
    "100m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                 head_dim=64, intermediate_size=3072),
    "0.4b": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, intermediate_size=3072),
}

# dense bf16 peak TFLOP/s (no sparsity), matched against torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0))


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by name (None when unknown: pass --peak-tflops)."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def flop_params(model) -> int:
    """Parameters doing matmul work per token: all but the input embedding, plus the lm_head once even when
    it is tied to the embedding."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters()) - emb.numel()
    return n + (head.numel() if head is emb else 0)


def build(size: str, vocab: int, device: str, dtype):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=True,
                      pad_token_id=0, bos_token_id=None, eos_token_id=None, **SIZES[size])
    with torch.device(device):
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(cfg)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.to(dtype).eval()


class _Encoding(dict):
    @property
    def input_ids(self):
        return self["input_ids"]


class IdTokenizer:
    """A stand-in tokenizer for `HFEngine`/`FastHFEngine`: a prompt string is space-separated token ids.
    Its EOS id (-1) never occurs, so every row runs to max_new_tokens."""

    pad_token_id = 0
    eos_token_id = -1

    def __call__(self, text, add_special_tokens=False):
        return _Encoding(input_ids=[int(t) for t in text.split()])

    def batch_decode(self, rows, skip_special_tokens=True):
        return [""] * len(rows)

    def decode(self, ids, skip_special_tokens=True):
        return ""


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str):
    """(seconds, fn's result)."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def rollout_rows(model, prompts: list[list[int]], new_tokens: int, topk: int, device: str, engines: list[str]):
    """Tokens/s of each engine on the same prompts; every row generates exactly `new_tokens`."""
    import torch

    from cppo.train.fastgen import FastHFEngine
    from cppo.train.rollout import HFEngine, left_pad

    B = len(prompts)
    texts = [" ".join(map(str, p)) for p in prompts]
    ids, mask = left_pad(prompts, 0)
    ids, mask = ids.to(device), mask.to(device)
    tok = IdTokenizer()
    gen = torch.Generator(device=device).manual_seed(0)

    def plain_generate(n):
        out = model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True, temperature=1.0,
                             top_p=1.0, top_k=0, max_new_tokens=n, min_new_tokens=n,
                             output_scores=True, return_dict_in_generate=True)
        scores = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # (B, T, V) what an engine must record
        scores.topk(topk, dim=-1)
        return int(out.sequences.shape[0] * (out.sequences.shape[1] - ids.shape[1]))

    runs = {
        "generate": plain_generate,
        "hf": lambda n: HFEngine(model, tok).generate(texts, 1, n, 1.0, 1.0, topk, gen).n_tokens,
        "hf_fast": lambda n: fast.generate(texts, 1, n, 1.0, 1.0, topk, gen).n_tokens,
    }
    fast = FastHFEngine(model, tok)
    rows = []
    for name in engines:
        if name == "vllm":
            continue
        try:
            # warm-up: full length for hf_fast (captures the CUDA graph of this shape), a few tokens otherwise
            runs[name](new_tokens if name == "hf_fast" else min(new_tokens, 8))
            seconds, n_tokens = _timed(lambda: runs[name](new_tokens), device)
            rows.append(dict(engine=name, tokens=n_tokens, seconds=seconds, tokens_per_s=n_tokens / seconds))
        except Exception as err:  # report and go on: one failing engine should not hide the others
            rows.append(dict(engine=name, error=f"{type(err).__name__}: {err}"[:200]))
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def check_row(model, prompts: list[list[int]], device: str, n_new: int = 16) -> dict:
    """Correctness before speed: hf_fast's teacher-forced log-probs against one full forward pass, and (on
    CUDA) the graphed decode step against the same step run eagerly. Max |difference| of log mu."""
    import torch

    from cppo.train.fastgen import FastDecoder
    from cppo.train.rollout import left_pad

    ids, mask = left_pad(prompts[:4], 0)
    ids, mask = ids.to(device), mask.to(device)
    cont = torch.randint(1, model.config.vocab_size, (ids.shape[0], n_new), device=device,
                         generator=torch.Generator(device=device).manual_seed(1))
    eager = FastDecoder(model, cuda_graph=False).run(ids, mask, n_new, forced_tokens=cont, eos_ids=[])
    full = torch.cat([ids, cont], 1)
    fmask = torch.cat([mask, torch.ones_like(cont, dtype=torch.bool)], 1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=fmask.long(),
                       position_ids=(fmask.long().cumsum(1) - 1).clamp(min=0)).logits.float()
    ref = torch.log_softmax(logits[:, ids.shape[1] - 1:-1], -1).gather(2, cont[..., None]).squeeze(-1)
    row = dict(vs_forward=float((eager.logp - ref).abs().max()))
    if device == "cuda":
        graphed = FastDecoder(model, cuda_graph=True).run(ids, mask, n_new, forced_tokens=cont, eos_ids=[])
        row["graph_vs_eager"] = float((graphed.logp - eager.logp).abs().max())
    return row


def vllm_row(model, prompts, new_tokens: int, topk: int) -> dict:
    """vLLM tokens/s, measured in a child process (vLLM does not release GPU memory reliably in-process)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return dict(engine="vllm", error="not installed (pip install 'cppo-bench[vllm]')")
    with tempfile.TemporaryDirectory(prefix="cppo-bench-vllm-") as tmp:
        model.save_pretrained(tmp)
        Path(tmp, "prompts.json").write_text(json.dumps(prompts))
        cmd = [sys.executable, __file__, "--vllm-child", tmp, "--new-tokens", str(new_tokens), "--topk", str(topk)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return dict(engine="vllm", error=f"child failed (rc={proc.returncode}): {proc.stderr[-300:]}")


def vllm_child(model_dir: str, new_tokens: int, topk: int) -> None:
    """Run inside the child process: generate with vLLM and print one JSON line."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from cppo.train.vllm_engine import assemble_batch

    prompts = json.loads(Path(model_dir, "prompts.json").read_text())
    llm = LLM(model=model_dir, skip_tokenizer_init=True, dtype="bfloat16", gpu_memory_utilization=0.6,
              max_logprobs=max(topk, 1), logprobs_mode="processed_logprobs", seed=0)

    def params(n):
        return SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=n, min_tokens=n, ignore_eos=True,
                              logprobs=topk, detokenize=False, seed=0)

    reqs = [{"prompt_token_ids": p} for p in prompts]

    def once(n):
        res = llm.generate(reqs, params(n), use_tqdm=False)
        # the conversion to a RolloutBatch is part of the engine's cost
        return assemble_batch(prompts, [r.outputs[0] for r in res], topk, pad_id=0).n_tokens

    once(8)
    t0 = time.perf_counter()
    n = once(new_tokens)
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(engine="vllm", tokens=n, seconds=seconds, tokens_per_s=n / seconds)))


def update_row(model, batch: int, seq: int, steps: int, device: str, peak: float | None, compile_model: bool) -> dict:
    """Time forward + backward + AdamW on (batch, seq) tokens with bf16 autocast (fp32 master weights)."""
    import torch

    model = model.float().train()
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    g = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(1, model.config.vocab_size, (batch, seq), generator=g, device=device)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step():
        with amp:
            logits = fwd(input_ids=ids).logits  # (B, S, V)
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])  # policy-gradient-like
            loss = -logp.mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    n = flop_params(model)
    try:
        for _ in range(2):
            step()
        seconds = _timed(lambda: [step() for _ in range(steps)], device)[0] / steps
    except torch.cuda.OutOfMemoryError:
        return dict(tokens=batch * seq, error="out of memory (lower --update-batch)")
    tokens = batch * seq
    tflops = 6 * n * tokens / seconds / 1e12
    return dict(tokens=tokens, seconds=seconds, tflops=tflops, mfu=(tflops / peak) if peak else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20m,100m,0.4b", help=f"comma list of {sorted(SIZES)}")
    ap.add_argument("--batch", type=int, default=256, help="prompts per rollout")
    ap.add_argument("--prompt-len", type=int, default=64, help="max prompt length (lengths vary over [len/2, len])")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--topk", type=int, default=20, help="mu's top-K recorded per token")
    ap.add_argument("--vocab", type=int, default=128, help="vocabulary (128 ~ the suite's char tokenizer; "
                                                          "151936 = Qwen3's)")
    ap.add_argument("--engines", default="generate,hf,hf_fast,vllm")
    ap.add_argument("--update-batch", type=int, default=32, help="sequences per update step")
    ap.add_argument("--update-seq", type=int, default=512, help="tokens per sequence in the update step")
    ap.add_argument("--update-steps", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model for the update step")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the detected bf16 peak")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (for tests)")
    ap.add_argument("--vllm-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.vllm_child:
        vllm_child(args.vllm_child, args.new_tokens, args.topk)
        return 0

    import torch

    if args.cpu_smoke:
        device, dtype = "cpu", torch.float32
        args.sizes, args.batch, args.prompt_len, args.new_tokens = "smoke", 4, 8, 8
        args.vocab, args.topk, args.update_batch, args.update_seq, args.update_steps = 64, 5, 2, 16, 1
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, dtype = "cuda", torch.bfloat16
    else:
        print("no CUDA GPU: run with --cpu-smoke, or on a GPU machine", file=sys.stderr)
        return 2
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ("generate", "hf", "hf_fast", "vllm")]
    if bad:
        raise SystemExit(f"unknown engine(s) {bad}; choose from generate, hf, hf_fast, vllm")
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = args.peak_tflops or (peak_tflops(device_name) if device == "cuda" else None)

    g = torch.Generator().manual_seed(0)
    lens = torch.randint(max(1, args.prompt_len // 2), args.prompt_len + 1, (args.batch,), generator=g).tolist()
    prompts = [torch.randint(1, args.vocab, (n,), generator=g).tolist() for n in lens]

    results = dict(device=device_name, peak_bf16_tflops=peak, batch=args.batch, prompt_len=args.prompt_len,
                   new_tokens=args.new_tokens, topk=args.topk, vocab=args.vocab, torch=torch.__version__, sizes=[])
    for size in sizes:
        model = build(size, args.vocab, device, dtype)
        n = flop_params(model)
        print(f"[{size}] {n / 1e6:.1f}M matmul params on {device_name}", file=sys.stderr, flush=True)
        update = update_row(build(size, args.vocab, device, torch.float32), args.update_batch, args.update_seq,
                            args.update_steps, device, peak, args.compile)
        gc.collect()
        check = check_row(model, prompts, device)
        rows = rollout_rows(model, prompts, args.new_tokens, args.topk, device, engines)
        if "vllm" in engines:
            rows.append(vllm_row(model, prompts, args.new_tokens, args.topk))
        results["sizes"].append(dict(size=size, params=n, check=check, rollout=rows, update=update))
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def format_table(results: dict) -> str:
    """Markdown tables: rollout tokens/s per engine (and speed-up over generate), update-step MFU."""
    lines = [f"device: {results['device']}  (bf16 peak {results['peak_bf16_tflops'] or 'unknown'} TFLOP/s); "
             f"rollout B={results['batch']} prompts x {results['new_tokens']} new tokens, top-{results['topk']}, "
             f"vocab {results['vocab']}", "",
             "| model | params | engine | tokens/s | x generate |", "| --- | ---: | --- | ---: | ---: |"]
    for s in results["sizes"]:
        base = next((r.get("tokens_per_s") for r in s["rollout"] if r["engine"] == "generate"), None)
        for r in s["rollout"]:
            if "error" in r:
                lines.append(f"| {s['size']} | {_count(s['params'])} | {r['engine']} | {r['error']} | |")
                continue
            speed = f"{r['tokens_per_s'] / base:.1f}" if base else ""
            lines.append(f"| {s['size']} | {_count(s['params'])} | {r['engine']} | {r['tokens_per_s']:,.0f} | {speed} |")
    lines += ["", "| model | hf_fast log mu vs full forward (max abs) | CUDA graph vs eager (max abs) |",
              "| --- | ---: | ---: |"]
    for s in results["sizes"]:
        c = s["check"]
        graph = f"{c['graph_vs_eager']:.2e}" if "graph_vs_eager" in c else "n/a (no CUDA)"
        lines.append(f"| {s['size']} | {c['vs_forward']:.2e} | {graph} |")
    lines += ["", "| model | update tokens | step s | TFLOP/s | MFU |", "| --- | ---: | ---: | ---: | ---: |"]
    for s in results["sizes"]:
        u = s["update"]
        if "error" in u:
            lines.append(f"| {s['size']} | {u['tokens']} | {u['error']} | | |")
            continue
        mfu = f"{100 * u['mfu']:.1f}%" if u["mfu"] is not None else "n/a"
        lines.append(f"| {s['size']} | {u['tokens']} | {u['seconds']:.3f} | {u['tflops']:.2f} | {mfu} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
