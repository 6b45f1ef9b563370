# Evaluation of each run's final checkpoint on eval.benchmarks, logged into the run's MLflow child.


def eval_args():
    e = config.get("eval") or {}
    args = [f"--n {e.get('n', 1)}", f"--temperature {e.get('temperature', 0.0)}",
            f"--top-p {e.get('top_p', 1.0)}", f"--max-tokens {e.get('max_tokens', 32)}",
            f"--backend {e.get('backend', 'hf')}"]
    if e.get("limit"):
        args.append(f"--limit {int(e['limit'])}")
    return " ".join(args)


rule evaluate:
    """`cppo eval` of <run>/final on one benchmark -> <run>/eval/<benchmark>.json, and the metrics
    into MLflow as eval/<benchmark>/<metric> at the final checkpoint's step."""
    input:
        done=RUN + "/done",
    output:
        RUN + "/eval/{benchmark}.json",
    log:
        RUN_LOG.replace("{kind}", "eval") + "/{benchmark}.log",
    params:
        run_dir=RUN,
        args=eval_args(),
        digest=lambda wc: digest(config.get("eval")),
    threads: 1
    resources:
        gpu=lambda wc: 0 if config.get("backend", "builtin") == "builtin" else 1,
    shell:
        """
        export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}
        TRACK=$({PYTHON} {SCRIPTS}/run_info.py {params.run_dir:q} --mlflow-args)
        {CPPO} eval {params.run_dir:q}/final --benchmarks {wildcards.benchmark} {params.args} \
            --config {CONFIG:q} --out {output:q} $TRACK > {log:q} 2>&1
        """
