# The profile's report: table (paper layout), stability curves, position profiles, summary.


def report_inputs(wildcards):
    if RUNS_PER_JOB > 1:  # grouped runs: each job's marker stands for its runs' done and eval files
        return chunk_markers()
    runs = [run_path(c) for c in CELLS]
    return [f"{r}/done" for r in runs] + [f"{r}/eval/{b}.json" for r in runs for b in benchmarks()]


rule report:
    """`cppo report`: reads MLflow (run folders as fallback) and writes results/<profile>/."""
    input:
        report_inputs,
    output:
        table_md=RESULTS + "/table.md",
        table_csv=report(RESULTS + "/table.csv", caption="../report/table.rst", category="1. Table"),
        summary=RESULTS + "/summary.md",
        figures=report(
            directory(RESULTS + "/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="2. Figures",
        ),
    log:
        RESULTS + "/runs/_logs/report.log",
    threads: 1
    localrule: True
    shell:
        "{CPPO} report {CONFIG:q} --out {RESULTS:q} > {log:q} 2>&1"
