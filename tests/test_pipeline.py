"""The Snakemake pipeline: config validation, dry runs of every profile, mlflow-init, and (slow) a
reduced tiny grid end to end through Snakemake with MLflow, table, figures and summary checked."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from config_check import ConfigError, check_config  # noqa: E402


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def _snakemake(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(cwd), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- schema
def test_schema_mirrors_the_typed_config_sections():
    """Every key the trainer's dataclasses accept is in the schema and nothing else (typos fail)."""
    from cppo.config import RLConfig, SFTConfig, TaskConfig
    from cppo.integrations.verl_backend import VerlSettings

    schema = yaml.safe_load((REPO / "cppo" / "config.schema.yaml").read_text())
    sections = {"rl": (schema["$defs"]["rl_section"], RLConfig), "sft": (schema["properties"]["sft"], SFTConfig),
                "task": (schema["properties"]["task"], TaskConfig),
                "verl": (schema["$defs"]["verl_section"], VerlSettings)}
    for name, (sub, cls) in sections.items():
        assert set(sub["properties"]) == {f.name for f in dataclasses.fields(cls)}, name
        assert sub["additionalProperties"] is False, name


@pytest.mark.parametrize("profile", ["tiny.yaml", "tiny-all.yaml", "tiny-long.yaml", "paper.yaml"])
def test_profiles_validate(profile):
    check_config(_load(profile))


def test_dry_run_takes_cppo_set_overrides(tmp_path):
    """`--config 'set=KEY=VALUE'`: the `cppo --set` syntax for nested keys (a replication's seeds)."""
    res = _snakemake("-n", "--config", "set=grid.seeds=[101, 102]", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # grouped jobs (grid.runs_per_job) are named by their seeds, `seeds~101-102`
    seeds = {k for m in re.findall(r"seeds?~([\d-]+)", res.stdout + res.stderr) for k in m.split("-")}
    assert seeds == {"101", "102"}
    snap = yaml.safe_load((tmp_path / "results" / "tiny" / "runs" / "_config.yaml").read_text())
    assert snap["grid"]["seeds"] == [101, 102] and "set" not in snap
    bad = _snakemake("-n", "--config", "set=grid.seedz=[1]", cwd=tmp_path)
    assert bad.returncode != 0 and "unknown config key grid.seedz" in bad.stdout + bad.stderr


def test_tiny_all_is_generated_from_tiny():
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    from make_tiny_all import render

    assert (REPO / "config" / "tiny-all.yaml").read_text() == render((REPO / "config" / "tiny.yaml").read_text()), \
        "config/tiny-all.yaml is out of date: run workflow/scripts/make_tiny_all.py"


def test_tiny_all_shares_the_tiny_regime():
    tiny, full = _load("tiny.yaml"), _load("tiny-all.yaml")
    for key in ("task", "scales", "sft", "rl", "settings", "eval", "report", "backend", "data_dir"):
        assert full[key] == tiny[key], key
    for m in tiny["grid"]["methods"]:  # the tiny methods keep their parameters in tiny-all
        assert full["methods"][m] == tiny["methods"][m], m
    assert len(full["grid"]["seeds"]) == 5
    for m in ("cispo", "trm_max", "trm_avg", "minpro", "cppo_no_posw", "cppo_no_prefix", "cppo_shuffled_w",
              "cppo_kl", "cppo_soft", "cppo_no_cap"):
        assert m in full["grid"]["methods"], m
    assert full["methods"]["cppo_kl"]["divergence"] == "binary_kl" and full["methods"]["cppo_kl"]["delta_b"] == 0.002


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["rl"].update(lrr=1e-4), r"unknown config key rl\.lrr"),
    (lambda c: c["rl"].update(lr="fast"), r"config key rl\.lr: .*'fast'"),
    (lambda c: c["grid"].update(seeds=["one"]), r"config key grid\.seeds\.0"),
    (lambda c: c.update(profil="x"), r"unknown config key profil\b"),
    (lambda c: c["methods"]["cppo"].update(rule="cpo"),
     r"config key methods\.cppo\.rule: 'cpo' is not one of the registered rules \(pg_is, ppo_clip, .*cppo\)"),
    (lambda c: c["rl"].update(steps=-1), r"config key rl\.steps: -1 is less than the minimum of 0"),
    (lambda c: c["rl"].update(eval_every={"s": "x"}), r"config key rl\.eval_every\.s: 'x' is not of type 'integer'"),
    (lambda c: c["settings"]["upd8"].update(staleness=-1), r"config key settings\.upd8\.staleness"),
    (lambda c: c["settings"]["upd8"].update(rollout_dtype="int8"), r"config key settings\.upd8\.rollout_dtype"),
    (lambda c: c["grid"].update(reference={"setting": "upd8"}), r"config key grid\.reference"),
    (lambda c: c["eval"].update(n=0), r"config key eval\.n"),
])
def test_bad_config_names_the_key(edit, expected):
    cfg = _load("tiny.yaml")
    edit(cfg)
    with pytest.raises(ConfigError, match=expected):
        check_config(cfg)


