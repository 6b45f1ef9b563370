"""Prompt templates: what the model sees for one benchmark problem.

Math benchmarks have two templates:
  * ``base``: raw text, the problem followed by the instruction to reason step by step and put the
    final answer in ``\\boxed{}``. It is the same text the trainer's math task uses
    (``cppo.tasks.math.DEFAULT_TEMPLATE``), so a model is evaluated on the prompt it was trained on.
  * ``chat``: the same instruction as the user turn of the model's own chat template (with the
    generation prompt appended), for post-trained models and for base models that ship one
    (Qwen3-Base does).
``auto`` picks ``chat`` when the tokenizer has a chat template and ``base`` otherwise.

Synthetic chain tasks use the problem string itself (``7+3-5=``), exactly as in training: no
instruction, no chat template, the answer format is the task's own.
"""

from __future__ import annotations

from typing import Any

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
BASE_TEMPLATE = "{problem}\n" + MATH_INSTRUCTION + "\n"
TEMPLATES = ("auto", "base", "chat")


def resolve_template(template: str, tokenizer: Any | None) -> str:
    """``auto`` -> ``chat`` if the tokenizer carries a chat template, else ``base``."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose from {', '.join(TEMPLATES)}")
    if template != "auto":
        return template
    return "chat" if tokenizer is not None and getattr(tokenizer, "chat_template", None) else "base"


def math_prompt(problem: str, template: str = "base", tokenizer: Any | None = None, base_template: str | None = None) -> str:
    """The full prompt text of a math problem.

    Args:
        problem: the problem statement.
        template: ``base`` | ``chat`` | ``auto``.
        tokenizer: needed for ``chat`` (its ``apply_chat_template``).
        base_template: a profile's own raw template (``task.template``, a ``str.format`` string
            with ``{problem}``), so that evaluation prompts match a custom training prompt.
    """
    kind = resolve_template(template, tokenizer)
    if kind == "base":
        if base_template:
            return base_template.format(problem=problem)
        return BASE_TEMPLATE.replace("{problem}", problem)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat template requested but the tokenizer has none; use --template base")
    user = problem + "\n" + MATH_INSTRUCTION
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)


def chain_prompt(problem: str) -> str:
    """Chain tasks: the problem string as is (``7+3-5=``)."""
    return problem
