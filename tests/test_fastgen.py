"""The fast decode path (`hf_fast`) against the model's own forward, `generate`, and the plain `hf` engine."""

from __future__ import annotations

import math

import pytest
import torch

from cppo.train.fastgen import FastDecoder, FastHFEngine, check_supported, draw, nucleus, recorded_logprobs
from cppo.train.rollout import HFEngine, get_engine, left_pad

EOS = 1


def _qwen3(seed=0, vocab=40, tie=False):
    """A random tiny Qwen3 with grouped-query attention (4 query heads on 2 KV heads)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=128,
                      pad_token_id=0, eos_token_id=EOS, bos_token_id=2, tie_word_embeddings=tie)
    return Qwen3ForCausalLM(cfg).eval()


PROMPTS = [[2, 5, 6, 7, 8, 9], [2, 10, 11], [12, 13, 14, 3]]  # different lengths -> left padding


def _forward_logp(model, ids, mask, cont, temperature):
    """log mu of `cont` after the (left-padded) prompts, by one full forward pass."""
    full = torch.cat([ids, cont], dim=1)
    fmask = torch.cat([mask, torch.ones_like(cont, dtype=torch.bool)], dim=1)
    pos = (fmask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=fmask.long(), position_ids=pos).logits.float()
    logits = logits[:, ids.shape[1] - 1:-1] / temperature  # (B, N, V) predicting cont
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_teacher_forced_logprobs_match_full_forward(temperature):
    model = _qwen3()
    ids, mask = left_pad(PROMPTS, 0)
    cont = torch.randint(3, 40, (3, 12), generator=torch.Generator().manual_seed(1))
    out = FastDecoder(model).run(ids, mask, 12, temperature=temperature, topk=5, forced_tokens=cont, eos_ids=[])
    ref = _forward_logp(model, ids, mask, cont, temperature)  # (B, N, V)
    assert out.mask.all() and out.tokens.equal(cont)
    torch.testing.assert_close(out.logp, ref.gather(2, cont[..., None]).squeeze(-1), atol=1e-5, rtol=0)
    ref_v, ref_i = ref.topk(5, dim=-1)
    assert out.topk_ids.equal(ref_i)
    torch.testing.assert_close(out.topk_logp, ref_v, atol=1e-5, rtol=0)


def test_greedy_matches_generate_token_for_token():
    model = _qwen3(seed=3)
    ids, mask = left_pad(PROMPTS, 0)
    out = FastDecoder(model).run(ids, mask, 24, temperature=0.0, eos_ids=[EOS], pad_id=0)
    ref = model.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=24, do_sample=False,
                         eos_token_id=EOS, pad_token_id=0)[:, ids.shape[1]:]
    T = out.tokens.shape[1]
    assert out.tokens.equal(ref[:, :T])
    assert (ref[:, T:] == 0).all()  # nothing but padding was cut


def test_gqa_tied_and_untied_models_supported():
    for tie in (True, False):
        model = _qwen3(seed=5, tie=tie)
        ids, mask = left_pad(PROMPTS, 0)
        cont = torch.randint(3, 40, (3, 4), generator=torch.Generator().manual_seed(0))
        out = FastDecoder(model).run(ids, mask, 4, forced_tokens=cont, eos_ids=[])
        ref = _forward_logp(model, ids, mask, cont, 1.0).gather(2, cont[..., None]).squeeze(-1)
        torch.testing.assert_close(out.logp, ref, atol=1e-5, rtol=0)


def test_eos_handling_pads_masks_and_trims():
    model = _qwen3()
    ids, mask = left_pad(PROMPTS, 0)
    cont = torch.full((3, 10), 7)
    cont[0, 2] = EOS  # row 0 ends after 3 tokens
    cont[1, 5] = EOS  # row 1 after 6; row 2 never
    out = FastDecoder(model).run(ids, mask, 10, forced_tokens=cont, eos_ids=[EOS], pad_id=0)
    assert out.tokens.shape == (3, 10)
    assert out.mask.sum(1).tolist() == [3, 6, 10]  # EOS itself is a response token
    assert out.tokens[0].tolist() == [7, 7, EOS] + [0] * 7
    assert (out.logp[~out.mask] == 0).all() and (out.logp[out.mask] < 0).all()
    assert out.finished.tolist() == [True, True, False]
    # the loop stops once every row has finished, and the batch is trimmed to the longest row
    cont[2, 3] = EOS
    out = FastDecoder(model, check_every=1).run(ids, mask, 10, forced_tokens=cont, eos_ids=[EOS], pad_id=0)
    assert out.tokens.shape == (3, 6) and out.mask.sum(1).tolist() == [3, 6, 4]


def test_nucleus_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logp = p.log()
    assert torch.allclose(nucleus(logp, 0.7).exp(), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(nucleus(logp, 0.8).exp(), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))  # 0.8 reached
    assert torch.allclose(nucleus(logp, 0.81).exp(), torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)
    assert torch.allclose(nucleus(logp, 1e-9).exp(), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert nucleus(logp, 1.0) is logp
    # recorded log mu is the tempered distribution, before truncation
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert torch.allclose(recorded_logprobs(logits, 0.5), torch.log_softmax(logits / 0.5, -1))
    assert torch.allclose(recorded_logprobs(logits, 0.0), torch.log_softmax(logits, -1))


def test_draw_follows_the_distribution():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logp = p.log().expand(40000, 4)
    tok = draw(logp, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=4).float() / tok.numel()
    assert (freq - p).abs().max() < 0.01  # 4 sigma at n=40000 is ~0.01
    tok = draw(nucleus(logp, 0.7), 1.0, torch.Generator().manual_seed(1))
    assert set(tok.unique().tolist()) == {0, 1}
    assert draw(logp, 0.0, None).eq(0).all()


# --- the engine, against the plain `hf` engine ---------------------------------------------------------


@pytest.fixture(scope="module")
def char_model():
    from cppo.models import build_model, build_tokenizer

    tok = build_tokenizer()
    return build_model("xs", tok, seed=0).eval(), tok


CHAIN_PROMPTS = ["3+4-1*", "7-2+5+9-3*", "0+1*"]


def test_same_batch_as_hf_engine_greedy(char_model):
    model, tok = char_model
    kw = dict(n=2, max_new_tokens=16, temperature=0.0, top_p=1.0, topk=5, generator=None)
    a = HFEngine(model, tok).generate(CHAIN_PROMPTS, **kw)
    b = get_engine("hf_fast", model, tok).generate(CHAIN_PROMPTS, **kw)
    assert isinstance(b, type(a))
    assert b.prompt_ids == a.prompt_ids and b.texts == a.texts
    assert b.response_ids.equal(a.response_ids) and b.response_mask.equal(a.response_mask)
    assert b.finished.equal(a.finished) and b.topk_ids.equal(a.topk_ids)
    torch.testing.assert_close(b.logp, a.logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.topk_logp, a.topk_logp, atol=1e-5, rtol=0)


def test_agrees_with_hf_engine_on_sampled_logprobs(char_model):
    """Score the hf engine's sampled responses through the fast decode path: same log mu."""
    model, tok = char_model
    a = HFEngine(model, tok).generate(CHAIN_PROMPTS, n=3, max_new_tokens=12, temperature=0.8, top_p=1.0, topk=4,
                                      generator=torch.Generator().manual_seed(0))
    ids, mask = left_pad(a.prompt_ids, tok.pad_token_id)
    T = a.response_ids.shape[1]
    out = FastDecoder(model).run(ids, mask, T, temperature=0.8, topk=4, forced_tokens=a.response_ids,
                                 eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id)
    assert out.mask.equal(a.response_mask)
    torch.testing.assert_close(out.logp, a.logp, atol=1e-5, rtol=0)
    m = a.response_mask
    torch.testing.assert_close(out.topk_logp[m], a.topk_logp[m], atol=1e-5, rtol=0)


