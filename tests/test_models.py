"""Tiny Qwen3 models and the char tokenizer: shapes, sizes, round trips, offline loading."""

from __future__ import annotations

import torch

from cppo.models import SCALES, build_model, build_tokenizer, load_model, n_params, save_checkpoint


def test_tokenizer_is_char_level_and_round_trips():
    tok = build_tokenizer()
    text = "7+3-5+9=\n054 ok!"
    ids = tok(text).input_ids
    assert len(ids) == len(text)  # one token per character, no BOS added
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert len(tok) == 4 + 96
    assert tok("\t").input_ids == [tok.unk_token_id]


def test_scales_have_the_documented_sizes():
    tok = build_tokenizer()
    sizes = {name: n_params(build_model(name, tok)) for name in ("s", "m")}
    assert 150_000 < sizes["s"] < 250_000
    assert 800_000 < sizes["m"] < 1_200_000
    assert set(SCALES) >= {"s", "m", "l"}


def test_build_model_is_seeded():
    tok = build_tokenizer()
    a, b = build_model("xs", tok, seed=3), build_model("xs", tok, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_checkpoint_loads_offline_with_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = build_tokenizer()
    model = build_model("xs", tok, seed=0)
    save_checkpoint(model, tok, tmp_path / "ck")
    save_checkpoint(model, tok, tmp_path / "ck")  # overwriting an existing checkpoint works
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path / "ck")
    t2 = AutoTokenizer.from_pretrained(tmp_path / "ck")
    x = torch.tensor([t2("1+2=").input_ids])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, m2(x).logits)
    assert t2.decode(t2("1+2=3").input_ids) == "1+2=3" and t2.eos_token_id == 2
    m3, t3 = load_model(tmp_path / "ck")
    assert t3.padding_side == "left" and type(m3).__name__ == "Qwen3ForCausalLM"


def test_load_model_missing_path_is_clear(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "nope")


def test_model_source_decides_folder_or_hub_without_network(tmp_path, monkeypatch):
    import pytest

    from cppo.models import model_source

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert model_source(ck) == "local" and model_source("ck") == "local"
    assert model_source("Qwen/Qwen3-0.6B-Base") == "hub"
    (tmp_path / "Qwen").mkdir()  # an existing path wins over the hub id it looks like
    with pytest.raises(FileNotFoundError, match="not found"):
        model_source("Qwen")
    for name in ("/no/such/folder", "./owner/name", "../owner/name", "a/b/c", "runs/x/", "gpt"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            model_source(name)
    (tmp_path / "w.safetensors").write_text("")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        model_source(tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        model_source(tmp_path / "Qwen")
