"""`rl.device` / `sft.device`: validation, fail-fast without CUDA, tensors on the model's device, weight sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cppo.config import ConfigError, config_from_dict, resolve_run, resolve_sft
from cppo.train.device import resolve_device

CFG = {
    "profile": "unit",
    "task": {"name": "chain", "K": 4, "modulus": 10, "max_operand": 3, "ood_K": 6},
    "scales": {"xs": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "num_key_value_heads": 1, "intermediate_size": 64}},
    "rl": {"prompts_per_rollout": 4, "samples_per_prompt": 4, "updates_per_rollout": 2, "steps": 2,
           "max_new_tokens": 6, "eval_every": 0, "save_every": 0, "lr": 1.0e-2},
    "methods": {"grpo": {"rule": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28}},
    "grid": {"methods": ["grpo"], "scales": ["xs"], "seeds": [1]},
}


def cfg_dict(**rl) -> dict:
    d = json.loads(json.dumps(CFG))
    d["rl"].update(rl)
    return d


@pytest.fixture(scope="module")
def scratch_ckpt(tmp_path_factory) -> Path:
    """An untrained model of the xs shape (these tests need weights, not skill)."""
    from cppo.models import build_model, build_tokenizer, save_checkpoint

    tok = build_tokenizer()
    out = tmp_path_factory.mktemp("ckpt") / "xs"
    save_checkpoint(build_model(CFG["scales"]["xs"], tok, seed=0), tok, out)
    return out


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --------------------------------------------------------------------------- config
def test_device_default_auto_and_bad_values(monkeypatch):
    cfg = config_from_dict(cfg_dict())
    assert resolve_run(cfg, "grpo", "xs", 1).rl.device == "cpu"  # the default: CPU runs are unchanged
    assert resolve_sft(cfg, "xs").device == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        resolve_device("cuda:1")
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match="rl.device must be 'cpu', 'cuda', 'cuda:N' or 'auto'"):
            resolve_run(config_from_dict(cfg_dict(device=bad)), "grpo", "xs", 1)
    bad_sft = cfg_dict()
    bad_sft["sft"] = {"device": "tpu"}
    with pytest.raises(ConfigError, match="sft.device must be"):
        resolve_sft(config_from_dict(bad_sft), "xs")


def test_schema_accepts_device_keys_and_rejects_bad_ones():
    import jsonschema

    repo = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((repo / "cppo" / "config.schema.yaml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    rl_schema, sft_schema = schema["$defs"]["rl_section"], schema["properties"]["sft"]
    resolver_schema = {**rl_schema, "$defs": schema["$defs"]}
    for value in ("cpu", "cuda", "cuda:3", "auto"):
        assert validator.evolve(schema=resolver_schema).is_valid({"device": value})
        assert validator.evolve(schema={**sft_schema, "$defs": schema["$defs"]}).is_valid({"device": value})
    for value in ("gpu", "cuda:", 0):
        assert not validator.evolve(schema=resolver_schema).is_valid({"device": value})


# --------------------------------------------------------------------------- fail fast
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_train_cuda_without_cuda_stops_before_any_work(tmp_path, capsys, no_cuda, scratch_ckpt, device):
    from cppo.cli import main

    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg_dict(device=device)))
    run_dir = tmp_path / "run"
    rc = main(["train", str(p), "--method", "grpo", "--scale", "xs", "--seed", "1", "--run-dir", str(run_dir),
               "--init", str(scratch_ckpt), "--no-mlflow", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"rl.device='{device}' but CUDA is not available here" in err and "use cpu or auto" in err
    assert not run_dir.exists()


def test_trainer_checks_the_device_before_loading_anything(tmp_path, no_cuda):
    from cppo.train.rl import Trainer

    run = resolve_run(config_from_dict(cfg_dict(device="cuda")), "grpo", "xs", 1)
    with pytest.raises(ConfigError, match="CUDA is not available"):  # not a "checkpoint not found" error
        Trainer(run, tmp_path / "run", init=str(tmp_path / "does-not-exist"), progress=False)
    assert not (tmp_path / "run").exists()


def test_sft_cuda_without_cuda_stops_before_any_work(tmp_path, capsys, no_cuda):
    from cppo.cli import main

    d = cfg_dict()
    d["sft"] = {"device": "cuda"}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(d))
    out = tmp_path / "base"
    assert main(["sft", str(p), "--scale", "xs", "--out", str(out), "--no-progress"]) == 2
    assert "sft.device='cuda' but CUDA is not available here" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- tensors and weights
def test_hf_engine_outputs_live_on_the_model_device():
    from cppo.models import build_model, build_tokenizer
    from cppo.train.rl import build_sequences
    from cppo.train.rollout import HFEngine, device_generator

    tok = build_tokenizer()
    model = build_model(CFG["scales"]["xs"], tok, seed=0)
    dev = next(model.parameters()).device
    rb = HFEngine(model, tok).generate(["7CeI=", "3Ab="], n=2, max_new_tokens=4, temperature=1.0, top_p=1.0,
                                       topk=3, generator=torch.Generator().manual_seed(0))
    for t in (rb.response_ids, rb.response_mask, rb.logp, rb.topk_ids, rb.topk_logp, rb.finished):
        assert t.device == dev
    B = rb.response_ids.shape[0]
    sb = build_sequences(rb, torch.arange(B, dtype=torch.float32), torch.ones(B, dtype=torch.bool), tok.pad_token_id)
    for t in (sb.prompts, sb.prompt_mask, sb.group, sb.advantages, sb.rollout_logp):
        assert t.device == dev
    g = torch.Generator().manual_seed(0)
    assert device_generator(g, torch.device("cpu")) is g  # same device: the caller's stream itself
    assert device_generator(None, torch.device("cpu")) is None


class _SpyEngine:
    """The hf engine, recording what the trainer passes to ``sync_weights`` before each rollout."""

    def __init__(self, model, tokenizer, copy_model=False, **kw):
        from cppo.train.rollout import HFEngine

        self.inner = HFEngine(model, tokenizer, copy_model=copy_model)
        self.trainer = None
        self.calls: list[tuple] = []  # (argument, was it the trainer's model / history[0] at that moment)
        self.pending = False

    def sync_weights(self, w):
        t = self.trainer
        self.calls.append((w, w is t.model, len(t.history) > 0 and w is t.history[0]))
        self.pending = True
        self.inner.sync_weights(w)

    def generate(self, *a, **kw):
        assert self.pending, "rollout without a sync_weights call before it"
        self.pending = False
        return self.inner.generate(*a, **kw)


@pytest.mark.parametrize("staleness", [0, 2])
def test_trainer_syncs_rollout_weights_before_every_rollout(tmp_path, scratch_ckpt, staleness):
    from cppo.train import rl as rl_mod
    from cppo.train.rollout import ENGINES

    ENGINES["spy"] = _SpyEngine
    try:
        run = resolve_run(config_from_dict(cfg_dict(engine="spy", staleness=staleness)), "grpo", "xs", 1)
        tr = rl_mod.Trainer(run, tmp_path / "run", init=str(scratch_ckpt), progress=False)
    finally:
        del ENGINES["spy"]
    tr.engine.trainer = tr
    # alternating rewards: every group has variance, so each rollout makes updates
    tr.task.rewards = lambda texts, answers, finished: [float(i % 2) for i in range(len(texts))]
    tr.run()
    calls = tr.engine.calls
    assert len(calls) == run.rl.steps == 2 and tr.counters["updates"] == 4
    if staleness == 0:
        assert all(is_model for _, is_model, _ in calls)  # fresh: the live model
    else:
        assert all(isinstance(w, dict) and is_h0 for w, _, is_h0 in calls)  # stale: history[0]
        # the second rollout samples with weights 2 updates old, not the live ones
        live = tr.engine.inner.model  # the engine's private copy now holds history[0] of rollout 2
        w2 = calls[1][0]
        assert any(not torch.equal(w2[k], v) for k, v in tr.model.state_dict().items())
        assert all(torch.equal(w2[k], v) for k, v in live.state_dict().items())


def test_resume_may_change_the_device_but_nothing_else(tmp_path, scratch_ckpt, capsys):
    """``rl.device`` is not part of a run's identity (also: a config.yaml written before the key existed)."""
    from cppo.cli import main

    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg_dict(steps=1)))
    run_dir = tmp_path / "run"
    resolved = resolve_run(config_from_dict(cfg_dict(steps=1)), "grpo", "xs", 1).to_dict()
    resolved["init"] = str(scratch_ckpt)
    del resolved["rl"]["device"]  # as written by the trainer before rl.device existed
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    argv = ["train", str(p), "--method", "grpo", "--scale", "xs", "--seed", "1", "--run-dir", str(run_dir),
            "--init", str(scratch_ckpt), "--no-mlflow", "--no-progress"]
    assert main(argv + ["--set", "rl.device=auto"]) == 0
    assert (run_dir / "done").exists()
    (run_dir / "done").unlink()
    assert main(argv + ["--set", "rl.lr=0.5"]) == 2
    assert "different resolved config" in capsys.readouterr().err
