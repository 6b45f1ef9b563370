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
