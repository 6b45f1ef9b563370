"""``cppo data download DIR``: write the benchmark data directory from the Hugging Face hub, once.

The result is the folder ``CPPO_DATA_DIR`` expects (``docs/contracts.md`` §Data): one
``<name>.jsonl`` per benchmark or training set, each line ``{"id", "problem", "answer", "source"}``
plus ``"solution"`` when the hub dataset has worked solutions. The hub sources and the column
mapping are those of ``evals.registry`` (``DATA_FILES``), so a downloaded file and the registry's
own hub fallback give the same documents. Rows whose answer cannot be extracted (MATH solutions
without a ``\\boxed{}``) are left out and counted.

Files already present are kept (``--force`` rewrites them), so the command can be re-run after a
partial failure. It needs the network; in an offline environment (``HF_HUB_OFFLINE=1``) it stops
at once with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = sub.add_parser("download", help="download the benchmarks into DIR as <name>.jsonl (needs the network)",
                       description="download the benchmarks into DIR as <name>.jsonl (needs the network)")
    d.add_argument("dir", type=Path, metavar="DIR", help="data folder to write (created if missing)")
    d.add_argument("--benchmarks", help="comma-separated file names, e.g. math500,aime24 (default: all; "
                   "registry names such as gsm8k are accepted for their file, gsm8k_test)")
    d.add_argument("--force", action="store_true", help="rewrite files that already exist")
    d.add_argument("--limit", type=int, help="only the first N rows of each file (a quick check)")


def parse_stems(spec: str | None) -> list[str]:
    """``"math500,gsm8k"`` → data file stems (``gsm8k`` → ``gsm8k_test``); ValueError naming the valid ones."""
    from evals.registry import BENCHMARKS, DATA_FILES

    if not spec:
        return list(DATA_FILES)
    out = []
    for name in (n.strip() for n in spec.split(",")):
        if not name:
            continue
        b = BENCHMARKS.get(name)
        stem = (b.local_file or b.name) if b is not None and b.kind == "math" else name
        if stem not in DATA_FILES:
            raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(DATA_FILES)}")
        out.append(stem)
    if not out:
        raise ValueError("no benchmark given")
    return list(dict.fromkeys(out))


def download(stem: str, directory: Path, limit: int | None = None) -> tuple[Path, int, int]:
    """Write ``<directory>/<stem>.jsonl`` from the hub; returns (path, rows written, rows dropped)."""
    from cppo.data import write_jsonl
    from evals.registry import DATA_FILES, load_hub, map_row

    hub = DATA_FILES[stem]
    rows, dropped = [], 0
    for i, raw in enumerate(load_hub(hub, limit)):
        r = map_row(stem, raw, i, hub.fields, hub.answer_fn)
        if not r["answer"]:
            dropped += 1
            continue
        row = {"id": r["id"], "problem": r["problem"], "answer": r["answer"], "source": f"{stem} ({hub.label})"}
        if r["solution"]:
            row["solution"] = r["solution"]
        rows.append(row)
    if not rows:
        raise ValueError(f"{stem}: the hub dataset {hub.label} gave no usable rows")
    path = directory / f"{stem}.jsonl"
    write_jsonl(path, rows)
    return path, len(rows), dropped


def main(args: argparse.Namespace) -> int:
    from cppo.data import DATA_ENV, hub_offline
    from evals.registry import DATA_FILES, hub_error

    try:
        stems = parse_stems(args.benchmarks)
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
    except ValueError as e:
        print(f"cppo data: {e}", file=sys.stderr)
        return 2
    if hub_offline():
        print("cppo data: downloading needs the Hugging Face hub, but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set",
              file=sys.stderr)
        return 2
    directory = args.dir.expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    failed = []
    for stem in stems:
        target = directory / f"{stem}.jsonl"
        if target.is_file() and not args.force:
            print(f"kept     {target} (exists; --force rewrites it)")
            continue
        try:
            path, n, dropped = download(stem, directory, args.limit)
        except Exception as e:  # noqa: BLE001 - one line per file that failed; the others still download
            print(f"cppo data: {stem}: {DATA_FILES[stem].label} could not be downloaded ({hub_error(e)})", file=sys.stderr)
            failed.append(stem)
            continue
        extra = f", {dropped} rows without an answer left out" if dropped else ""
        print(f"wrote    {path}: {n} rows from {DATA_FILES[stem].label}{extra}")
    if failed:
        print(f"cppo data: {len(failed)} of {len(stems)} file(s) failed: {', '.join(failed)} (re-run to retry them)",
              file=sys.stderr)
        return 1
    print(f"done; use it with: export {DATA_ENV}={directory.resolve()}")
    return 0
