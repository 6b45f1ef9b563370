# One RL run per (setting, method, scale, seed): results/<profile>/runs/setting~x/method~m/scale~s/seed~k/


def backend():
    return config.get("backend", "builtin")


def train_inputs(wc):
    inputs = {"mlflow": MLFLOW_MARKER}
    if backend() == "verl":
        inputs["data"] = verl_data_files()
    elif not is_hub(wc.scale):
        inputs["base"] = base_marker(wc.scale)
    return inputs


def train_command(wc):
    """`cppo train` for the builtin trainer; for backend verl, `cppo verl-cmd` writes the run's script
    (verl run, `final` -> last HF weights, `done`) and the job runs it."""
    run_dir = RUN.format(**wc)
    q = shlex.quote
    setting = "" if wc.setting == "default" else f" --setting {wc.setting}"
    common = f"--method {wc.method} --scale {wc.scale} --seed {wc.seed}{setting} --run-dir {q(run_dir)}"
    if backend() == "verl":
        script = f"{run_dir}/verl_run.sh"
        return (f"{CPPO} verl-cmd {q(CONFIG)} {common} --mlflow --format script --out {q(script)} "
                f"&& bash {q(script)}")
    init = "" if is_hub(wc.scale) else f" --init {q(base_dir(wc.scale))}"
    return f"{CPPO} train {q(CONFIG)} {common}{init} --no-progress"


def verl_settings(scale):
    """The run's cluster settings (`verl`, then `scales.<s>.verl`), as `cppo verl-cmd` resolves them."""
    from cppo.integrations.verl_backend import settings_for

    return settings_for(config, scale)


def train_retries():
    """Re-submissions of a failed train job. verl runs resume from their last checkpoint, so a multi-day
    run survives preemption and time limits: `verl.retries` (largest over the grid's scales; Snakemake
    takes one number per rule). The builtin trainer keeps the profile's --retries (None)."""
    if backend() != "verl":
        return None
    return max(verl_settings(s).retries for s in config["grid"]["scales"])


def train_nodes(wc):
    return 1 if backend() == "builtin" else verl_settings(wc.scale).nnodes


def train_gpus(wc):
    if backend() == "builtin":
        return 0
    s = verl_settings(wc.scale)
    return s.nnodes * s.n_gpus_per_node


def train_mpi(wc):
    """snakemake-executor-plugin-slurm: with an `mpi` resource the job step runs our script directly in
    the allocation instead of under `srun -n1` (one task on one node); the script then starts Ray on
    every node itself with srun. A non-empty value also makes the submission ask for `tasks` (one per
    node)."""
    return "srun" if train_nodes(wc) > 1 else ""


rule train:
    """RL training of one run; the trainer resumes from the run folder's last checkpoint and
    writes `done` last, so a retried job (`retries`) continues where the last attempt stopped.
    A changed config (params.digest) restarts the run from scratch."""
    input:
        unpack(train_inputs),
    output:
        RUN + "/done",
    log:
        RUN_LOG.replace("{kind}", "train") + ".log",
    params:
        run_dir=RUN,
        stamp=RUN_LOG.replace("{kind}", "train") + ".digest",
        digest=run_digest,
        cmd=train_command,
    threads: 1
    retries: train_retries()
    resources:
        # SLURM (workflow/profiles/slurm): --nodes, --gpus (all nodes together), one task per node
        nodes=train_nodes,
        gpu=train_gpus,
        tasks=train_nodes,
        tasks_per_gpu=0,  # no --ntasks-per-gpu (the plugin would derive it from `tasks`)
        mpi=train_mpi,
    shell:
        """
        if [ -f {params.stamp:q} ] && [ "$(cat {params.stamp:q})" != "{params.digest}" ]; then
            echo "config changed since the last attempt: restarting {params.run_dir}" >&2
            rm -rf {params.run_dir:q}
        fi
        mkdir -p "$(dirname {params.stamp:q})" && echo {params.digest} > {params.stamp:q}
        export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}
        ( {params.cmd} ) > {log:q} 2>&1
        """