def test_sampling_is_reproducible_with_a_seeded_generator(char_model):
    model, tok = char_model
    eng = FastHFEngine(model, tok)
    kw = dict(n=4, max_new_tokens=12, temperature=1.0, top_p=0.95, topk=None)
    a = eng.generate(CHAIN_PROMPTS, generator=torch.Generator().manual_seed(7), **kw)
    b = eng.generate(CHAIN_PROMPTS, generator=torch.Generator().manual_seed(7), **kw)
    c = eng.generate(CHAIN_PROMPTS, generator=torch.Generator().manual_seed(8), **kw)
    assert a.response_ids.equal(b.response_ids) and a.logp.equal(b.logp) and a.texts == b.texts
    assert not (c.response_ids.shape == a.response_ids.shape and c.response_ids.equal(a.response_ids))
    assert a.topk_ids is None and a.topk_logp is None
    assert a.response_ids.shape[0] == 12 and a.prompt_ids[0] == a.prompt_ids[3] != a.prompt_ids[4]
    assert all(math.isfinite(v) for v in a.logp[a.response_mask].tolist())


def test_tiny_top_p_samples_the_greedy_token(char_model):
    model, tok = char_model
    eng = FastHFEngine(model, tok)
    g = eng.generate(CHAIN_PROMPTS, 1, 10, temperature=0.0, top_p=1.0, topk=None, generator=None)
    s = eng.generate(CHAIN_PROMPTS, 1, 10, temperature=1.0, top_p=1e-6, topk=None,
                     generator=torch.Generator().manual_seed(0))
    assert s.response_ids.equal(g.response_ids)


def _same(a, b) -> bool:
    return a.response_ids.shape == b.response_ids.shape and a.response_ids.equal(b.response_ids) \
        and torch.allclose(a.logp, b.logp, atol=1e-5)


