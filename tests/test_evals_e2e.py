"""End-to-end evaluations through lm-eval: the oracle (100% by construction of the data), scripted
models with known metric values, and a tiny local checkpoint through lm-eval's ``hf`` backend."""

from __future__ import annotations

import json
from collections import Counter
from math import comb

import pytest

from evals.harness import EvalSettings, run_eval
from evals.registry import BENCHMARKS, ChainSettings, get_benchmark

ALL = list(BENCHMARKS)


@pytest.mark.usefixtures("data_dir")
def test_oracle_scores_100_percent_on_every_benchmark():
    """Worked solutions (or the gold in a box) from the data, through prompting, lm-eval's repeats and
    filters, extraction and math-verify: every benchmark must come out at 100%."""
    res = run_eval("oracle", ALL, EvalSettings(n=2, limit=40, chain=ChainSettings(n_test=40)), backend="oracle")
    assert set(res["benchmarks"]) == set(ALL)
    for name, r in res["benchmarks"].items():
        assert r["n_problems"] == min(40, {"aime24": 30, "aime25": 30, "aime26": 30}.get(name, 40)), name
        assert r["metrics"] == {"avg@2": 1.0, "pass@1": 1.0, "pass@2": 1.0, "maj@2": 1.0}, name
        assert len(r["samples"]) == 2 * r["n_problems"]
        assert all(s["correct"] and s["extracted"] is not None for s in r["samples"]), name
    assert res["benchmarks"]["math500"]["source"].startswith("local:")
    assert res["benchmarks"]["chain_ood"]["source"].startswith("generated:chain_ood")


@pytest.mark.slow
@pytest.mark.usefixtures("data_dir")
def test_oracle_scores_100_percent_on_all_problems():
    res = run_eval("oracle", [b for b in ALL if BENCHMARKS[b].kind == "math"], EvalSettings(n=1), backend="oracle")
    for name, r in res["benchmarks"].items():
        wrong = [s for s in r["samples"] if not s["correct"]]
        assert not wrong, f"{name}: {len(wrong)} oracle answers scored wrong, e.g. {wrong[0]['gold']!r}"


def _scripted_lm(pattern):
    """An lm-eval model whose j-th sample of problem i is correct iff pattern(i, j)."""
    from lm_eval.api.model import LM

    class Scripted(LM):
        def __init__(self):
            super().__init__()
            self.seen = Counter()

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                d = r.doc
                i = int(str(d["id"]).rsplit("-", 1)[-1]) if d["benchmark"].startswith("chain") else self.index[d["id"]]
                j = self.seen[(d["benchmark"], d["id"])]
                self.seen[(d["benchmark"], d["id"])] += 1
                good = pattern(i, j)
                if d["benchmark"].startswith("chain"):
                    sol = d["solution"]
                    out.append(sol if good else sol[:-1] + str((int(sol[-1]) + 1) % 10))
                else:
                    out.append(f"\\boxed{{{d['answer'] if good else int(d['answer']) + 1}}}")
            return out

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    return Scripted()


def test_scripted_model_gives_hand_computed_metrics(data_dir):
    """Problem i has c_i = i mod 5 correct samples among n = 4 (0,1,2,3,4,0,...)."""
    n, problems = 4, 10
    lm = _scripted_lm(lambda i, j: j < i % 5)
    aime = [json.loads(line) for line in (data_dir / "aime25.jsonl").read_text().splitlines()]
    lm.index = {r["id"]: k for k, r in enumerate(aime)}
    res = run_eval("scripted", ["chain_id", "aime25"], EvalSettings(n=n, limit=problems), lm=lm)
    cs = [i % 5 for i in range(problems)]
    expected = {
        "avg@4": sum(c / n for c in cs) / problems,
        "pass@1": sum(c / n for c in cs) / problems,
        "pass@2": sum(1 - comb(n - c, 2) / comb(n, 2) for c in cs) / problems,
        "pass@4": sum(c > 0 for c in cs) / problems,
        # majority among 4 samples: the correct answer wins with 3 or 4 votes; with 2 correct the two
        # wrong samples share one wrong answer, a 2-2 tie won by the first sample (correct)
        "maj@4": sum(c >= 2 for c in cs) / problems,
    }
    for name in ("chain_id", "aime25"):
        got = res["benchmarks"][name]["metrics"]
        assert got == pytest.approx(expected), name
        assert res["benchmarks"][name]["n_problems"] == problems


def test_vllm_missing_is_a_clear_error():
    import importlib.util

    from evals.backends import build_lm

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(RuntimeError, match=r"cppo-bench\[vllm\]"):
        build_lm("vllm", "some/model", EvalSettings())
    with pytest.raises(ValueError, match="unknown backend"):
        build_lm("tgi", "some/model", EvalSettings())


# --------------------------------------------------------------------------- a real tiny checkpoint
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from cppo.models import build_model, build_tokenizer, save_checkpoint

    tok = build_tokenizer()
    model = build_model("xs", tok, seed=0)
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("ckpt") / "xs")


