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


rule train:
    """RL training of one run; the trainer resumes from the run folder's last checkpoint and
    writes `done` last. A changed config (params.digest) restarts the run from scratch."""
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
    resources:
        gpu=lambda wc: 0 if backend() == "builtin" else 1,
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