def test_private_copy_follows_sync_weights(char_model):
    model, tok = char_model
    trainer_model = type(model)(model.config)
    trainer_model.load_state_dict(model.state_dict())
    eng = FastHFEngine(trainer_model, tok, copy_model=True)
    assert eng.model is not trainer_model
    kw = dict(n=1, max_new_tokens=8, temperature=0.0, top_p=1.0, topk=None, generator=None)
    before = eng.generate(CHAIN_PROMPTS, **kw)
    with torch.no_grad():
        for p in trainer_model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ref = HFEngine(trainer_model, tok).generate(CHAIN_PROMPTS, **kw)
    assert not _same(ref, before)  # the update matters
    eng.sync_weights(model.state_dict())  # stale weights, given explicitly (a state dict), win
    assert _same(eng.generate(CHAIN_PROMPTS, **kw), before)
    assert _same(eng.generate(CHAIN_PROMPTS, **kw), ref)  # no sync since: follows the live trainer model
    eng.sync_weights(trainer_model)
    assert _same(eng.generate(CHAIN_PROMPTS, **kw), ref)


def test_bad_input_is_rejected():
    model = _qwen3()
    with pytest.raises(ValueError, match="ForCausalLM"):
        check_supported(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="CUDA"):
        FastDecoder(model, cuda_graph=True)
    ids, mask = left_pad(PROMPTS, 0)
    dec = FastDecoder(model)
    with pytest.raises(ValueError, match="top_p"):
        dec.run(ids, mask, 4, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        dec.run(ids, mask, 0)
    mask[1] = False
    with pytest.raises(ValueError, match="real token"):
        dec.run(ids, mask, 4)


def test_decoder_reusable_across_inference_mode_and_no_grad():
    model = _qwen3()
    ids, mask = left_pad(PROMPTS, 0)
    cont = torch.randint(3, 40, (3, 6), generator=torch.Generator().manual_seed(2))
    dec = FastDecoder(model)
    with torch.inference_mode():
        a = dec.run(ids, mask, 6, forced_tokens=cont, eos_ids=[])
    b = dec.run(ids, mask, 6, forced_tokens=cont, eos_ids=[])  # same cached runner, outside inference mode
    assert a.logp.equal(b.logp)


@pytest.mark.slow
def test_compiled_step_matches_eager():
    model = _qwen3()
    ids, mask = left_pad(PROMPTS, 0)
    cont = torch.randint(3, 40, (3, 8), generator=torch.Generator().manual_seed(1))
    a = FastDecoder(model).run(ids, mask, 8, forced_tokens=cont, eos_ids=[])
    b = FastDecoder(model, compile_step=True).run(ids, mask, 8, forced_tokens=cont, eos_ids=[])
    torch.testing.assert_close(b.logp, a.logp, atol=1e-5, rtol=0)


def test_engines_found_by_name_without_importing_them():
    """`rl.engine: hf_fast` / `vllm` work in a fresh process: the registry imports the engine modules."""
    import subprocess
    import sys

    code = ("import sys; from cppo.train.rollout import get_engine, ENGINES\n"
            "from cppo.models import build_model, build_tokenizer\n"
            "assert 'cppo.train.fastgen' not in sys.modules\n"
            "t = build_tokenizer(); e = get_engine('hf_fast', build_model('xs', t), t)\n"
            "print(type(e).__name__, sorted(ENGINES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.split() == ["FastHFEngine", "['hf',", "'hf_fast',", "'vllm']"]


def test_engines_stop_on_every_end_token_of_the_generation_config():
    """A model whose generation config lists two end tokens: `hf` and `hf_fast` give the same greedy
    responses and both stop on the second one (the `hf` engine used to stop on the tokenizer's only)."""
    from cppo.models import build_model, build_tokenizer

    tok = build_tokenizer()
    # a wide initialisation, so that greedy responses vary (the default one repeats a single token)
    model = build_model({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                         "intermediate_size": 96, "initializer_range": 0.5}, tok, seed=0).eval()
    kw = dict(n=1, max_new_tokens=16, temperature=0.0, top_p=1.0, topk=None, generator=None)
    free = HFEngine(model, tok).generate(CHAIN_PROMPTS, **kw)  # the tokenizer's <eos> only
    row = free.response_ids[0].tolist()
    assert tok.eos_token_id not in row[:3]
    k = next(i for i in range(2, len(row)) if row[i] not in row[:i])  # a token first seen at step k >= 2
    second = row[k]
    model.generation_config.eos_token_id = [tok.eos_token_id, second]

    a = HFEngine(model, tok).generate(CHAIN_PROMPTS, **kw)
    b = get_engine("hf_fast", model, tok).generate(CHAIN_PROMPTS, **kw)
    T = a.response_ids.shape[1]
    assert b.response_ids[:, :T].equal(a.response_ids) and b.response_mask[:, :T].equal(a.response_mask)
    assert b.finished.equal(a.finished) and b.texts == a.texts
    assert int(a.response_mask[0].sum()) == k + 1 and a.response_ids[0, k] == second and bool(a.finished[0])
    for rb in (a, b):  # every row ends on its first end token, of either kind
        for ids, m in zip(rb.response_ids.tolist(), rb.response_mask.tolist()):
            stop = next((i for i, t in enumerate(ids) if t in (tok.eos_token_id, second)), None)
            assert sum(m) == (stop + 1 if stop is not None else 16)