def test_hf_backend_greedy_matches_transformers_generate(tiny_checkpoint):
    """lm-eval's hf backend sees exactly our prompt (no BOS) and stops where transformers does."""
    import torch

    from cppo.models import load_model

    res = run_eval(str(tiny_checkpoint), ["chain_id"],
                   EvalSettings(n=2, temperature=0.0, max_tokens=12, limit=3, device="cpu"), backend="hf")
    r = res["benchmarks"]["chain_id"]
    assert r["n_problems"] == 3 and len(r["samples"]) == 6
    model, tok = load_model(tiny_checkpoint)
    for s in r["samples"]:
        ids = tok(s["prompt"], add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert s["response"] == expected
        assert len(s["response"]) <= 12  # one character per token
    # greedy: both samples of a problem coincide
    assert r["samples"][0]["response"] == r["samples"][1]["response"]


@pytest.mark.usefixtures("data_dir")
def test_hf_backend_sampling_on_math_and_chain(tiny_checkpoint):
    settings = EvalSettings(n=3, temperature=1.0, top_p=1.0, max_tokens=16, limit=2, seed=3, device="cpu",
                            chain=ChainSettings(K=6, n_test=2))
    a = run_eval(str(tiny_checkpoint), ["math500", "chain_ood"], settings, backend="hf")
    b = run_eval(str(tiny_checkpoint), ["math500", "chain_ood"], settings, backend="hf")
    for name in ("math500", "chain_ood"):
        ra, rb = a["benchmarks"][name], b["benchmarks"][name]
        assert [s["response"] for s in ra["samples"]] == [s["response"] for s in rb["samples"]]  # seeded
        assert len({s["response"] for s in ra["samples"]}) > 1  # sampled, not greedy
        # metrics agree with the per-sample log
        from evals import metrics as M
        from evals.registry import answer_key

        bench = get_benchmark(name)
        rows = {}
        for s in ra["samples"]:
            rows.setdefault(s["problem_id"], []).append(s)
        want = M.summarize([[answer_key(bench, s["extracted"]) for s in v] for v in rows.values()],
                           [[s["correct"] for s in v] for v in rows.values()])
        assert ra["metrics"] == pytest.approx(want)
    assert a["benchmarks"]["math500"]["samples"][0]["prompt"].endswith("within \\boxed{}.\n")
    assert a["template"] == "base"  # the char tokenizer has no chat template
    from evals.registry import load_docs

    ood = load_docs(get_benchmark("chain_ood"), chain=ChainSettings(K=6, n_test=2))
    assert [s["prompt"] for s in a["benchmarks"]["chain_ood"]["samples"][::3]] == [d["problem"] for d in ood]
    assert all(len(d["solution"]) == 14 for d in ood)  # ood_K = K + 8


def test_fit_budget_leaves_room_for_the_longest_prompt():
    from evals.harness import fit_budget

    assert fit_budget(40, 512, [100, 300]) == 40  # fits: unchanged
    assert fit_budget(4096, 512, [100, 300]) == 212  # context minus the longest prompt
    assert fit_budget(4096, 512, [100, 800]) == 256  # a prompt alone fills the context: half of it
    assert fit_budget(100, 512, [100, 800]) == 100


def test_readme_quick_look_runs_on_a_tiny_model(tiny_checkpoint, tmp_path, capsys):
    """docs/evaluation.md's `cppo eval MODEL --benchmarks math500 --limit 20 --n 4`: math500's budget of 4096 new
    tokens does not fit the tiny models' 512-token context; it is capped with a one-line note, not a crash."""
    from cppo.cli import main as cppo_main

    problems = [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(2)]
    (tmp_path / "math500.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    out = tmp_path / "quick.json"
    rc = cppo_main(["eval", str(tiny_checkpoint), "--benchmarks", "math500", "--limit", "20", "--n", "4",
                    "--out", str(out), "--data-dir", str(tmp_path)])
    assert rc == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cppo eval: note:")]
    prompt_len = len("What is 0 + 0?\nPlease reason step by step, and put your final answer within \\boxed{}.\n")
    assert len(notes) == 1 and "4096" in notes[0] and f"at most {512 - prompt_len}" in notes[0]
    r = json.loads(out.read_text())["benchmarks"]["math500"]
    assert r["max_tokens"] == 512 - prompt_len and r["n_problems"] == 2 and len(r["samples"]) == 8


@pytest.mark.usefixtures("data_dir")
def test_chat_template_of_a_checkpoint_is_used_by_default(tmp_path):
    from cppo.models import build_model, build_tokenizer, save_checkpoint

    tok = build_tokenizer()
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    ckpt = save_checkpoint(build_model("xs", tok, seed=0), tok, tmp_path / "chat")
    res = run_eval(str(ckpt), ["aime25"], EvalSettings(n=1, limit=1, max_tokens=8, device="cpu"), backend="hf")
    prompt = res["benchmarks"]["aime25"]["samples"][0]["prompt"]
    assert res["template"] == "chat" and prompt.startswith("<user>") and prompt.endswith("\\boxed{}.\n<assistant>")
    base = run_eval(str(ckpt), ["aime25"], EvalSettings(n=1, limit=1, max_tokens=8, device="cpu", template="base"),
                    backend="hf")
    assert base["benchmarks"]["aime25"]["samples"][0]["prompt"].endswith("within \\boxed{}.\n")
