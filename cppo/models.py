"""Tiny Qwen3 models and a character-level tokenizer, as real Hugging Face artifacts.

Design decisions:
  * The architecture is transformers' own ``Qwen3ForCausalLM`` (rotary embeddings, GQA, RMSNorm,
    SwiGLU, q/k norm), not a hand-written GPT: checkpoints then load unchanged in lm-eval, vLLM and
    verl, and the same code path serves the hub models of the paper profile. Measured cost against
    a hand-written GPT of the same shape is small (see issue 3).
  * The tokenizer is character level (printable ASCII + newline) so the chain task needs no
    learned merges; it is a ``PreTrainedTokenizerFast`` built locally with the ``tokenizers``
    library (no download). Special tokens: ``<pad>`` (0), ``<bos>`` (1), ``<eos>`` (2),
    ``<unk>`` (3). **No BOS is prepended** by the tokenizer or by our trainer: every consumer
    (lm-eval, which encodes without special tokens by default; vLLM; our engines) then sees the
    same token sequence ``prompt + response + <eos>``.
  * Embeddings are tied (input = output), the usual choice at this size.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>"}
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))  # newline + printable ASCII

# Named model shapes (kwargs of Qwen3Config). Parameter counts are with the 100-token char vocab.
SCALES: dict[str, dict[str, Any]] = {
    # ~27k params: for tests only
    "xs": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
           "intermediate_size": 96},
    # ~0.19M params (prototype's small: width 64, 3 layers)
    "s": {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
          "intermediate_size": 256},
    # ~1.0M params (prototype's medium: width 128, 4 layers)
    "m": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
          "intermediate_size": 512},
    # ~4.0M params
    "l": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
          "intermediate_size": 1024},
}


def build_tokenizer():
    """The character-level tokenizer as a ``PreTrainedTokenizerFast`` (offline, deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS[k] for k in ("pad", "bos", "eos", "unk")]
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    # every character is its own token, whitespace included
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"], bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"], unk_token=SPECIAL_TOKENS["unk"],
        padding_side="left",  # decoder-only generation pads prompts on the left
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def scale_config(scale_cfg: str | dict[str, Any]) -> dict[str, Any]:
    """Resolve a scale given by name (``SCALES``) or as explicit Qwen3Config kwargs."""
    if isinstance(scale_cfg, str):
        if scale_cfg not in SCALES:
            raise ValueError(f"unknown model scale {scale_cfg!r}; choose from {sorted(SCALES)}")
        return dict(SCALES[scale_cfg])
    return dict(scale_cfg)


def build_model(scale_cfg: str | dict[str, Any], tokenizer, seed: int | None = None):
    """A freshly initialised ``Qwen3ForCausalLM`` of the given shape, sized to ``tokenizer``'s vocab.

    Args:
        scale_cfg: a ``SCALES`` name or Qwen3Config kwargs (``hidden_size``, ``num_hidden_layers``, ...).
        tokenizer: supplies the vocabulary size and the pad/bos/eos ids.
        seed: when given, the initialisation is drawn from ``torch.manual_seed(seed)``.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    kw = scale_config(scale_cfg)
    if "hub" in kw:
        raise ValueError("build_model builds from-scratch shapes; load hub models with load_model()")
    kw.setdefault("head_dim", kw["hidden_size"] // kw["num_attention_heads"])
    kw.setdefault("max_position_embeddings", 512)
    kw.setdefault("tie_word_embeddings", True)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **kw,
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def n_params(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model, tokenizer, out_dir: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` in Hugging Face format, atomically.

    The files are written to a temporary sibling folder that is renamed onto ``out_dir`` at the
    end, so a process killed mid-way never leaves a half-written checkpoint under the final name.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def replace_dir(src: Path, dst: Path) -> None:
    """Move folder ``src`` onto ``dst`` (replacing it) with at most a moment where neither exists."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def load_model(path_or_name: str | Path, dtype=None):
    """Load ``(model, tokenizer)`` from a local checkpoint folder or a hub name (float32 by default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_source(path_or_name)  # a clear error for a mistyped folder instead of a hub lookup failure
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_name))
    model = AutoModelForCausalLM.from_pretrained(str(path_or_name), dtype=dtype or torch.float32)
    if tokenizer.pad_token_id is None:  # hub base models often lack a pad token
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def model_source(path_or_name: str | Path) -> str:
    """Where a model argument points: ``"local"`` (an existing checkpoint folder) or ``"hub"``.

    An existing path is always local. Otherwise only an ``owner/name`` id (one slash, no leading
    ``/`` or ``.``) goes to the hub; anything else is a folder that does not exist, which raises
    FileNotFoundError with one readable line rather than letting transformers report a bad hub id.
    Also raises for an existing path that is not a Hugging Face folder (a file, or no config.json).
    Reads only the local file system (no network).
    """
    path = Path(path_or_name)
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint not found: {path} is a file, not a checkpoint folder")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} has no config.json (not a Hugging Face "
                                    f"checkpoint folder)")
        return "local"
    if _looks_like_hub(str(path_or_name)):
        return "hub"
    raise FileNotFoundError(f"checkpoint not found: the folder {path_or_name} does not exist "
                            f"(and it is not an owner/name hub id)")


def check_hub_model(name: str, timeout: float = 5.0) -> None:
    """Make sure the hub model ``name`` can be loaded: from the local Hugging Face cache, or from the hub.

    Raises FileNotFoundError with one line saying what to do (a local folder, the cache, HF_HUB_OFFLINE)
    when it cannot: with HF_HUB_OFFLINE set and the model not cached, at once; without it, when one
    request to the hub fails within ``timeout`` seconds (instead of transformers' two minutes of
    retries and a long traceback). Only that one request touches the network, and only when the hub
    is not switched off.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if constants.is_offline_mode():
        if cached:
            return
        raise FileNotFoundError(f"the hub model {name} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                                f"and HF_HUB_OFFLINE is set: give a local checkpoint folder, or download the model "
                                f"once where the hub is reachable (hf download {name})")
    from huggingface_hub.utils import get_session

    try:
        get_session().head(f"{constants.ENDPOINT}/api/models/{name}", timeout=timeout)
    except Exception as err:  # no route, no name resolution, a timeout: the hub is out of reach
        what = ("it is in the local Hugging Face cache: set HF_HUB_OFFLINE=1 to use that copy" if cached else
                "give a local checkpoint folder, or download the model where the hub is reachable and set "
                "HF_HUB_OFFLINE=1")
        raise FileNotFoundError(f"cannot reach the hub ({constants.ENDPOINT}: {type(err).__name__}) for the model "
                                f"{name}: {what}") from None


def _looks_like_hub(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/"))


def describe_scales(tokenizer=None) -> dict[str, int]:
    """Parameter count of every named scale (for docs and the report)."""
    tokenizer = tokenizer or build_tokenizer()
    return {name: n_params(build_model(name, tokenizer)) for name in SCALES}