def test_schema_file_names_no_rule():
    """Rule names live in the registry only; the checker fills them in (entry points included)."""
    from cppo.rules import list_rules
    from cppo.schema import load_schema

    raw = yaml.safe_load((REPO / "cppo" / "config.schema.yaml").read_text())
    assert raw["$defs"]["rule_name"] == {"type": "string"}

    def scalars(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from scalars(v)
        elif isinstance(node, list):
            for v in node:
                yield from scalars(v)
        else:
            yield node

    assert not set(scalars(raw)) & set(list_rules()), "a rule name is written in the schema"
    assert load_schema()["$defs"]["rule_name"]["enum"] == list_rules()


def test_a_rule_registered_at_runtime_passes_the_schema(monkeypatch):
    from dataclasses import dataclass

    from cppo.rules import registry

    cfg = _load("tiny.yaml")
    cfg["methods"]["mine"] = {"rule": "schema_test_rule"}
    with pytest.raises(ConfigError, match="'schema_test_rule' is not one of the registered rules"):
        check_config(cfg)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test

    @dataclass
    class P:
        pass

    registry.register_rule("schema_test_rule", P)(lambda batch, p: None)
    check_config(cfg)


# ----------------------------------------------------------------------------- dry runs
def _job_counts(out: str) -> dict[str, int]:
    block = out.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def expected_jobs(cfg: dict) -> dict[str, int]:
    """The jobs a full plan of `cfg` has, counted from the config itself (the grid may change):
    one train and one evaluate job per (method, scale, seed, setting), one base per locally built
    scale (builtin backend), one prepare_data per verl parquet (training set + benchmarks)."""
    grid = cfg["grid"]
    ref = 1 if grid.get("reference") else 0  # the on-policy reference rung: one method per scale and seed
    runs = len(grid["scales"]) * len(grid["seeds"]) * (len(grid["methods"]) * (len(grid.get("settings") or [None]) - ref) + ref)
    benchmarks = (cfg.get("eval") or {}).get("benchmarks") or []
    jobs = {"mlflow_init": 1, "train": runs, "evaluate": runs if benchmarks else 0, "report": 1}
    k = grid.get("runs_per_job", 1)
    if k > 1:  # one job per k seeds of each (setting, method, scale), evaluating in-process
        chunks = -(-len(grid["seeds"]) // k)
        jobs.update(train=0, evaluate=0, train_chunk=runs // len(grid["seeds"]) * chunks)
    if cfg.get("backend", "builtin") == "verl":
        verl = cfg.get("verl") or {}
        val = verl["val_sources"] if verl.get("val_sources") is not None else benchmarks
        jobs["prepare_data"] = len({verl.get("train_source", "dapo-math-17k"), *val})
    else:
        jobs["base"] = sum(1 for s in grid["scales"] if "hub" not in (cfg["scales"][s] or {}))
    return {k: v for k, v in jobs.items() if v}


@pytest.mark.parametrize("profile", [None, "config/tiny-all.yaml", "config/tiny-long.yaml", "config/paper.yaml"])
def test_dry_run_plans_the_full_grid(tmp_path, profile):
    """None: the embedded default profile, config/tiny.yaml."""
    args = ["-n", "--quiet", "rules"] + (["--configfile", str(REPO / profile)] if profile else [])
    res = _snakemake(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    counts = _job_counts(res.stdout + res.stderr)
    cfg = _load(Path(profile or "config/tiny.yaml").name)
    want = expected_jobs(cfg)
    assert want.get("train", 0) + want.get("train_chunk", 0) > 1 and want["report"] == 1
    assert {k: v for k, v in counts.items() if k != "total"} == {"all": 1, **want}
    if profile == "config/paper.yaml":
        assert "base" not in counts and counts["prepare_data"] >= 2  # hub models, verl data


def _grouped_tiny(tmp_path: Path, seeds: list[int], k: int | None) -> Path:
    cfg = _load("tiny.yaml")
    cfg["grid"]["seeds"] = seeds
    if k is not None:
        cfg["grid"]["runs_per_job"] = k
    else:
        cfg["grid"].pop("runs_per_job", None)  # the key unwritten: its default
    path = tmp_path / "grouped.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_dry_run_groups_the_seeds_of_each_cell(tmp_path):
    """grid.runs_per_job 2 with 5 seeds: each (setting, method, scale) trains seeds 1-2, 3-4 and 5 in three
    jobs of `cppo train --seed ... --eval`; no separate train or evaluate job; the report waits for them."""
    path = _grouped_tiny(tmp_path, [1, 2, 3, 4, 5], 2)
    res = _snakemake("-n", "-p", "--configfile", str(path), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    cfg = yaml.safe_load(path.read_text())
    counts = _job_counts(out)
    assert {k: v for k, v in counts.items() if k != "total"} == {"all": 1, **expected_jobs(cfg)}
    cmds = [line for line in out.splitlines() if " train " in line and "--seed" in line]
    cells = {}
    for cmd in cmds:
        assert "--eval" in cmd and "--no-progress" in cmd and "seed~{seed}" in cmd, cmd
        method = re.search(r"--method (\S+)", cmd).group(1)
        setting = re.search(r"--setting (\S+)", cmd).group(1)
        seeds = re.search(r"--seed ([\d ]+) --", cmd).group(1).split()
        cells.setdefault((setting, method), []).append(seeds)
    grid = cfg["grid"]
    ref = 1 if grid.get("reference") else 0  # the reference rung once, every other rung x every method
    assert len(cells) == ref + (len(grid["settings"]) - ref) * len(grid["methods"])
    assert all(sorted(v) == [["1", "2"], ["3", "4"], ["5"]] for v in cells.values()), cells
    # each run keeps the train rule's restart stamp (a changed config deletes exactly that run)
    top = grid["settings"][-1]
    assert out.count(f"_logs/train/setting~{top}/method~cppo/scale~s/seed~5.digest") >= 2


def test_dry_run_with_one_run_per_job_is_unchanged(tmp_path):
    """runs_per_job 1, written or not, plans today's jobs with today's commands."""
    plans = []
    for k in (None, 1):
        res = _snakemake("-n", "-p", "--configfile", str(_grouped_tiny(tmp_path, [1, 2], k)), cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        plan = (res.stdout + res.stderr).split("Job stats:", 1)[1]  # the jobs, after the run's own header
        # minus timestamps and the reasons (sets, printed in any order); jobs may come in any order too
        plans.append(sorted(line for line in plan.splitlines()
                            if not re.match(r"^\[\w{3} \w{3} +\d+ |\s+reason: ", line)))
    assert plans[0] == plans[1]
    assert "train_chunk" not in "\n".join(plans[0]) and "--eval" not in "\n".join(plans[0])


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["grid"].update(runs_per_job=0), r"config key grid\.runs_per_job: 0 is less than the minimum of 1"),
    (lambda c: c["grid"].update(runs_per_job="2"), r"config key grid\.runs_per_job: '2' is not of type 'integer'"),
])
def test_bad_runs_per_job_names_the_key(edit, expected):
    cfg = _load("tiny.yaml")
    edit(cfg)
    with pytest.raises(ConfigError, match=expected):
        check_config(cfg)


def test_runs_per_job_needs_the_builtin_backend(tmp_path):
    cfg = _load("paper.yaml")
    cfg["grid"]["runs_per_job"] = 2
    path = tmp_path / "paper-k2.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert res.returncode != 0
    assert "grid.runs_per_job 2: several runs per job need the builtin backend" in res.stdout + res.stderr


def test_dry_run_with_the_slurm_profile_submits_a_chunk_as_a_job(tmp_path):
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install 'cppo-bench[slurm]')")
    res = _snakemake("-n", "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
                     "--configfile", str(_grouped_tiny(tmp_path, [1, 2, 3], 3)), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    cfg = yaml.safe_load((tmp_path / "grouped.yaml").read_text())
    assert _job_counts(out)["train_chunk"] == expected_jobs(cfg)["train_chunk"] and "evaluate" not in _job_counts(out)


def test_dry_run_with_the_slurm_profile(tmp_path):
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install 'cppo-bench[slurm]'); "
                    "snakemake needs it even for -n with the slurm profile")
    res = _snakemake("-n", "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
                     "--configfile", str(REPO / "config" / "paper.yaml"), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert _job_counts(out)["train"] == expected_jobs(_load("paper.yaml"))["train"]
    # every train job's SLURM resources, by scale: nodes, GPUs (all nodes together) and tasks follow
    # verl.nnodes x verl.n_gpus_per_node of config/paper.yaml (30B-A3B: 2 nodes)
    by_scale: dict[str, set[str]] = {}
    for block in re.findall(r"rule train:.*?resources: [^\n]+", out, re.S):
        scale = re.search(r"wildcards: .*?scale=([^,\s]+)", block).group(1)
        res = dict(kv.split("=", 1) for kv in block.rsplit("resources: ", 1)[1].split(", "))
        by_scale.setdefault(scale, set()).add(
            tuple(res[k] for k in ("nodes", "gpu", "tasks", "tasks_per_gpu", "mpi", "slurm_partition", "runtime")))
    assert by_scale == {
        "1.7b": {("1", "8", "1", "0", "", "gpu", "4320")},
        "1.7b-base": {("1", "8", "1", "0", "", "gpu", "4320")},
        "8b-base": {("1", "8", "1", "0", "", "gpu", "4320")},
        "30b-a3b-base": {("2", "16", "2", "0", "srun", "gpu", "4320")},
    }


def test_dry_run_rejects_a_bad_config_naming_the_key(tmp_path):
    cfg = _load("tiny.yaml")
    cfg["rl"]["lerning_rate"] = 1e-4
    cfg["grid"]["seeds"] = [1, "two"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = _snakemake("-n", "--configfile", str(bad), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "unknown config key rl.lerning_rate" in out and "config key grid.seeds.1" in out


def test_mlflow_init_creates_every_parent_once(mlflow_uri, tmp_path):
    from cppo import tracking
    from cppo.cli import main

    out = tmp_path / "parents.json"
    assert main(["mlflow-init", str(REPO / "config" / "tiny.yaml"), "--out", str(out)]) == 0
    assert main(["mlflow-init", str(REPO / "config" / "tiny.yaml"), "--out", str(out)]) == 0  # idempotent
    ids = json.loads(out.read_text())["parents"]
    grid = _load("tiny.yaml")["grid"]
    ref = 1 if grid.get("reference") else 0
    n_parents = ((len(grid.get("settings") or [None]) - ref) * len(grid["methods"]) + ref) * len(grid["scales"])
    assert len(ids) == n_parents == len(set(ids.values()))  # settings × methods × scales (one method at the reference)
    c = tracking.client()
    exp = c.get_experiment_by_name("tiny")
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == n_parents and all(r.data.tags["level"] == "parent" for r in runs)
    setting, method, scale = (grid.get("settings") or ["default"])[-1], grid["methods"][-1], grid["scales"][-1]
    r = c.get_run(ids[f"{setting}/{method}/{scale}"])
    assert (r.data.tags["setting"], r.data.tags["method"], r.data.tags["scale"], r.data.tags["rule"]) == \
        (setting, method, scale, _load("tiny.yaml")["methods"][method]["rule"])


# ----------------------------------------------------------------------------- end to end
E2E_CONFIG = """
profile: e2e
data_dir: null
backend: builtin
task: {name: chain, K: 6, modulus: 10, ood_K: 8, n_test: 16}
scales:
  s: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, intermediate_size: 64}
sft: {batch_size: 32, max_steps: 20, eval_every: 10, val_n: 16, target_sampled_acc: null, warmup_steps: 5}
rl: {prompts_per_rollout: 4, samples_per_prompt: 4, updates_per_rollout: 2, steps: 2, max_new_tokens: 10,
     eval_every: 1, eval_n: 8, save_every: 1, loss_agg: seq-mean-token-sum-norm}
settings:
  fresh: {grad_clip: null, staleness: 0}
methods:
  grpo: {rule: ppo_clip, eps_low: 0.2, eps_high: 0.28}
  cppo: {rule: cppo, delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv, trunc_cap: 20}
grid: {methods: [grpo, cppo], scales: [s], seeds: [1, 2], settings: [fresh]}
eval: {benchmarks: [chain_id, chain_ood], n: 2, temperature: 0.7, top_p: 0.95, max_tokens: 12, limit: 8, every: 1}
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("runs_per_job", [1, 2])
def test_reduced_grid_end_to_end(tmp_path, mlflow_uri, runs_per_job):
    """2 methods × 1 scale × 2 seeds, --cores 2 (two runs write to one SQLite store at once); with
    runs_per_job 2, each method's two seeds train and evaluate in one job: the same files and MLflow records."""
    from cppo import tracking

    cfg = tmp_path / "e2e.yaml"
    assert E2E_CONFIG.count("settings: [fresh]}") == 1
    cfg.write_text(E2E_CONFIG.replace("settings: [fresh]}", f"settings: [fresh], runs_per_job: {runs_per_job}}}"))
    res = _snakemake("--cores", "2", "--configfile", str(cfg), "--workflow-profile",
                     str(REPO / "workflow" / "profiles" / "default"), cwd=tmp_path, timeout=380)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in (tmp_path / "results").rglob("*.log"))
    assert res.returncode == 0, (res.stderr[-4000:] + logs)

    # MLflow: one experiment, 2 parents, 4 children with tags, parents and complete histories
    c = tracking.client()
    exp = c.get_experiment_by_name("e2e")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("level") == "parent"}
    children = [r for r in runs if r.data.tags.get("level") == "child"]
    assert len(parents) == 2 and len(children) == 4
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in children) == \
        [("cppo", "1"), ("cppo", "2"), ("grpo", "1"), ("grpo", "2")]
    for r in children:
        t = r.data.tags
        parent = parents[t["mlflow.parentRunId"]]
        assert parent.data.tags["method"] == t["method"] and parent.data.tags["scale"] == t["scale"] == "s"
        assert t["rule"] == {"grpo": "ppo_clip", "cppo": "cppo"}[t["method"]]
        assert t["setting"] == "fresh" and t["profile"] == "e2e" and "git_commit" in t and "version/torch" in t
        assert r.info.status == "FINISHED"
        run_dir = tmp_path / "results" / "e2e" / "runs" / "setting~fresh" / f"method~{t['method']}" / "scale~s" / \
            f"seed~{t['seed']}"
        assert (run_dir / "mlflow_run_id").read_text().strip() == r.info.run_id
        # every step of metrics.jsonl is in MLflow exactly once (nothing lost, nothing duplicated)
        file_steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        for key in ("rollout/reward_mean", "eval/chain_id/greedy_acc"):
            hist = c.get_metric_history(r.info.run_id, key)
            want = [s for s, line in zip(file_steps, (run_dir / "metrics.jsonl").read_text().splitlines())
                    if key in json.loads(line)]
            assert sorted(m.step for m in hist) == want, key
        assert sorted(m.step for m in c.get_metric_history(r.info.run_id, "rollout/reward_mean")) == [1, 2]
        assert r.data.params["rl/steps"] == "2"
        # eval.every 1: the weights of steps 0, 1 and 2 were kept, and cppo eval logged each into the child
        assert sorted(p.name for p in (run_dir / "steps").iterdir()) == ["step_0", "step_1", "step_2"]
        for b in ("chain_id", "chain_ood"):
            hist = c.get_metric_history(r.info.run_id, f"eval/{b}/avg_at_2")
            assert sorted(m.step for m in hist) == [0, 1, 2], b
            assert (run_dir / "eval" / f"{b}.json").is_file()
        per_step = {int(p.stem.split("_")[1]): json.loads(p.read_text())
                    for p in (run_dir / "eval" / "steps").glob("step_*.json")}
        assert sorted(per_step) == [0, 1, 2]
        final = json.loads((run_dir / "eval" / "chain_id.json").read_text())
        assert final["benchmarks"]["chain_id"]["metrics"] == per_step[2]["benchmarks"]["chain_id"]["metrics"]

    # table: 2 methods × (2 benchmarks + mean) × (best, final); markdown rows; figures; summary
    out = tmp_path / "results" / "e2e"
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert sorted((r["method"], r["benchmark"], r["checkpoint"]) for r in rows) == sorted(
        (m, b, k) for m in ("grpo", "cppo") for b in ("chain_id", "chain_ood", "mean") for k in ("best", "final"))
    assert all(r["n_seeds"] == "2" and r["n_runs"] == "2" for r in rows)
    # best = per seed, the maximum over the evaluated checkpoints of the mean over benchmarks; then over seeds
    for m in ("grpo", "cppo"):
        best_per_seed = []
        for seed in (1, 2):
            folder = out / "runs" / "setting~fresh" / f"method~{m}" / "scale~s" / f"seed~{seed}" / "eval" / "steps"
            means = [sum(json.loads(p.read_text())["benchmarks"][b]["metrics"]["avg@2"]
                         for b in ("chain_id", "chain_ood")) / 2 for p in folder.glob("step_*.json")]
            best_per_seed.append(max(means))
        row = next(r for r in rows if (r["method"], r["benchmark"], r["checkpoint"]) == (m, "mean", "best"))
        assert float(row["mean"]) == pytest.approx(sum(best_per_seed) / 2, abs=1e-6)
    md = (out / "table.md").read_text()
    assert re.search(r"^\| grpo \|", md, re.M) and re.search(r"^\| cppo \|", md, re.M)
    figs = sorted(p.name for p in (out / "figures").iterdir() if not p.name.startswith("."))
    assert figs == ["comparisons.png", "comparisons.svg",  # the declared comparisons (cppo against grpo)
                    "curves_scale-s_setting-fresh.png", "curves_scale-s_setting-fresh.svg",
                    "position_scale-s_setting-fresh.png", "position_scale-s_setting-fresh.svg"]
    assert all((out / "figures" / f).stat().st_size > 10_000 for f in figs)
    summary = (out / "summary.md").read_text()
    assert "Pipeline wall time" in summary and "4 finished, 4 evaluated" in summary
    assert "## Checkpoint selection" in summary and "optimistically biased" in summary
    assert "## Score of the best checkpoint within [0, T_stop]" in md and "## Score of the final checkpoint" in md

    # the HTML report embeds the figures and the table
    html = tmp_path / "report.html"
    rep = _snakemake("--configfile", str(cfg), "--report", str(html), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-3000:]
    text = html.read_text()
    assert "curves_scale-s_setting-fresh.png" in text and "table.csv" in text

    # nothing left to do: a second invocation plans no job
    again = _snakemake("-n", "--configfile", str(cfg), cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_run_info_final_step_and_mlflow_args(tmp_path):
    script = REPO / "workflow" / "scripts" / "run_info.py"

    def run(*args):
        return subprocess.run([sys.executable, str(script), str(tmp_path), *args], capture_output=True, text=True)

    assert run("--mlflow-args").stdout == ""  # trained with --no-mlflow: no tracking flags
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 7}\n{"step": 8, "x": ')  # torn last line
    (tmp_path / "mlflow_run_id").write_text("abc123\n")
    assert run("--mlflow-args").stdout.split() == ["--mlflow-run-id", "abc123", "--step", "7"]
    (tmp_path / "done").write_text('{"step": 9, "stopped_reason": null}')
    assert json.loads(run().stdout) == {"final_step": 9, "mlflow_run_id": "abc123"}
    (tmp_path / "done").write_text("")  # verl's script touches an empty marker
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("680")
    assert json.loads(run().stdout)["final_step"] == 680


def test_committed_report_does_not_hide_missing_runs(tmp_path):
    """A fresh checkout holds results/tiny/{table,summary,figures} but no runs: the default target
    must still train every run and then re-make the report (not say 'Nothing to be done')."""
    out = tmp_path / "results" / "tiny"
    (out / "figures").mkdir(parents=True)
    for name in ("table.md", "table.csv", "summary.md"):
        (out / name).write_text("committed\n")
    res = _snakemake("-n", "--quiet", "rules", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    counts = _job_counts(res.stdout + res.stderr)
    want = expected_jobs(_load("tiny.yaml"))
    for job in ("train", "evaluate", "train_chunk"):  # the default groups its runs (grid.runs_per_job)
        assert counts.get(job, 0) == want.get(job, 0), job
    assert counts["report"] == 1 and sum(want.get(j, 0) for j in ("train", "train_chunk")) > 1


def test_evaluate_passes_only_the_eval_keys_the_profile_sets(tmp_path):
    """A profile without eval.n/temperature/top_p gets `cppo eval`'s own defaults (one source, evals/defaults.py),
    not pipeline fallbacks of its own (which used to make it greedy in the pipeline and sampled from the CLI)."""
    cfg = _load("tiny.yaml")
    for key in ("n", "temperature", "top_p"):
        cfg["eval"].pop(key)
    cfg["grid"].update(methods=["cppo"], scales=["s"], seeds=[1], settings=["upd8"], runs_per_job=1)
    cfg["grid"].pop("reference", None)
    cfg["report"].pop("comparisons", None)
    path = tmp_path / "noeval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _snakemake("-n", "-p", "--configfile", str(path), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    evals = [line for line in out.splitlines() if " eval " in line and "--benchmarks" in line]
    assert len(evals) == 1, out[-3000:]
    for flag in ("--n ", "--temperature ", "--top-p ", "--backend "):
        assert flag not in evals[0], evals[0]
    assert "--max-tokens 40" in evals[0] and "--limit 128" in evals[0]  # what the profile does set is passed


@pytest.mark.parametrize("profile", ["tiny.yaml", "tiny-long.yaml", "tiny-all.yaml"])
def test_dry_run_with_the_slurm_cpu_profile(tmp_path, profile):
    """workflow/profiles/slurm-cpu plans each CPU grid with no other option: one CPU per job, the measured
    memory of each job kind (tests/test_slurm.py runs it on a real one-node cluster)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install 'cppo-bench[slurm]')")
    res = _snakemake("-n", "--profile", str(REPO / "workflow" / "profiles" / "slurm-cpu"),
                     "--configfile", str(REPO / "config" / profile), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    want = {"base": "1500", "train_chunk": "2000", "train": "1000", "evaluate": "1000"}
    seen = set()
    for rule, resources in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: ([^\n]+)", out, re.M):
        if rule not in want:  # mlflow_init, report: local rules, run on the submitting host
            continue
        res = dict(kv.split("=", 1) for kv in resources.split(", "))
        assert (res["cpus_per_task"], res["slurm_partition"], res["gpu"]) == ("1", "cpu", "0"), (rule, res)
        assert res["mem_mb"] == want[rule], (rule, res)
        seen.add(rule)
    assert "base" in seen and seen & {"train", "train_chunk"}
