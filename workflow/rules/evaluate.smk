# Evaluation of each run's final checkpoint on eval.benchmarks, logged into the run's MLflow child.
# One `cppo eval` process per run covers every benchmark (the model is loaded once); its result is
# then split into <run>/eval/<benchmark>.json.


def eval_args():
    e = config.get("eval") or {}
    args = [f"--n {e.get('n', 1)}", f"--temperature {e.get('temperature', 0.0)}",
            f"--top-p {e.get('top_p', 1.0)}", f"--backend {e.get('backend', 'hf')}"]
    for key, flag in (("max_tokens", "--max-tokens"), ("limit", "--limit"), ("batch_size", "--batch-size"),
                      ("seed", "--seed"), ("template", "--template"), ("device", "--device"), ("dtype", "--dtype")):
        if e.get(key) is not None:
            args.append(f"{flag} {e[key]}")
    return " ".join(args)


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
