# One RL run per (setting, method, scale, seed): results/<profile>/runs/setting~x/method~m/scale~s/seed~k/


def train_inputs(wc):
    inputs = {"mlflow": MLFLOW_MARKER}
    if not is_hub(wc.scale) and config.get("backend", "builtin") == "builtin":
        inputs["base"] = base_marker(wc.scale)
    return inputs


def train_command(wc):
    """`cppo train` for the builtin trainer, `cppo verl-cmd` for backend: verl."""
    run_dir = shlex.quote(RUN.format(**wc))
    common = f"--method {wc.method} --scale {wc.scale} --seed {wc.seed} --run-dir {run_dir}"
    if config.get("backend", "builtin") == "verl":
        return f"{CPPO} verl-cmd {shlex.quote(CONFIG)} {common}"
    init = "" if is_hub(wc.scale) else f" --init {shlex.quote(base_dir(wc.scale))}"
    return f"{CPPO} train {shlex.quote(CONFIG)} {common} --setting {wc.setting}{init}"


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
        gpu=lambda wc: 0 if config.get("backend", "builtin") == "builtin" else 1,
    shell:
        """
        if [ -f {params.stamp:q} ] && [ "$(cat {params.stamp:q})" != "{params.digest}" ]; then
            echo "config changed since the last attempt: restarting {params.run_dir}" >&2
            rm -rf {params.run_dir:q}
        fi
        mkdir -p "$(dirname {params.stamp:q})" && echo {params.digest} > {params.stamp:q}
        export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}
        {params.cmd} > {log:q} 2>&1
        # The builtin trainer writes `done` itself; an external backend only returns 0.
        [ -f {output:q} ] || date -u +%FT%TZ > {output:q}
        """