# --- several runs per job: grid.runs_per_job k > 1 (builtin backend) -------------------------------
# The seeds of one (setting, method, scale) are trained k at a time, one after the other, by one
# `cppo train --seed K ... --eval` process, which also scores each finished run as the evaluate rule
# would (the same files, the same MLflow child): the imports are paid once per job, not twice per run.
# A rule's outputs cannot depend on its wildcards' values, so the job's output is a marker naming its
# seeds, and the report waits for the markers. Each run keeps its own restart stamp and digest (the
# train rule's), so a changed config restarts exactly the runs it changes, whatever k is.
CHUNK = RESULTS + "/runs/_chunks/setting~{setting}/method~{method}/scale~{scale}/seeds~{seeds}.done"


def chunk_markers():
    """Every grouped job's marker: each cell's seeds in grid order, RUNS_PER_JOB per job."""
    seeds_of = {}
    for c in CELLS:
        seeds_of.setdefault((c.setting, c.method, c.scale), []).append(c.seed)
    k = RUNS_PER_JOB
    return [CHUNK.format(setting=setting, method=method, scale=scale, seeds="-".join(map(str, seeds[i:i + k])))
            for (setting, method, scale), seeds in seeds_of.items() for i in range(0, len(seeds), k)]


def chunk_runs(wc):
    """The runs of one grouped job, as the train rule's wildcards."""
    from types import SimpleNamespace

    return [SimpleNamespace(setting=wc.setting, method=wc.method, scale=wc.scale, seed=seed)
            for seed in wc.seeds.split("-")]


def chunk_restart(wc):
    """Shell lines: the train rule's digest check for each run of the job (a changed config deletes the run)."""
    q = shlex.quote
    lines = []
    for r in chunk_runs(wc):
        run_dir, stamp = RUN.format(**vars(r)), RUN_LOG.replace("{kind}", "train").format(**vars(r)) + ".digest"
        d = run_digest(r)
        lines.append(f'if [ -f {q(stamp)} ] && [ "$(cat {q(stamp)})" != "{d}" ]; then '
                     f'echo "config changed since the last attempt: restarting {run_dir}" >&2; rm -rf {q(run_dir)}; fi; '
                     f'mkdir -p "$(dirname {q(stamp)})" && echo {d} > {q(stamp)}')
    return "\n".join(lines)


def chunk_command(wc):
    q = shlex.quote
    setting = "" if wc.setting == "default" else f" --setting {wc.setting}"
    template = RUN.format(setting=wc.setting, method=wc.method, scale=wc.scale, seed="{seed}")
    init = "" if is_hub(wc.scale) else f" --init {q(base_dir(wc.scale))}"
    evaluate = " --eval" if benchmarks() else ""  # no benchmarks: no evaluate jobs at k = 1 either
    return (f"{CPPO} train {q(CONFIG)} --method {wc.method} --scale {wc.scale} --seed {' '.join(wc.seeds.split('-'))}"
            f"{setting} --run-dir {q(template)}{init}{evaluate} --no-progress")


rule train_chunk:
    """Train, then evaluate, the runs of one (setting, method, scale) and a few seeds in one process;
    each run resumes or is skipped on its own `done` marker, so a retried job redoes only what is missing."""
    input:
        unpack(train_inputs),
    output:
        CHUNK,
    log:
        RESULTS + "/runs/_logs/chunk/setting~{setting}/method~{method}/scale~{scale}/seeds~{seeds}.log",
    params:
        restart=chunk_restart,
        # the runs' digests and the evaluation settings: either change re-runs the job
        digest=lambda wc: digest([run_digest(r) for r in chunk_runs(wc)], config.get("eval")),
        cmd=chunk_command,
        runs=lambda wc: " ".join(shlex.quote(RUN.format(**vars(r))) for r in chunk_runs(wc)),
    threads: 1
    resources:
        gpu=0,
    shell:
        """
        {params.restart}
        export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}
        ( {params.cmd} ) > {log:q} 2>&1
        printf '%s\\n' {params.runs} > {output:q}
        """
