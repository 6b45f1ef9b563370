# Evaluation of each run on eval.benchmarks, logged into the run's MLflow child. One `cppo eval --run`
# process per run (the evaluation harness is loaded once) scores every checkpoint the run kept for it:
# with `eval.every`, <run>/steps/step_<n> (step 0 included; for a hub model without a kept step 0, the
# hub model itself), and always <run>/final. Per step: <run>/eval/steps/step_<n>.json and MLflow
# eval/<benchmark>/<metric> at step n; the final's result is then split into <run>/eval/<benchmark>.json.
# With grid.runs_per_job > 1 this rule is not used: the train_chunk jobs (train.smk) do the same in the
# process that trained the runs (`cppo train --eval`).


# Profile key -> `cppo eval` flag. Only the keys the profile sets are passed: a key it leaves out
# gets `cppo eval`'s own default (evals/defaults.py), the same as from the command line.
EVAL_FLAGS = {"n": "--n", "temperature": "--temperature", "top_p": "--top-p", "backend": "--backend",
              "max_tokens": "--max-tokens", "limit": "--limit", "batch_size": "--batch-size", "seed": "--seed",
              "template": "--template", "device": "--device", "dtype": "--dtype"}


def eval_base(wc):
    """Step 0 of a hub-model run (verl keeps no checkpoint of step 0): the hub model itself."""
    every = (config.get("eval") or {}).get("every")
    return f"--base {shlex.quote(str(config['scales'][wc.scale]['hub']))}" if every and is_hub(wc.scale) else ""


def eval_args():
    e = config.get("eval") or {}
    return " ".join(f"{flag} {e[key]}" for key, flag in EVAL_FLAGS.items() if e.get(key) is not None)


rule evaluate:
    """`cppo eval --run` of every kept checkpoint and <run>/final on every benchmark ->
    <run>/eval/steps/step_<n>.json, <run>/eval/<benchmark>.json (final), MLflow eval/<benchmark>/<metric>."""
    input:
        done=RUN + "/done",
    output:
        [RUN + f"/eval/{b}.json" for b in benchmarks()],
    log:
        RUN_LOG.replace("{kind}", "eval") + ".log",
    params:
        run_dir=RUN,
        combined=RUN + "/eval/_all.json",
        benchmarks=",".join(benchmarks()),
        args=eval_args(),
        base=eval_base,
        digest=lambda wc: digest(config.get("eval")),
    threads: 1
    resources:
        gpu=lambda wc: 0 if config.get("backend", "builtin") == "builtin" else 1,
    shell:
        """
        export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}
        (
          TRACK=$({PYTHON} {SCRIPTS}/run_info.py {params.run_dir:q} --mlflow-id-args)
          {CPPO} eval --run {params.run_dir:q} {params.base} --benchmarks {params.benchmarks} {params.args} \
              --config {CONFIG:q} --out {params.combined:q} --no-progress $TRACK
          {PYTHON} {SCRIPTS}/split_eval.py {params.combined:q} {params.run_dir:q}/eval
        ) > {log:q} 2>&1
        """
