"""`cppo prepare-data`: write a math training or evaluation set in verl's parquet format.

verl's RL dataset reads one row per prompt with (verl 0.9.1, `verl/utils/dataset/rl_dataset.py`):
    data_source   str   selects the reward function (ours: `compute_score` in cppo.integrations.verl)
    prompt        list  chat messages, here one user turn [{"role": "user", "content": ...}]
    ability       str   free-form tag ("math")
    reward_model  dict  {"style": "rule", "ground_truth": <final answer>}
    extra_info    dict  {"index", "id", "split", "problem", "answer"}

Sources:
- `dapo-math-17k`: DAPO-Math-17k (BytedTsinghua-SIA/DAPO-Math-17k, the paper's training set). Read from
  `--input FILE` (.parquet or .jsonl), else `<data_dir>/dapo-math-17k.{parquet,jsonl}`, else downloaded
  from the Hugging Face hub (`data/dapo-math-17k.parquet`; needs the network). The hub file repeats each
  problem many times; rows are de-duplicated by problem text. Its prompts carry DAPO's own
  "Answer: $Answer" instruction; the bare problem is cut out of it and re-templated.
- any other name: `<data_dir>/<name>.jsonl` with `id`, `problem`, `answer` (docs/contracts.md §Data), e.g. `aime24`,
  `math_train`; no network.

Every prompt uses the math task's template (`cppo.tasks.math.DEFAULT_TEMPLATE`, answer in \\boxed{}),
so the built-in trainer, verl and `cppo eval` ask the same question and score it the same way
(math-verify through `evals.scoring.is_correct`).

Output: `<out>/<source>.parquet` (the path `cppo verl-cmd` expects), plus a line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

DAPO_NAME = "dapo-math-17k"
DAPO_HUB_REPO = "BytedTsinghua-SIA/DAPO-Math-17k"
DAPO_HUB_FILE = "data/dapo-math-17k.parquet"
# DAPO-Math-17k wraps each problem in this instruction (prefix ... suffix); we keep only the problem.
_DAPO_PREFIX_END = "where $Answer is the answer to the problem.\n\n"
_DAPO_SUFFIX_START = "\n\nRemember to put your answer on its own line after"


def dapo_problem(content: str) -> str:
    """The bare problem inside a DAPO-Math-17k prompt (the content unchanged if the wrapper is absent)."""
    start = content.find(_DAPO_PREFIX_END)
    body = content[start + len(_DAPO_PREFIX_END):] if start >= 0 else content
    end = body.rfind(_DAPO_SUFFIX_START)
    return (body[:end] if end >= 0 else body).strip()


def _read_table(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    from cppo.data import read_jsonl

    return read_jsonl(path)


def _dapo_rows(input_path: Optional[Path], data_dir: Optional[Path]) -> list[dict]:
    """DAPO-Math-17k as [{id, problem, answer}], de-duplicated by problem."""
    path = input_path
    if path is None and data_dir is not None:
        for ext in (".parquet", ".jsonl"):
            if (data_dir / f"{DAPO_NAME}{ext}").is_file():
                path = data_dir / f"{DAPO_NAME}{ext}"
                break
    if path is None:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(DAPO_HUB_REPO, DAPO_HUB_FILE, repo_type="dataset"))
        except Exception as e:  # noqa: BLE001 - offline, no hub access, ...
            raise ValueError(f"{DAPO_NAME}: no --input, no {DAPO_NAME}.parquet/.jsonl in the data dir "
                             f"({data_dir}), and the hub download of {DAPO_HUB_REPO} failed: {e}") from e
    rows, seen = [], set()
    for i, r in enumerate(_read_table(Path(path))):
        if "problem" in r and "answer" in r:  # already in our JSONL shape
            problem, answer, rid = str(r["problem"]), str(r["answer"]), str(r.get("id", i))
        else:
            prompt = r.get("prompt")
            content = prompt[0]["content"] if len(prompt) else ""
            problem = dapo_problem(str(content))
            answer = str(r["reward_model"]["ground_truth"])
            rid = str((r.get("extra_info") or {}).get("index", i))
        if problem in seen:
            continue
        seen.add(problem)
        rows.append({"id": rid, "problem": problem, "answer": answer})
    return rows


def to_verl_rows(rows: list[dict], data_source: str, split: str, template: Optional[str] = None) -> list[dict]:
    """[{id, problem, answer}] -> verl RL rows (see the module docstring)."""
    from cppo.tasks.math import DEFAULT_TEMPLATE

    template = template or DEFAULT_TEMPLATE
    if "{problem}" not in template:
        raise ValueError(f"prompt template must contain {{problem}}, got {template!r}")
    out = []
    for i, r in enumerate(rows):
        missing = {"id", "problem", "answer"} - set(r)
        if missing:
            raise ValueError(f"{data_source} row {i}: missing field(s) {sorted(missing)}")
        out.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": template.format(problem=r["problem"])}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(r["answer"])},
            "extra_info": {"index": i, "id": str(r["id"]), "split": split, "problem": str(r["problem"]),
                           "answer": str(r["answer"])},
        })
    return out


def prepare(source: str, out_dir: str | Path, split: str = "train", input_path: Optional[str | Path] = None,
            data_dir: Optional[str | Path] = None, limit: Optional[int] = None,
            template: Optional[str] = None) -> Path:
    """Write `<out_dir>/<source>.parquet`; returns its path."""
    import pandas as pd

    from cppo.data import data_dir as resolve_data_dir
    from cppo.data import load_benchmark_file

    ddir = Path(data_dir) if data_dir else resolve_data_dir()
    if source == DAPO_NAME:
        rows = _dapo_rows(Path(input_path) if input_path else None, ddir)
    elif input_path is not None:
        rows = _read_table(Path(input_path))
    else:
        rows = load_benchmark_file(source, {"data_dir": str(ddir)} if ddir else None)
        if rows is None:
            raise ValueError(f"no {source}.jsonl in the data dir ({ddir}); set CPPO_DATA_DIR, pass --data-dir "
                             f"or --input, or use --source {DAPO_NAME}")
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"{source}: no rows")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{source}.parquet"
    pd.DataFrame(to_verl_rows(rows, source, split, template)).to_parquet(path, index=False)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True,
                        help=f"{DAPO_NAME} (hub or local copy) or the name of a <data_dir>/<name>.jsonl")
    parser.add_argument("--out", required=True, help="output folder; writes <out>/<source>.parquet")
    parser.add_argument("--split", default=None, help="split tag stored in extra_info (default: train for "
                        f"{DAPO_NAME} and *_train sources, test otherwise)")
    parser.add_argument("--input", default=None, help="read this .parquet/.jsonl instead of the data dir / hub")
    parser.add_argument("--data-dir", default=None,
                        help="benchmark data folder (default: CPPO_DATA_DIR)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows (after de-duplication)")
    parser.add_argument("--template", default=None, help="prompt template with {problem} (default: the math task's)")


def main(args: argparse.Namespace) -> int:
    split = args.split or ("train" if args.source == DAPO_NAME or args.source.endswith("_train") else "test")
    try:
        path = prepare(args.source, args.out, split=split, input_path=args.input, data_dir=args.data_dir,
                       limit=args.limit, template=args.template)
    except ValueError as e:
        print(f"cppo prepare-data: {e}", file=sys.stderr)
        return 2
    import pandas as pd

    n = len(pd.read_parquet(path, columns=["data_source"]))
    print(json.dumps({"path": str(path), "rows": n, "source": args.source, "split": split}))
    return 0
