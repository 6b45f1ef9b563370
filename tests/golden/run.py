"""The golden pipeline: a few SFT steps, a few RL steps and a greedy evaluation of the `tiny` profile,
each through the `cppo` command as the pipeline runs it, reduced to one digest per stage.

Why: the pinned numeric path (cppo/numerics.py) promises the same bits on every x86-64 host with
AVX2. `digest.json` beside this file holds the digests of one host; tests/test_numerics.py reruns
this script on whatever host the tests run on and compares. The three stages are digested
separately, so a failure names the first stage whose floats moved.

What is digested: every number a stage writes (exact, via ``float.hex``), never times.
    python tests/golden/run.py OUT_DIR        # prints the digests as JSON
    python tests/golden/run.py OUT_DIR sft    # the first stage only
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "tiny.yaml"
SFT_STEPS = 40
RL_STEPS = 4
EVAL_LIMIT = 64
# keys that hold times or paths, not numbers of the computation
SKIP_KEYS = ("time", "_s", "wall", "path", "dir", "elapsed", "sec")


def _numbers(obj, prefix=""):
    """(key, value) of every number in a JSON value, with float values as exact hex."""
    if isinstance(obj, dict):
        for k in sorted(obj):
            if any(s in str(k) for s in SKIP_KEYS):
                continue
            yield from _numbers(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{prefix}[{i}]")
    elif isinstance(obj, bool) or obj is None:
        yield prefix, repr(obj)
    elif isinstance(obj, str):  # names and paths, not numbers (a path differs with the folder)
        return
    elif isinstance(obj, (int, float)):
        yield prefix, float(obj).hex()


def digest(records) -> str:
    h = hashlib.sha256()
    for rec in records:
        for k, v in _numbers(rec):
            h.update(f"{k}={v}\n".encode())
    return h.hexdigest()[:16]


def weights_digest(folder: Path) -> str:
    """The exact bytes of every tensor of a checkpoint folder, by name."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        tensors = load_file(str(f))
        for name in sorted(tensors):
            h.update(name.encode() + tensors[name].tobytes())
    return h.hexdigest()[:16]


def cppo(*args: str) -> None:
    cmd = [sys.executable, "-m", "cppo.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"golden: {' '.join(args[:1])} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")


def main(out: Path, stages: tuple[str, ...] = ("sft", "rl", "eval")) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    base, run, ev = out / "base", out / "run", out / "eval.json"
    cppo("sft", str(CONFIG), "--scale", "s", "--out", str(base), "--steps", str(SFT_STEPS), "--no-progress",
         "--set", "sft.eval_every=20", "--set", "sft.val_n=32")
    sft = json.loads((base / "sft_metrics.json").read_text())
    got = {"sft": digest([sft]) + ":" + weights_digest(base)}
    if "rl" not in stages:
        return got
    cppo("train", str(CONFIG), "--method", "cppo", "--scale", "s", "--seed", "1", "--setting", "upd4",
         "--steps", str(RL_STEPS), "--run-dir", str(run), "--init", str(base), "--no-mlflow", "--no-progress",
         "--set", "rl.eval_every=2", "--set", "rl.eval_n=32")
    cppo("eval", str(run / "final"), "--config", str(CONFIG), "--benchmarks", "chain_id", "--n", "1",
         "--temperature", "0", "--limit", str(EVAL_LIMIT), "--seed", "0", "--out", str(ev))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evaluation = json.loads(ev.read_text())
    evaluation.pop("samples", None)
    got["rl"] = digest(metrics) + ":" + weights_digest(run / "final")
    got["eval"] = digest([evaluation])
    return got


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python tests/golden/run.py OUT_DIR [sft]")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(main(Path(sys.argv[1]), tuple(sys.argv[2:]) or ("sft", "rl", "eval")), indent=1))
