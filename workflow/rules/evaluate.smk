# Evaluation of each run's final checkpoint on eval.benchmarks, logged into the run's MLflow child.
# One `cppo eval` process per run covers every benchmark (the model is loaded once); its result is
# then split into <run>/eval/<benchmark>.json.


# Profile key -> `cppo eval` flag. Only the keys the profile sets are passed: a key it leaves out
# gets `cppo eval`'s own default (evals/defaults.py), the same as from the command line.
EVAL_FLAGS = {"n": "--n", "temperature": "--temperature", "top_p": "--top-p", "backend": "--backend",
              "max_tokens": "--max-tokens", "limit": "--limit", "batch_size": "--batch-size", "seed": "--seed",
              "template": "--template", "device": "--device", "dtype": "--dtype"}


def eval_args():
    e = config.get("eval") or {}
    return " ".join(f"{flag} {e[key]}" for key, flag in EVAL_FLAGS.items() if e.get(key) is not None)


rule evaluate:
    """`cppo eval` of <run>/final on every benchmark -> <run>/eval/<benchmark>.json, and the metrics
    into MLflow as eval/<benchmark>/<metric> at the final checkpoint's step."""
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
        digest=lambda wc: digest(config.get("eval")),
    threads: 1
    resources:
        gpu=lambda wc: 0 if config.get("backend", "builtin") == "builtin" else 1,
    shell:
        """
        export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}
        (
          TRACK=$({PYTHON} {SCRIPTS}/run_info.py {params.run_dir:q} --mlflow-args)
          {CPPO} eval {params.run_dir:q}/final --benchmarks {params.benchmarks} {params.args} \
              --config {CONFIG:q} --out {params.combined:q} $TRACK
          {PYTHON} {SCRIPTS}/split_eval.py {params.combined:q} {params.run_dir:q}/eval
        ) > {log:q} 2>&1
        """
