# MLflow set-up and base checkpoints (SFT warm start), once per profile / per scale.


rule mlflow_init:
    """Create the profile's experiment and every parent run before any job writes to the store."""
    output:
        MLFLOW_MARKER,
    log:
        RESULTS + "/runs/_logs/mlflow_init.log",
    threads: 1
    localrule: True
    shell:
        "{CPPO} mlflow-init {CONFIG:q} --out {output:q} > {log:q} 2>&1"


rule base:
    """Warm-start a model of one scale on worked solutions: results/<profile>/base/scale~<s>/."""
    output:
        base_marker("{scale}"),
    log:
        RESULTS + "/base/_logs/scale~{scale}.log",
    params:
        out=lambda wc: base_dir(wc.scale),
        digest=lambda wc: digest(config.get("task"), config["scales"][wc.scale], config.get("sft")),
    threads: 1
    resources:
        gpu=0,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "{CPPO} sft {CONFIG:q} --scale {wildcards.scale} --out {params.out:q} > {log:q} 2>&1"


def verl_data_dir():
    return (config.get("verl") or {}).get("data_dir") or f"{RESULTS}/data"


def verl_data_files():
    """The parquet files a verl run reads: the training set and one per validation benchmark."""
    v = config.get("verl") or {}
    val = v.get("val_sources") if v.get("val_sources") is not None else benchmarks()
    return [f"{verl_data_dir()}/{s}.parquet" for s in [v.get("train_source", "dapo-math-17k"), *val]]


rule prepare_data:
    """verl parquet of one source (DAPO-Math-17k from the hub, or <data_dir>/<name>.jsonl)."""
    output:
        verl_data_dir() + "/{source}.parquet",
    log:
        verl_data_dir() + "/_logs/{source}.log",
    params:
        out=verl_data_dir(),
    threads: 1
    localrule: True
    shell:
        "{CPPO} prepare-data --source {wildcards.source} --out {params.out:q} > {log:q} 2>&1"
