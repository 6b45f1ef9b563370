"""Functions the cppo-bench lm-eval task files reference with ``!function utils.<name>``.

They only delegate to the ``evals`` package, so a plain ``lm_eval --include_path evals/tasks``
run and ``cppo eval`` prompt, load and score identically.
"""

from __future__ import annotations

from evals import harness


def process_results(doc: dict, results: list) -> dict[str, float]:
    """All n responses of one problem (``results[0]``, kept by the take_first_k filter) → metrics."""
    return harness.process_results(doc, results)


def chain_dataset(**kwargs) -> dict[str, list[dict]]:
    """The synthetic chain split named by the task metadata (``benchmark``, K, modulus, ood_K, n_test, seed)."""
    return harness.chain_dataset(**kwargs)


def _docs(name: str):
    def process(dataset):
        return harness.process_docs(name, dataset)

    process.__name__ = f"process_docs_{name}"
    return process


process_docs_math500 = _docs("math500")
process_docs_aime24 = _docs("aime24")
process_docs_aime25 = _docs("aime25")
process_docs_aime26 = _docs("aime26")
process_docs_amc23 = _docs("amc23")
process_docs_gsm8k = _docs("gsm8k")
process_docs_minerva_math = _docs("minerva_math")
process_docs_olympiadbench = _docs("olympiadbench")
process_docs_chain_id = _docs("chain_id")
process_docs_chain_ood = _docs("chain_ood")
