"""The hf rollout engine: μ's log-probs, top-K, stopping, padding, sampling controls; engine registry."""

from __future__ import annotations

import pytest
import torch

from cppo.models import build_model, build_tokenizer
from cppo.train.rl import build_sequences, policy_logprobs
from cppo.train.rollout import HFEngine, get_engine, left_pad, sample_next


@pytest.fixture(scope="module")
def engine():
    tok = build_tokenizer()
    return HFEngine(build_model("xs", tok, seed=0), tok)


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]


def test_recorded_logp_matches_full_forward_with_ragged_prompts(engine):
    prompts = ["7CeI=", "3Ab=", "1ABCabc="]  # different lengths: left padding and position ids matter
    rb = engine.generate(prompts, n=2, max_new_tokens=6, temperature=1.0, top_p=1.0, topk=5,
                         generator=torch.Generator().manual_seed(0))
    B, T = rb.response_ids.shape
    assert B == 6 and T <= 6 and rb.prompt_ids[0] == rb.prompt_ids[1]
    sb = build_sequences(rb, torch.zeros(B), torch.ones(B, dtype=torch.bool), engine.pad_id)
    with torch.no_grad():
        logp, topk, _ = policy_logprobs(engine.model, sb, 1.0, True, False)
    m = rb.response_mask
    assert torch.allclose(logp[m], rb.logp[m], atol=1e-4)
    assert torch.allclose(topk[m], rb.topk_logp[m], atol=1e-4)
    # top-K is sorted, and the sampled token's log-prob never exceeds the top-1
    assert (rb.topk_logp[..., :-1] >= rb.topk_logp[..., 1:]).all()
    assert (rb.logp[m] <= rb.topk_logp[..., 0][m] + 1e-6).all()
    assert (rb.logp[~m] == 0).all() and (rb.response_ids[~m] == engine.pad_id).all()


def test_stops_at_eos_and_reports_finished(engine):
    # a model with all logits 0: uniform over 100 tokens, so <eos> comes at a random step
    tok = engine.tokenizer
    model = build_model("xs", tok, seed=1)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    eng = HFEngine(model, tok)
    rb = eng.generate(["1A="], n=300, max_new_tokens=3, temperature=1.0, top_p=1.0, topk=None,
                      generator=torch.Generator().manual_seed(0))
    lens = rb.response_mask.sum(1)
    ended = (rb.response_ids == tok.eos_token_id).any(1)
    assert torch.equal(ended, rb.finished)
    assert 0 < int(ended.sum()) < 300
    for i in range(300):  # mask covers tokens up to and including the first eos, nothing after
        ids = rb.response_ids[i].tolist()
        if tok.eos_token_id in ids:
            assert lens[i] == ids.index(tok.eos_token_id) + 1
        else:
            assert lens[i] == 3
    assert torch.allclose(rb.logp[rb.response_mask], torch.tensor(-torch.log(torch.tensor(100.0)).item()), atol=1e-5)


def test_sample_next_greedy_top_p_and_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    tok, logp = sample_next(logits, 0.0, 1.0, None)
    assert tok.item() == 0 and torch.allclose(logp, torch.log_softmax(logits, -1))
    g = torch.Generator().manual_seed(0)
    draws = [sample_next(logits.expand(1000, 4), 1.0, 0.5, g)[0] for _ in range(2)]
    assert all((d == 0).all() for d in draws)  # top-1 mass 0.64 >= 0.5: only the top token survives
    draws = torch.cat([sample_next(logits.expand(1000, 4), 1.0, 0.9, g)[0] for _ in range(4)])
    # probs 0.644, 0.237, 0.087, 0.032: the mass before token 2 is 0.881 < 0.9 (kept), before token 3 0.968 (dropped)
    assert set(draws.tolist()) == {0, 1, 2}
    _, logp_t = sample_next(logits, 2.0, 1.0, g)
    assert torch.allclose(logp_t, torch.log_softmax(logits / 2.0, -1))  # μ is recorded after temperature


def test_engine_registry(engine):
    assert isinstance(get_engine("hf", engine.model, engine.tokenizer), HFEngine)
    stale = get_engine("hf", engine.model, engine.tokenizer, copy_model=True)
    assert stale.model is not engine.model
    with pytest.raises(ValueError, match="unknown rollout engine"):
        get_engine("nope", engine.model, engine.tokenizer)
    # sync_weights loads a state dict into the private copy
    sd = {k: torch.zeros_like(v) for k, v in engine.model.state_dict().items()}
    stale.sync_weights(sd)
    assert all((p == 0).all() for p in stale.model.parameters())
    assert any((p != 0).any() for p in engine.model.parameters())


def test_shared_prompt_forward_matches_full_sequences_in_value_and_gradient(engine):
    """sequence_logits runs each prompt once and gathers its KV cache; compare with the plain
    forward of every prompt ++ response (values and gradients), with ragged prompts."""
    from cppo.train.rl import sequence_logits

    model = engine.model
    rb = engine.generate(["7CeI=", "3Ab=", "1ABCabc="], n=3, max_new_tokens=5, temperature=1.0, top_p=1.0,
                         topk=None, generator=torch.Generator().manual_seed(1))
    B = rb.response_ids.shape[0]
    sb = build_sequences(rb, torch.randn(B), torch.ones(B, dtype=torch.bool), engine.pad_id)
    mb = sb.select(torch.tensor([8, 0, 4, 5]))  # a shuffled subset spanning all three prompts
    weights = torch.randn(mb.response_ids.shape)

    def loss_of(logits):
        lp = torch.log_softmax(logits.float(), -1).gather(-1, mb.response_ids[..., None]).squeeze(-1)
        return (torch.where(mb.mask, lp, 0.0) * weights).sum()

    shared = sequence_logits(model, mb)
    g_shared = torch.autograd.grad(loss_of(shared), list(model.parameters()))

    T = mb.response_ids.shape[1]
    prompts = [rb.prompt_ids[i] for i in (8, 0, 4, 5)]
    seqs = [p + r for p, r in zip(prompts, mb.response_ids.tolist())]
    ids, m = left_pad(seqs, engine.pad_id)
    pos = (m.long().cumsum(-1) - 1).clamp(min=0)
    full = model(input_ids=ids, attention_mask=m.long(), position_ids=pos).logits[:, -T - 1:-1]
    g_full = torch.autograd.grad(loss_of(full), list(model.parameters()))
    valid = mb.mask
    assert torch.allclose(shared[valid], full[valid], atol=1e-4)
    for a, b in zip(g_shared, g_full):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["hf", "hf_fast"])
def test_train_mode_is_restored_when_generation_raises(name, monkeypatch):
    tok = build_tokenizer()
    model = build_model("xs", tok, seed=0).train()
    eng = get_engine(name, model, tok)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.model.embed_tokens, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        eng.generate(["1+2="], n=1, max_new_tokens=4, temperature=1.0, top_p=1.0, topk=None, generator=None)
    assert model.training
