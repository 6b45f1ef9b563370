"""`cppo report CONFIG [--out results/<profile>]`: table, curves, position profiles and summary.

Reads the profile's MLflow experiment (run folders as fallback), then writes into the output
folder: `comparisons.csv` and the verdicts of the declared comparisons (`report.comparisons`: the
difference, its interval, permutation p, Holm p, detectable difference, split halves; in
`table.md` and at the head of `summary.md`), `table.md` and `table.csv` (paper layout, mean ± 95% bootstrap CI over seeds, IQM,
collapsed seeds; with `eval.every`, both the best checkpoint within [0, T_stop] and the final one;
published numbers beside ours of the same kind when `report.published` is set), `figures/`
(stability curves and per-position profiles, PNG + SVG), `summary.md`, and `config.yaml` (the
config the report was made from).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="profile YAML (e.g. config/tiny.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default results/<profile>)")
    parser.add_argument("--results-root", default=None,
                        help="root of <profile>/runs and of the MLflow store (default the profile's results_dir)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted, value parsed as YAML); repeatable")
    parser.add_argument("--no-mlflow", action="store_true", help="read the run folders only")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default report.bootstrap)")
    parser.add_argument("--retest", action="store_true",
                        help="re-run the claims' tests from the per-seed values in the output folder (claims.csv, "
                             "else stability.csv) and rewrite the claims tables of its summary.md; needs no runs")
    parser.add_argument("--force", action="store_true",
                        help="write the report even when no run is found (empty tables over the committed ones)")


DEFAULT_CURVES = {
    "reward (rollout mean)": "rollout/reward_mean",
    "test accuracy, greedy ({split})": "eval/{split}/greedy_acc",
    "entropy of π": "rule/entropy",
    "masked fraction": "rule/masked_frac",
    "mean divergence D_t": "rule/div_mean",
    "gradient norm (pre-clip)": "train/grad_norm",
}


def report_settings(cfg: dict) -> dict:
    """Resolved `report:` options with defaults derived from the task."""
    rep = dict(cfg.get("report") or {})
    task = cfg.get("task") or {}
    rl = cfg.get("rl") or {}
    if task.get("name", "chain") == "chain":
        split = (rl.get("eval_splits") or ["chain_id"])[0]
    else:
        split = (task.get("test_files") or ["math500"])[0]
    curves = rep.get("curves") or {k.format(split=split): v.format(split=split) for k, v in DEFAULT_CURVES.items()}
    return {
        "curves": curves,
        "collapse_metric": rep.get("collapse_metric") or f"eval/{split}/greedy_acc",
        "collapse_frac": float(rep.get("collapse_frac", 0.5)),
        "bootstrap": int(rep.get("bootstrap", 10_000)),
        "published": rep.get("published"),
        "published_model": rep.get("published_model") or {},
    }


def main(args) -> int:
    import json
    import shutil
    import sys
    import time
    from pathlib import Path

    import yaml

    from cppo import tracking
    from cppo.report import plots
    from cppo.report.collect import collect, headline_metric
    from cppo.report import verdicts
    from cppo.report.grid import cells as grid_cells, declared, load_config, reference as grid_reference, settings_of
    from cppo.report.host import host_provenance
    from cppo.report.summary import write_summary
    from cppo.report.tables import (CHECKPOINTS, attach_published, cell_stats, horizon, load_published, markdown,
                                    stability_markdown, stability_stats, write_csv)

    try:
        cfg = load_config(args.config, args.sets)
        cells = grid_cells(cfg)
        reference = grid_reference(cfg)
        decl = declared(cfg)
    except ValueError as err:
        print(f"cppo report: {err}", file=sys.stderr)
        return 2
    profile = cfg["profile"]
    args.results_root = args.results_root or cfg.get("results_dir") or "results"
    tracking.use_results_dir(args.results_root)
    if args.retest:
        return _retest(cfg, Path(args.out or f"{args.results_root}/{profile}"))
    # before writing: the committed outputs being replaced are not "changes"
    prov = {**tracking.provenance(), **host_provenance()}
    out = Path(args.out or f"{args.results_root}/{profile}")
    rs = report_settings(cfg)
    if args.bootstrap:
        rs["bootstrap"] = args.bootstrap
    metric = headline_metric(cfg)
    benchmarks = [str(b) for b in (cfg.get("eval") or {}).get("benchmarks") or []]
    methods = [str(m) for m in cfg["grid"]["methods"]]
    scales = [str(s) for s in cfg["grid"]["scales"]]
    settings = settings_of(cfg)

    keys = set(rs["curves"].values()) | {rs["collapse_metric"], "rule/masked_frac", "rule/div_mean",
                                          "rule/ratio_max", "train/grad_norm", "rule/prefix_reject_frac",
                                          "rule/token_reject_frac"}
    with_best = bool((cfg.get("eval") or {}).get("every"))  # checkpoints evaluated in [0, T_stop]
    if with_best:
        keys |= {f"eval/{b}/{metric}" for b in benchmarks}
    records = collect(cfg, cells, keys, root=args.results_root, use_mlflow=not args.no_mlflow)
    src = {s: sum(r.source == s for r in records) for s in ("mlflow", "files", "missing")}
    print(f"cppo report: {len(records)} runs ({src['mlflow']} from MLflow, {src['files']} from run folders, "
          f"{src['missing']} missing)")
    # A fresh clone has no runs but a committed results/<profile>/: re-making the report from nothing
    # would replace the published tables with empty ones, so that takes an explicit --force.
    if src["missing"] == len(records) and not args.force:
        print(f"cppo report: no runs of profile {profile!r} found (MLflow or {args.results_root}/{profile}/runs); "
              f"nothing written to {out} (--force writes empty tables)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)

    horizons = {(st, sc): horizon(cfg, st, sc) for st in settings for sc in scales}
    stats = cell_stats(records, benchmarks, metric, rs["collapse_metric"], rs["collapse_frac"],
                       n_boot=rs["bootstrap"], horizons=horizons)
    best = cell_stats(records, benchmarks, metric, rs["collapse_metric"], rs["collapse_frac"],
                      n_boot=rs["bootstrap"], best=True, horizons=horizons) if with_best else []
    stab = stability_stats(records, rs["collapse_metric"], rs["collapse_frac"], n_boot=rs["bootstrap"],
                           horizons=horizons)
    fams = {}
    if decl:
        measures = (decl.primary, *(k for k in ("auc", "time_to_collapse", "final", "score") if k != decl.primary
                                    and (k != "score" or benchmarks)))
        fams = verdicts.families(records, decl, scales, collapse_metric=rs["collapse_metric"],
                                 frac=rs["collapse_frac"], horizons=horizons, benchmarks=benchmarks, metric=metric,
                                 measures=measures)
        verdicts.write_csv(fams, out / "comparisons.csv")
    if rs["published"]:
        pub_path = Path(rs["published"])  # relative to the current directory, as the results are
        # the paper reports the best checkpoint in the window: its numbers sit beside ours of the same kind
        attach_published(best or stats, load_published(pub_path), rs["published_model"])
    write_csv(best + stats, out / "table.csv")
    write_csv(stab, out / "stability.csv")
    pct = all(0.0 <= v <= 1.0 for s in best + stats for v in s.values)
    stab_table = stability_markdown(stab, methods, scales, settings, rs["collapse_metric"], reference)
    score_tables = "".join(f"## Score of the {CHECKPOINTS[s[0].checkpoint]}\n\n"
                           f"{markdown(s, benchmarks, metric, methods, scales, settings, pct=pct)}\n"
                           for s in (best, stats) if s)
    comp_table = ""
    if decl and fams.get(decl.primary):
        comp_table = (f"## Declared comparisons ({verdicts.NAMES[decl.primary]}; Holm over {len(fams[decl.primary])})"
                      "\n\n" + "\n".join(verdicts.markdown_table(fams[decl.primary], decl)) + "\n\n")
    (out / "table.md").write_text(f"# Profile `{profile}`: comparison table\n\n"
                                  f"{comp_table}"
                                  f"## Stability over training\n\n{stab_table}\n"
                                  f"{score_tables}"
                                  f"Collapsed: seeds whose `{rs['collapse_metric']}` fell below "
                                  f"{rs['collapse_frac']:g} × its step-0 value at some evaluated step within the "
                                  "horizon (the first such step is the time to collapse).\n")

    fig_dir = out / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)  # no stale figures of methods/scales no longer in the grid
    fig_dir.mkdir(parents=True)
    figures = []
    if fams:
        figures += [p.name for p in plots.comparison_figure(fams, decl.primary, fig_dir, verdicts.NAMES,
                                                            verdicts.UNITS) if p.suffix == ".png"]
    for scale in scales:
        if len(settings) > 1:
            figures += [p.name for p in plots.frontier_figure(stab, methods, settings, scale, fig_dir, reference,
                                                              horizon=horizons.get((settings[-1], scale)))
                        if p.suffix == ".png"]
        for setting in settings:
            figures += [p.name for p in plots.stability_figure(records, rs["curves"], methods, scale, setting,
                                                               fig_dir, n_boot=1000) if p.suffix == ".png"]
            figures += [p.name for p in plots.position_figure(records, methods, scale, setting, fig_dir,
                                                              n_boot=1000) if p.suffix == ".png"]

    # Wall time: from `cppo mlflow-init` (the first job) to the last run output, so that re-making
    # the report later does not change it.
    wall_s = None
    marker = Path(args.results_root) / profile / "runs" / "_mlflow_parents.json"
    if marker.is_file():
        started = json.loads(marker.read_text()).get("started_at")
        ends = [p.stat().st_mtime for r in records for p in [r.run_dir / "done", *r.run_dir.glob("eval/*.json")]
                if p.is_file()]
        if isinstance(started, (int, float)):
            wall_s = (max(ends) if ends else time.time()) - started
    claims = []
    if (cfg.get("report") or {}).get("claims"):
        from cppo.report.claims import claims_section, write_inputs

        claims = claims_section(cfg, records, settings, scales, rs["collapse_metric"], rs["collapse_frac"],
                                horizons)
        write_inputs(out / "claims.csv", cfg, records, settings, scales, rs["collapse_metric"], rs["collapse_frac"],
                     horizons)
    if decl:
        claims = verdicts.section(fams, decl, rs["collapse_metric"]) + claims
    text = write_summary(cfg, records, stats, best=best, metric=metric, benchmarks=benchmarks,
                         collapse_metric=rs["collapse_metric"], collapse_frac=rs["collapse_frac"],
                         methods=methods, scales=scales, settings=settings, wall_s=wall_s,
                         provenance=prov, figures=figures, stab=stab, reference=reference,
                         horizons=horizons, notes=[str(n) for n in (cfg.get("report") or {}).get("notes") or []],
                         headline=claims)
    (out / "summary.md").write_text(text)
    with open(out / "config.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    print(f"cppo report: wrote {out}/table.md, table.csv, summary.md, config.yaml and {len(figures)} figures")
    return 0


def _splice(text: str, heading_prefixes: tuple[str, ...], new: list[str], keep=lambda line: False) -> str:
    """`text` with the section whose heading starts with one of `heading_prefixes` replaced by `new`
    (plus the old section's lines for which `keep` is true); unchanged when there is no such section."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading_prefixes)), None)
    if start is None:
        return text
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept = [line for line in lines[start + 1:end] if keep(line)]
    body = new + kept + ([""] if kept else [])
    return "\n".join(lines[:start] + body + lines[end:]) + ("\n" if text.endswith("\n") else "")


def _retest(cfg: dict, out) -> int:
    """`--retest`: the verdict-bearing sections of OUT/summary.md re-made from OUT's per-seed values
    (claims.csv or stability.csv, table.csv): the claims' tests, the stability and score sections
    (described, no ranking) and "What it does not show"; the rest of the summary is kept."""
    import sys

    from cppo import tracking
    from cppo.report.claims import GROWTH, read_inputs, retest_summary
    from cppo.report.grid import reference as grid_reference, settings_of
    from cppo.report.summary import ladder_section, not_shown, score_lines
    from cppo.report.tables import horizon, read_csv

    summary = out / "summary.md"
    rs = report_settings(cfg)
    methods, scales, settings = list(cfg["grid"]["methods"]), list(cfg["grid"]["scales"]), settings_of(cfg)
    try:
        inputs = read_inputs(out)
        text = summary.read_text()
        growth = any(GROWTH in m for cell in inputs.values() for m in cell.values())
        commit = tracking.provenance().get("git_commit", "unknown")[:10]
        src = "claims.csv" if (out / "claims.csv").is_file() else "stability.csv"
        note = (f"*Re-tested at commit `{commit}` from the per-seed values committed in this folder (`{src}`, "
                "`table.csv`), without the runs: this section, the stability and score sections and \"What it does "
                "not show\" are re-made; the rest of this summary is from the original report.*")
        if not growth:
            note += (" *The D_t growth claim is not re-tested: its per-seed values (DPPO's position profiles) are "
                     "not in the committed files.*")
        if (cfg.get("report") or {}).get("claims"):
            text = retest_summary(text, cfg, inputs, note)
        ref = grid_reference(cfg)
        horizons = {(st, sc): horizon(cfg, st, sc) for st in settings for sc in scales}
        if (out / "stability.csv").is_file():
            stab = read_csv(out / "stability.csv")
            text = _splice(text, ("## The pressure ladder", "## Stability per setting"),
                           ladder_section(stab, methods, scales, settings, ref, rs["collapse_metric"], horizons))
        if (out / "table.csv").is_file():
            final = [c for c in read_csv(out / "table.csv") if c.checkpoint in ("", "final")]
            metric = next((line.split("`")[1] for line in text.splitlines() if line.startswith("## Final scores")), "")
            text = _splice(text, ("## Final scores",), [f"## Final scores (`{metric}` of the final checkpoint)", ""]
                           + score_lines(final, methods, scales, settings, ref),
                           keep=lambda line: line.startswith("- ") and not line.startswith("- `"))
        text = _splice(text, ("## What it does not show",), not_shown(cfg, settings, True))
        summary.write_text(text)
    except (OSError, ValueError, KeyError) as err:
        print(f"cppo report --retest: {err}", file=sys.stderr)
        return 2
    print(f"cppo report: re-tested the claims and re-made the descriptive sections of {summary}")
    return 0
