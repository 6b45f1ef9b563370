"""Generation backends for lm-eval: ``hf`` (transformers, CPU/GPU), ``vllm`` (GPU, optional), ``oracle``.

* ``hf``: lm-eval's ``HFLM`` on a checkpoint folder or hub name. Works on CPU (tests, the tiny
  profile) and GPU.
* ``vllm``: lm-eval's ``VLLM`` wrapper; vLLM is an optional extra (``pip install
  'cppo-bench[vllm]'``) and asking for it without the package is a clear error, not an ImportError
  deep inside lm-eval.
* ``oracle``: answers every problem with its worked solution from the data (or the gold answer in
  a ``\\boxed{}``), registered with lm-eval as ``cppo_oracle``. An evaluation of the oracle must
  score 100%: it checks the data mapping, prompting, extraction and scoring end to end without a
  model, by construction of the data rather than of the scorer.
"""

from __future__ import annotations

import importlib.util
from typing import Any

BACKENDS = ("hf", "vllm", "oracle")


def _oracle_class():
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    from evals.registry import get_benchmark, oracle_response

    class OracleLM(LM):
        """An lm-eval model that answers with the data's own solution (needs no weights)."""

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from tqdm.auto import tqdm

            return [oracle_response(get_benchmark(r.doc["benchmark"]), r.doc)
                    for r in tqdm(requests, desc="oracle", disable=disable_tqdm)]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("the oracle only generates")

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("the oracle only generates")

    try:
        register_model("cppo_oracle")(OracleLM)
    except (AssertionError, ValueError, KeyError):  # already registered in this process
        pass
    return OracleLM


_ORACLE = None


def oracle_lm():
    """A fresh oracle model (class created and registered once)."""
    global _ORACLE
    if _ORACLE is None:
        _ORACLE = _oracle_class()
    return _ORACLE()


def _device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(model: str):
    """The model's tokenizer (to resolve the chat template); offline-safe for local folders."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model))


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run in this environment (a missing optional dependency)."""


def check_backend(backend: str) -> None:
    """Raise ValueError for an unknown backend, BackendUnavailable when its optional dependency is missing."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable("backend 'vllm' needs vLLM, an optional GPU extra: pip install 'cppo-bench[vllm]' "
                                 "(or use --backend hf)")


def build_lm(backend: str, model: str, settings: Any):
    """An lm-eval LM for ``backend`` (see the module docstring)."""
    check_backend(backend)
    if backend == "oracle":
        return oracle_lm()
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(model), dtype=settings.dtype, seed=settings.seed, batch_size="auto",
                    gpu_memory_utilization=0.85)
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model), device=_device(settings.device), dtype=settings.dtype,
                batch_size=settings.batch_size)
