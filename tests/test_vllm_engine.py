"""The vLLM engine on CPU: batch assembly from hand-made vLLM-style outputs, and its glue with a fake vLLM."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from types import SimpleNamespace as NS

import pytest
import torch

from cppo.train.rollout import HFEngine, get_engine
from cppo.train.vllm_engine import INSTALL_HINT, VLLMEngine, assemble_batch

EOS, PAD = 2, 0


def lp(value, rank):
    """A vLLM `Logprob`-like entry."""
    return NS(logprob=value, rank=rank, decoded_token=None)


def test_ragged_outputs_with_eos_and_sampled_token_outside_topk():
    outputs = [
        # 3 tokens, stops on EOS; at position 1 the sampled token 9 is outside the top-2 (rank 4)
        NS(token_ids=[5, 9, EOS], text="ab", logprobs=[
            {5: lp(-0.1, 1), 6: lp(-2.5, 2)},
            {7: lp(-0.5, 1), 8: lp(-1.5, 2), 9: lp(-3.0, 4)},
            {EOS: lp(-0.2, 1), 4: lp(-1.9, 2)},
        ]),
        # 5 tokens, cut at max_tokens (no EOS); entries in no particular order
        NS(token_ids=[4, 4, 4, 4, 4], text="cccc", logprobs=[{6: lp(-1.0, 2), 4: lp(-0.4, 1)}] * 5),
        # 1 token: EOS straight away
        NS(token_ids=[EOS], text="", logprobs=[{3: lp(-0.3, 1), EOS: lp(-1.2, 2)}]),
    ]
    prompts = [[1, 2], [1, 2], [7]]
    b = assemble_batch(prompts, outputs, topk=2, pad_id=PAD, eos_ids=[EOS])
    assert b.prompt_ids == prompts and b.texts == ["ab", "cccc", ""]
    assert b.response_ids.tolist() == [[5, 9, EOS, PAD, PAD], [4] * 5, [EOS, PAD, PAD, PAD, PAD]]
    assert b.response_mask.sum(1).tolist() == [3, 5, 1]
    assert b.finished.tolist() == [True, False, True]
    assert b.logp.dtype == torch.float32
    torch.testing.assert_close(b.logp[0], torch.tensor([-0.1, -3.0, -0.2, 0.0, 0.0]))
    torch.testing.assert_close(b.logp[2], torch.tensor([-1.2, 0.0, 0.0, 0.0, 0.0]))
    assert b.topk_ids.shape == (3, 5, 2)
    assert b.topk_ids[0, 1].tolist() == [7, 8]  # the sampled token 9 is not one of mu's top-2
    torch.testing.assert_close(b.topk_logp[0, 1], torch.tensor([-0.5, -1.5]))
    assert b.topk_ids[1, 3].tolist() == [4, 6]  # sorted by log-prob, descending
    assert b.topk_ids[2, 0].tolist() == [3, EOS]
    assert (b.logp[~b.response_mask] == 0).all()


def test_plain_float_entries_and_no_topk():
    out = NS(token_ids=[3, 4], text="x", logprobs=[{3: -0.7}, {4: -0.1, 5: -2.0}])
    b = assemble_batch([[1]], [out], topk=None, pad_id=PAD)
    assert b.topk_ids is None and b.topk_logp is None
    torch.testing.assert_close(b.logp, torch.tensor([[-0.7, -0.1]]))
    assert b.finished.tolist() == [False]
    # without ranks, the K highest entries are mu's top-K
    out = NS(token_ids=[3], text="x", logprobs=[{3: -3.0, 4: -0.1, 5: -0.5}])
    b = assemble_batch([[1]], [out], topk=2, pad_id=PAD)
    assert b.topk_ids.tolist() == [[[4, 5]]] and b.logp.tolist() == [[-3.0]]


@pytest.mark.parametrize("bad, match", [
    (NS(token_ids=[3, 4], text="", logprobs=[{3: -0.1, 6: -1.0}]), "2 tokens but 1"),
    (NS(token_ids=[3], text="", logprobs=None), "logprobs"),
    (NS(token_ids=[3], text="", logprobs=[{5: -0.1, 6: -1.0}]), "sampled token 3"),
    (NS(token_ids=[3], text="", logprobs=[{3: lp(-0.1, 1)}]), "fewer than K=2"),
    (NS(token_ids=[3], text="", logprobs=[{3: lp(-4.0, 7), 5: lp(-0.1, 1)}]), "fewer than K=2"),
])
def test_malformed_outputs_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        assemble_batch([[1]], [bad], topk=2, pad_id=PAD)


def test_prompt_count_must_match():
    with pytest.raises(ValueError, match="2 prompts but 1"):
        assemble_batch([[1], [2]], [NS(token_ids=[3], text="", logprobs=[{3: -1.0}])], topk=None, pad_id=PAD)


def _as_vllm_outputs(batch, tok):
    """Re-express an hf-engine batch as vLLM would report it (sampled token + top-K per position)."""
    outs = []
    for b in range(batch.response_ids.shape[0]):
        n = int(batch.response_mask[b].sum())
        steps = []
        for t in range(n):
            entries = {int(i): lp(float(v), r + 1) for r, (i, v) in
                       enumerate(zip(batch.topk_ids[b, t], batch.topk_logp[b, t]))}
            sampled = int(batch.response_ids[b, t])
            entries.setdefault(sampled, lp(float(batch.logp[b, t]), 99))
            steps.append(entries)
        outs.append(NS(token_ids=batch.response_ids[b, :n].tolist(), logprobs=steps, text=batch.texts[b]))
    return outs


def test_same_batch_as_the_hf_engine():
    from cppo.models import build_model, build_tokenizer

    tok = build_tokenizer()
    model = build_model("xs", tok, seed=1).eval()
    a = HFEngine(model, tok).generate(["1+2*", "9-3+4*"], n=3, max_new_tokens=10, temperature=1.0, top_p=1.0,
                                      topk=3, generator=torch.Generator().manual_seed(0))
    b = assemble_batch(a.prompt_ids, _as_vllm_outputs(a, tok), topk=3, pad_id=tok.pad_token_id,
                       eos_ids=[tok.eos_token_id])
    for field in ("response_ids", "response_mask", "topk_ids", "finished"):
        assert getattr(b, field).equal(getattr(a, field)), field
    for field in ("logp", "topk_logp"):
        torch.testing.assert_close(getattr(b, field)[a.response_mask], getattr(a, field)[a.response_mask])
    assert b.prompt_ids == a.prompt_ids and b.texts == a.texts


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_gives_a_clear_error():
    from cppo.models import build_model, build_tokenizer

    tok = build_tokenizer()
    with pytest.raises(ImportError, match=r"cppo-bench\[vllm\]"):
        get_engine("vllm", build_model("xs", tok), tok)
    assert "pip install" in INSTALL_HINT


# --- the engine's glue, against a fake `vllm` module ------------------------------------------------------


class _FakeLLM:
    """Answers each request (n=1 each) with one completion, recording what it was asked; weights arrive
    through `collective_rpc("reload_weights", ...)` as in vLLM >= 0.11."""

    def __init__(self, **kw):
        self.kw = kw
        self.loaded: dict[str, torch.Tensor] = {}
        self.prefix_resets = 0

    def generate(self, prompts, params, use_tqdm=False):
        self.last = (prompts, params)
        assert len(params) == len(prompts) and all(p.n == 1 for p in params)
        results = []
        for i, p in enumerate(prompts):
            ids = p["prompt_token_ids"]
            out = NS(index=0, token_ids=[ids[-1], EOS][: 1 + i % 2], text=f"{i}",
                     logprobs=[{ids[-1]: lp(-0.5, 1), 9: lp(-1.0, 2)}, {EOS: lp(-0.25, 1), 9: lp(-2.0, 2)}][: 1 + i % 2])
            results.append(NS(outputs=[out]))
        return results

    def collective_rpc(self, method, kwargs=None):
        assert method == "reload_weights" and kwargs["is_checkpoint_format"] is True
        self.loaded = {k: v.clone() for k, v in kwargs["weights_iterator"]}
        return [None]

    def reset_prefix_cache(self):
        self.prefix_resets += 1


def _fake_vllm(monkeypatch, llm_cls):
    fake = types.ModuleType("vllm")
    fake.__version__ = "0.0-fake"
    fake.LLM = llm_cls
    fake.SamplingParams = lambda **kw: NS(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_engine_glue_with_a_fake_vllm(monkeypatch):
    """The engine's glue only (a stand-in vLLM); tests/test_vllm_real.py runs the real one."""
    from cppo.models import build_model, build_tokenizer

    _fake_vllm(monkeypatch, _FakeLLM)
    tok = build_tokenizer()
    model = build_model("xs", tok, seed=0)
    eng = get_engine("vllm", model, tok, gpu_memory_utilization=0.3)
    assert isinstance(eng, VLLMEngine) and eng.platform == "cuda"
    assert eng.llm.kw["logprobs_mode"] == "processed_logprobs" and eng.llm.kw["gpu_memory_utilization"] == 0.3
    assert eng.llm.kw["dtype"] == "float32"  # the trainer model's dtype when the profile names none
    assert os.path.exists(os.path.join(eng.llm.kw["model"], "config.json"))  # vLLM loads a saved copy

    b = eng.generate(["12", "3"], n=2, max_new_tokens=5, temperature=0.7, top_p=1.0, topk=2,
                     generator=torch.Generator().manual_seed(0))
    prompts, params = eng.llm.last
    p12, p3 = (tok(p, add_special_tokens=False)["input_ids"] for p in ("12", "3"))
    assert [p["prompt_token_ids"] for p in prompts] == [p12, p12, p3, p3]  # one request per sequence, no BOS
    assert {(p.max_tokens, p.logprobs, p.temperature) for p in params} == {(5, 2, 0.7)}
    assert params[0].stop_token_ids == [tok.eos_token_id]
    seeds = [p.seed for p in params]
    assert len(set(seeds)) == 4 and all(isinstance(s, int) for s in seeds)  # one seed per sequence
    assert b.prompt_ids == [p12, p12, p3, p3] and b.texts == ["0", "1", "2", "3"]
    assert b.response_mask.sum(1).tolist() == [1, 2, 1, 2]
    assert b.finished.tolist() == [False, True, False, True]
    # the same generator seed -> the same request seeds
    eng.generate(["12", "3"], 2, 5, 1.0, 1.0, None, torch.Generator().manual_seed(0))
    assert [p.seed for p in eng.llm.last[1]] == seeds and eng.llm.last[1][0].logprobs == 0

    # no sync_weights came between the two generate calls: the second one loaded the live model first
    assert eng.llm.prefix_resets == 1 and set(eng.llm.loaded) == set(model.state_dict())
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    eng.sync_weights(model)
    assert torch.equal(eng.llm.loaded["model.norm.weight"], model.model.norm.weight)
    assert eng.llm.prefix_resets == 2
    stale = {k: v.clone() for k, v in model.state_dict().items()}
    stale["model.norm.weight"] -= 1.0
    eng.sync_weights(stale)  # an explicit (stale) state dict is what the next rollout uses
    with pytest.warns(UserWarning, match="top_p"):
        eng.generate(["3"], 1, 5, 1.0, 0.9, None, None)
    assert eng.llm.prefix_resets == 3
    assert torch.equal(eng.llm.loaded["model.norm.weight"], stale["model.norm.weight"])
    eng.close()


def test_cpu_checks():
    """The CPU build's limits, checked before vLLM starts: head sizes 32-512, a KV cache that fits."""
    from cppo.models import build_model, build_tokenizer
    from cppo.train.vllm_engine import check_cpu_head_dim, cpu_kv_cache_gib

    tok = build_tokenizer()
    with pytest.raises(ValueError, match="head sizes 32-512; this model's is 16"):
        check_cpu_head_dim(build_model("s", tok).config)
    check_cpu_head_dim(build_model("m", tok).config)
    assert cpu_kv_cache_gib(48 << 30) == 3 and cpu_kv_cache_gib(2 << 30) == 1 and cpu_kv_cache_gib(512 << 30) == 4


def test_old_vllm_without_logprobs_mode_is_refused(monkeypatch):
    from cppo.models import build_model, build_tokenizer

    class OldLLM(_FakeLLM):
        def __init__(self, logprobs_mode=None, **kw):
            if logprobs_mode is not None:
                raise TypeError("EngineArgs.__init__() got an unexpected keyword argument 'logprobs_mode'")

    _fake_vllm(monkeypatch, OldLLM)
    tok = build_tokenizer()
    with pytest.raises(ImportError, match="0.10.2"):
        VLLMEngine(build_model("xs", tok), tok)
