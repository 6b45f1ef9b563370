# cppo-bench pipeline: profile config -> base models -> RL runs -> evaluations -> report.
#
#   .venv/bin/snakemake --cores 2                                   # the tiny profile (CPU, no network)
#   .venv/bin/snakemake --configfile config/tiny-all.yaml --cores 2 # every method + CPPO ablations
#   .venv/bin/snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml
#   .venv/bin/snakemake --report results/tiny/report.html           # HTML report with the figures
#
# Every job calls the `cppo` CLI; see workflow/rules/*.smk. The config is validated against
# cppo/config.schema.yaml before anything runs.

from snakemake.utils import min_version

min_version("9.0")

# The embedded default. A --configfile on the command line *replaces* it (see common.smk), so
# config/paper.yaml never inherits tiny's scales or methods.
configfile: os.path.join(workflow.basedir, "config", "tiny.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Every run's outputs are targets too, not only the report's: results/<profile>/ (table, figures,
# summary) is committed, so in a fresh checkout the report exists while the runs do not; asking for
# the runs makes Snakemake train them and then re-make the report from them (its inputs are newer).
rule all:
    input:
        report_inputs(None),
        report_outputs(),
    default_target: True
