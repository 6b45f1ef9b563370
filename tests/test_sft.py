"""SFT warm start: the batch layout, early stopping on sampled accuracy, the saved base, CLI errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train import CFG, write_cfg  # noqa: E402

from cppo.config import config_from_dict, resolve_sft  # noqa: E402
from cppo.models import build_tokenizer  # noqa: E402
from cppo.train.sft import sft_batch  # noqa: E402


def test_sft_batch_masks_the_prompt():
    tok = build_tokenizer()
    ids, labels = sft_batch([{"problem": "7CeI=", "solution": "054"}, {"problem": "1A=", "solution": "2"}], tok)
    assert tok.decode(ids[0].tolist()[:8], skip_special_tokens=True) == "7CeI=054"
    assert labels[0].tolist() == [-100] * 5 + tok("054").input_ids + [tok.eos_token_id]
    assert labels[1].tolist()[:5] == [-100] * 3 + tok("2").input_ids + [tok.eos_token_id]
    assert (labels[1, 5:] == -100).all() and (ids[1, 5:] == tok.pad_token_id).all()


def test_sft_stops_at_target_and_saves_a_loadable_base(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cppo.train.sft import run_sft

    cfg = config_from_dict(json.loads(json.dumps(CFG)))
    out = tmp_path / "base"
    m = run_sft(cfg, "xs", resolve_sft(cfg, "xs"), out, progress=False)
    assert m["stopped"] == "target" and m["val_sampled_acc"] >= 0.3 and m["steps"] < 400
    assert m["steps"] % 10 == 0  # checks every eval_every steps
    hist = [h["sampled_acc"] for h in m["history"][:-1]]
    assert all(a < 0.3 for a in hist[:-1])  # it did not run past the first check that met the target
    saved = json.loads((out / "sft_metrics.json").read_text())
    assert saved["steps"] == m["steps"] and saved["params"] == 80512
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    x = torch.tensor([tok("1A=").input_ids])
    assert model(x).logits.shape == (1, 3, 100)


def test_sft_cli_errors(tmp_path, capsys):
    from cppo.cli import main

    p = write_cfg(tmp_path, scales={**CFG["scales"], "hubby": {"hub": "Qwen/Qwen3-1.7B-Base"}})
    assert main(["sft", str(p), "--scale", "hubby", "--out", str(tmp_path / "o")]) == 2
    assert "does not need it" in capsys.readouterr().err
    assert main(["sft", str(p), "--scale", "zz", "--out", str(tmp_path / "o")]) == 2
    assert "unknown scale" in capsys.readouterr().err
    assert main(["sft", str(p), "--scale", "xs", "--out", str(tmp_path / "o"), "--steps", "-1"]) == 2
    assert "max_steps must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
