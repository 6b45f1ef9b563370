# Shared set-up: the effective config, its validation, the grid, paths and the `cppo` command.

import copy
import hashlib
import json
import shlex
import sys
import time

import yaml
from snakemake.exceptions import WorkflowError

from cppo.config import config_from_dict as _typed_config  # noqa: E402
from cppo.report.grid import cells as _grid_cells  # noqa: E402
from cppo.schema import ConfigError, check_config  # noqa: E402  (the check every `cppo` command runs too)


# --- the effective config ------------------------------------------------------------------------
# Snakemake merges a command-line --configfile *into* the Snakefile's default; for profiles that is
# wrong (paper.yaml would inherit tiny's scales and methods), so a command-line file replaces it.
_cli_files = [str(p) for p in workflow.overwrite_configfiles]
if _cli_files:
    config.clear()
    config.update(copy.deepcopy(dict(workflow.config_settings.overwrite_config)))

# `--config 'set=KEY=VALUE'` (or a YAML list of them): the `cppo --set` overrides, same syntax, for
# nested keys that Snakemake's own --config cannot type (it passes `grid={seeds: [1]}` as strings).
#   snakemake --cores 2 --config "set=grid.seeds=[$(seq -s, 101 120)]"
_sets = config.pop("set", None)
try:
    if _sets:
        from cppo.config import apply_overrides

        _sets = [_sets] if isinstance(_sets, str) else [str(x) for x in _sets]
        _new = apply_overrides(dict(config), _sets)
        config.clear()
        config.update(_new)
    check_config(config)  # cppo/config.schema.yaml, the schema every `cppo` command reads
    if config.get("results_dir", "results") != "results":  # the rules' paths are results/<profile>/...
        raise ConfigError(f"config key results_dir: the pipeline writes under results/, got {config['results_dir']!r}")
    CELLS = _grid_cells(config)
    # seeds trained (and evaluated) per job; > 1 needs the builtin backend (checked there)
    RUNS_PER_JOB = _typed_config(copy.deepcopy(dict(config))).grid.runs_per_job
except (ConfigError, ValueError) as err:
    raise WorkflowError(f"invalid config: {err}")

PROFILE = config["profile"]
RESULTS = f"results/{PROFILE}"


def _snapshot_config():
    """The file every `cppo` command reads: a snapshot of the effective config in the run folder
    (results/<profile>/runs/_config.yaml), rewritten only when its content changes.

    Why a snapshot: jobs read their config when they start, minutes after Snakemake planned them;
    an edit of config/<profile>.yaml in between would mix two regimes in one grid. The snapshot is
    what the plan (and each job's rerun digest) was made from; the next invocation re-plans.
    """
    path = os.path.abspath(f"{RESULTS}/runs/_config.yaml")
    text = yaml.safe_dump(dict(config), sort_keys=False)
    if not os.path.exists(path) or open(path).read() != text:  # keep the mtime when unchanged
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return path


CONFIG = _snapshot_config()

# --- environment every job inherits ----------------------------------------------------------------
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + os.path.abspath("results/mlflow.db"))
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not any(isinstance(s, dict) and "hub" in s for s in config["scales"].values()):
    # Every model of this profile is built locally: never touch the network.
    for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(_var, "1")

_exe_dir = os.path.dirname(sys.executable)
CPPO = shlex.quote(os.path.join(_exe_dir, "cppo")) if os.path.exists(os.path.join(_exe_dir, "cppo")) \
    else f"{shlex.quote(sys.executable)} -m cppo.cli"
PYTHON = shlex.quote(sys.executable)
SCRIPTS = os.path.join(workflow.basedir, "workflow", "scripts")

wildcard_constraints:
    setting=r"[^/~]+",
    method=r"[^/~]+",
    scale=r"[^/~]+",
    seed=r"\d+",
    seeds=r"\d+(-\d+)*",
    benchmark=r"[^/~]+",


# --- paths -----------------------------------------------------------------------------------------
RUN = RESULTS + "/runs/setting~{setting}/method~{method}/scale~{scale}/seed~{seed}"
RUN_LOG = RESULTS + "/runs/_logs/{kind}/setting~{setting}/method~{method}/scale~{scale}/seed~{seed}"
MLFLOW_MARKER = RESULTS + "/runs/_mlflow_parents.json"


def is_hub(scale):
    """A scale given by a hub name (paper profile) has no locally trained base checkpoint."""
    return "hub" in (config["scales"][scale] or {})


def base_dir(scale):
    return f"{RESULTS}/base/scale~{scale}"


def base_marker(scale):
    return f"{base_dir(scale)}/sft_metrics.json"


def run_path(c):
    return RUN.format(setting=c.setting, method=c.method, scale=c.scale, seed=c.seed)


def digest(*parts):
    """A short hash of the config sections a job depends on (a `params:` rerun trigger)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_digest(wc):
    return digest(config.get("backend"), config.get("task"), config["scales"][wc.scale], config.get("sft"),
                  config.get("rl"), (config.get("settings") or {}).get(wc.setting),
                  config["methods"][wc.method], int(wc.seed), (config.get("eval") or {}).get("every"))


def benchmarks():
    return [str(b) for b in (config.get("eval") or {}).get("benchmarks") or []]


def report_outputs():
    return [f"{RESULTS}/table.md", f"{RESULTS}/table.csv", f"{RESULTS}/summary.md",
            f"{RESULTS}/figures"]
