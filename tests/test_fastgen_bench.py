"""benchmarks/gpu.py: the CPU smoke run end to end, and its FLOP/peak bookkeeping by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_peak_detection(gpu_bench):
    assert gpu_bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_bench.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_bench.peak_tflops("Some Future GPU") is None


def test_flop_params_by_hand(gpu_bench):
    import torch

    model = gpu_bench.build("smoke", 64, "cpu", torch.float32)
    # per layer: q 32x32 + k 32x16 + v 32x16 + o 32x32 + q/k norm 2x8 + MLP 3x32x64 + 2 norms x32 = 9296
    # 2 layers + final norm 32 + tied lm_head 32x64 (counted although it shares the embedding's storage)
    assert gpu_bench.flop_params(model) == 2 * 9296 + 32 + 32 * 64
    # the size names are honest: ~20M / ~100M / ~0.4B matmul parameters with the char vocabulary
    for name, lo, hi in (("20m", 15e6, 25e6), ("100m", 80e6, 120e6), ("0.4b", 0.35e9, 0.5e9)):
        assert lo < gpu_bench.flop_params(gpu_bench.build(name, 128, "meta", torch.bfloat16)) < hi


def test_cpu_smoke_prints_the_table(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| model | params | engine | tokens/s | x generate |" in proc.stdout
    assert "| model | update tokens | step s | TFLOP/s | MFU |" in proc.stdout
    res = json.loads(out.read_text())
    (size,) = res["sizes"]
    rows = {r["engine"]: r for r in size["rollout"]}
    assert set(rows) == {"generate", "hf", "hf_fast", "vllm"}
    for name in ("generate", "hf", "hf_fast"):
        assert "error" not in rows[name], rows[name]
        assert rows[name]["tokens"] == 4 * 8  # EOS ignored: every row makes all its tokens
        assert rows[name]["tokens_per_s"] > 0
    if importlib.util.find_spec("vllm") is None:
        assert "not installed" in rows["vllm"]["error"]
    assert size["check"]["vs_forward"] < 1e-4  # float32 on CPU: the fast path's log mu is the model's
    upd = size["update"]
    assert upd["tokens"] == 2 * 16 and upd["seconds"] > 0 and upd["tflops"] > 0
    assert upd["mfu"] is None  # no known peak on CPU
    assert "n/a" in proc.stdout
