"""Per-run cost of the pipeline, side by side: one process per run and stage (grid.runs_per_job 1) against
several runs per process, each evaluated in the process that trained it (runs_per_job k).

    python benchmarks/pipeline_cost.py [CONFIG] --base results/tiny/base/scale~s --out /tmp/cost \
        [--setting upd8] [--methods pg_is cppo] [--seeds 1 2 3 4] [--runs-per-job K] [--steps N] \
        [--set eval.every=null ...] [--no-mlflow] [--no-progress]

The old way runs, for each run, the commands of the pipeline's train and evaluate jobs: `cppo train`,
then `run_info.py`, `cppo eval --run` and `split_eval.py`. The new way runs, for each method and each k
seeds, the grouped job's command: `cppo train --seed K ... --eval`. Both use the same config snapshot
(CONFIG plus --set), base checkpoint, thread settings (one thread) and a MLflow store of their own.
The two ways alternate group by group (old first, then new first, ...), so that the machine's load
falls on both alike. Afterwards every run's metrics.jsonl must be byte-identical between the ways,
and its evaluation files equal (paths, MLflow ids and provenance aside); the exit status is 1 if not.

Per run: old train = the `cppo train` process; old eval = the three evaluation processes; new = the
grouped process's own timing of each run's training and evaluation, and its start-up (imports) and
exit spread evenly over its runs as training time, so that the new totals add up to its wall time.
Wall times on a shared machine move with its load; the CPU time (user + sys) of the processes, printed
below the table, moves much less. With one group per way the two ways cannot alternate: give several
groups (--runs-per-job) so that the order alternates old-new, new-old, ...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
# the grouped process's line after each run (cppo/train/train_cli.py)
RUN_LINE = re.compile(r"^cppo train: (.+?): .*; ([\d.]+) s training, ([\d.]+) s evaluation$", re.M)


def cppo() -> list[str]:
    exe = Path(sys.executable).parent / "cppo"  # the console script, as the pipeline calls it
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cppo.cli"]


# CPU seconds (user + sys) of every finished child process so far: less sensitive than wall time to
# what else the machine runs, which on a shared machine can swamp a difference of a few seconds
CPU: list[float] = []


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], env: dict, log: Path) -> float:
    """Run one command; its wall time (its CPU time goes to CPU). Output goes to `log`; a failure stops
    the measurement."""
    t0, c0 = time.perf_counter(), children_cpu()
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    CPU.append(children_cpu() - c0)
    if rc != 0:
        raise SystemExit(f"pipeline_cost: `{shlex.join(cmd[:4])} ...` failed (exit {rc}); see {log}")
    return wall


def env_for(root: Path, mlflow: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MLFLOW_ENABLE_ASYNC_LOGGING": "false"}
    if mlflow:
        env["MLFLOW_TRACKING_URI"] = "sqlite:///" + str((root / "mlflow.db").resolve())
    return env


def eval_files(run_dir: Path) -> dict:
    """A run's evaluation files, comparable across run folders: paths relative to the run, no MLflow ids
    (each child has its own) and no provenance (it names the process that scored them)."""
    out = {}
    for p in sorted((run_dir / "eval").rglob("*.json")):
        rec = json.loads(p.read_text().replace(str(run_dir), "<run>"))
        for key in ("mlflow", "provenance"):
            rec.pop(key, None)
        out[str(p.relative_to(run_dir))] = rec
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default=str(REPO / "config" / "tiny.yaml"))
    p.add_argument("--base", required=True, help="the scale's SFT base checkpoint (cppo sft)")
    p.add_argument("--out", required=True, type=Path, help="folder for both ways' runs (must not exist)")
    p.add_argument("--setting", default="upd8")
    p.add_argument("--scale", default="s")
    p.add_argument("--methods", nargs="+", default=["pg_is", "cppo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--runs-per-job", type=int, default=None, help="seeds per grouped process (default: all)")
    p.add_argument("--steps", type=int, default=None, help="rollout steps (default: the profile's rl.steps)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="profile override, repeatable")
    p.add_argument("--no-mlflow", action="store_true", help="neither way logs to MLflow")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()

    from cppo.config import ConfigError, load_config, resolve_run

    try:
        cfg = load_config(a.config, a.set)
        for m in a.methods:
            resolve_run(cfg, m, a.scale, a.seeds[0], a.setting, steps=a.steps)
        if not (Path(a.base) / "config.json").is_file():
            raise ConfigError(f"--base {a.base}: not a checkpoint (no config.json); make one with `cppo sft`")
        if a.out.exists():
            raise ConfigError(f"--out {a.out} exists; give a fresh folder")
        if not (cfg.raw.get("eval") or {}).get("benchmarks"):
            raise ConfigError("the profile sets no eval.benchmarks: there is no evaluation to compare")
        if len(set(a.seeds)) != len(a.seeds) or (a.runs_per_job is not None and a.runs_per_job < 1):
            raise ConfigError("--seeds must differ and --runs-per-job be >= 1")
    except ConfigError as e:
        print(f"pipeline_cost: error: {e}", file=sys.stderr)
        return 2
    import yaml
    from tqdm import tqdm

    a.out.mkdir(parents=True)
    config = a.out / "_config.yaml"  # one snapshot for both ways, as the pipeline's runs/_config.yaml
    config.write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    ways = {w: a.out / w for w in ("old", "new")}
    envs = {w: env_for(root, not a.no_mlflow) for w, root in ways.items()}
    for w, root in ways.items():
        root.mkdir()
        if not a.no_mlflow:  # the pipeline's first job; not timed
            run([*cppo(), "mlflow-init", str(config), "--out", str(root / "_mlflow_parents.json")], envs[w],
                root / "log.txt")
    common = ["--scale", a.scale, "--setting", a.setting, "--init", str(a.base), "--no-progress"]
    common += ["--steps", str(a.steps)] if a.steps is not None else []
    common += ["--no-mlflow"] if a.no_mlflow else []
    benches = ",".join((cfg.raw.get("eval") or {})["benchmarks"])

    def folder(w, m, k):
        return ways[w] / f"method~{m}" / f"seed~{k}"

    cpu: dict[str, dict] = {"old": {}, "new": {}}  # CPU seconds per run

    def old_way(m, seeds):
        times = {}
        for k in seeds:
            d, env, log = folder("old", m, k), envs["old"], ways["old"] / "log.txt"
            c0 = children_cpu()
            train = run([*cppo(), "train", str(config), "--method", m, "--seed", str(k), "--run-dir", str(d), *common],
                        env, log)
            t0 = time.perf_counter()
            track = subprocess.run([sys.executable, str(SCRIPTS / "run_info.py"), str(d), "--mlflow-id-args"], env=env,
                                   capture_output=True, text=True, check=True).stdout.split()
            run([*cppo(), "eval", "--run", str(d), "--benchmarks", benches, "--config", str(config),
                 "--out", str(d / "eval" / "_all.json"), "--no-progress", *track], env, log)
            run([sys.executable, str(SCRIPTS / "split_eval.py"), str(d / "eval" / "_all.json"), str(d / "eval")], env, log)
            times[(m, k)] = (train, time.perf_counter() - t0)
            cpu["old"][(m, k)] = children_cpu() - c0  # the run_info.py process included
        return times

    def new_way(m, seeds):
        log = ways["new"] / "log.txt"
        start = log.stat().st_size if log.exists() else 0
        template = str(ways["new"] / f"method~{m}" / "seed~{seed}")
        wall = run([*cppo(), "train", str(config), "--method", m, "--seed", *map(str, seeds), "--run-dir", template,
                    "--eval", *common], envs["new"], log)
        lines = {Path(d).name: (float(t), float(e)) for d, t, e in RUN_LINE.findall(log.read_text()[start:])}
        inner = [lines[f"seed~{k}"] for k in seeds]
        share = (wall - sum(t + e for t, e in inner)) / len(seeds)  # start-up, imports, exit
        for k in seeds:  # the process's CPU time, shared evenly
            cpu["new"][(m, k)] = CPU[-1] / len(seeds)
        return {(m, k): (t + share, e) for k, (t, e) in zip(seeds, inner)}

    k = a.runs_per_job or len(a.seeds)
    groups = [(m, a.seeds[i:i + k]) for m in a.methods for i in range(0, len(a.seeds), k)]
    times: dict[str, dict] = {"old": {}, "new": {}}
    for i, (m, seeds) in enumerate(tqdm(groups, desc="groups (old and new way)", disable=a.no_progress)):
        order = (("old", old_way), ("new", new_way)) if i % 2 == 0 else (("new", new_way), ("old", old_way))
        for w, fn in order:
            times[w].update(fn(m, seeds))

    runs = [(m, s) for m, seeds in groups for s in seeds]
    same_metrics = [(folder("old", m, s) / "metrics.jsonl").read_bytes() == (folder("new", m, s) / "metrics.jsonl").read_bytes()
                    for m, s in runs]
    same_eval = [eval_files(folder("old", m, s)) == eval_files(folder("new", m, s)) for m, s in runs]

    steps = a.steps if a.steps is not None else resolve_run(cfg, a.methods[0], a.scale, a.seeds[0], a.setting).rl.steps
    print(f"\n{len(runs)} runs ({a.setting}, {', '.join(a.methods)}, seeds {' '.join(map(str, a.seeds))}, scale {a.scale}, "
          f"{steps} steps, eval.every {cfg.eval.every}); new way: {k} runs per process; "
          f"MLflow {'off' if a.no_mlflow else 'on'}; sets: {' '.join(a.set) or 'none'}\n")
    print("| run | old train s | old eval s | old total s | new train s | new eval s | new total s | saving s |")
    print("|---|---|---|---|---|---|---|---|")
    for m, s in runs:
        (ot, oe), (nt, ne) = times["old"][(m, s)], times["new"][(m, s)]
        print(f"| {m} seed {s} | {ot:.1f} | {oe:.1f} | {ot + oe:.1f} | {nt:.1f} | {ne:.1f} | {nt + ne:.1f} | "
              f"{ot + oe - nt - ne:.1f} |")
    mean = {w: [sum(times[w][r][j] for r in runs) / len(runs) for j in (0, 1)] for w in times}
    (ot, oe), (nt, ne) = mean["old"], mean["new"]
    saving = ot + oe - nt - ne
    print(f"| **mean per run** | {ot:.1f} | {oe:.1f} | {ot + oe:.1f} | {nt:.1f} | {ne:.1f} | {nt + ne:.1f} | "
          f"{saving:.1f} ({100 * saving / (ot + oe):.0f}%) |")
    cpu_mean = {w: sum(cpu[w].values()) / len(runs) for w in cpu}
    print(f"\nCPU time per run (user + sys of the processes; the new way's shared evenly over its runs): "
          f"old {cpu_mean['old']:.1f} s, new {cpu_mean['new']:.1f} s, saving {cpu_mean['old'] - cpu_mean['new']:.1f} s "
          f"({100 * (cpu_mean['old'] - cpu_mean['new']) / cpu_mean['old']:.0f}%)")
    print(f"\nmetrics.jsonl byte-identical between the ways: {sum(same_metrics)}/{len(runs)}; "
          f"evaluation files equal: {sum(same_eval)}/{len(runs)}")
    return 0 if all(same_metrics) and all(same_eval) else 1


if __name__ == "__main__":
    raise SystemExit(main())
