"""Write config/tiny-all.yaml from config/tiny.yaml: the same regime, every method, 5 seeds.

Why generated: tiny-all must run exactly the tiny regime (task, scales, SFT, RL, settings, eval,
report); only its methods and grid differ. Re-run this after editing tiny.yaml (a test checks
that the committed file is up to date):

    .venv/bin/python workflow/scripts/make_tiny_all.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HEADER = """\
# tiny-all: every method of the paper's Table 1 that exists here, the CPPO ablations and verl's other
# policy losses, 5 seeds.
# GENERATED from config/tiny.yaml by workflow/scripts/make_tiny_all.py: the same task, models, SFT,
# RL regime, settings, eval and report; only the methods and the grid differ (edit tiny.yaml, re-run).
# {count}, so use more cores:
#   .venv/bin/snakemake --configfile config/tiny-all.yaml --cores 8
profile: tiny-all
"""

METHODS = """\
methods:                     # Table 1 methods with the papers' defaults (as in tiny.yaml)
  pg_is:   {rule: pg_is, trunc_cap: null}                       # no trust region: the unstable control
  grpo:    {rule: ppo_clip, eps_low: 0.2, eps_high: 0.28}       # clip-higher (DAPO)
  cispo:   {rule: cispo, eps_high: 0.2}
  dppo:    {rule: dppo, delta: 0.15, divergence: binary_tv, trunc_cap: 20}
  trm_max: {rule: trm_max, delta: 0.1}
  trm_avg: {rule: trm_avg, delta: 0.002}
  minpro:  {rule: minpro, eps_low: 0.2, eps_high: 0.28, clip: soft}
  cppo:    {rule: cppo, delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv, trunc_cap: 20}
  # CPPO ablations (docs/methods.md §CPPO, "Ablations"): each changes one thing of `cppo` above
  cppo_no_posw:    {rule: cppo, delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv, trunc_cap: 20, ablation: no_position_weight}
  cppo_no_prefix:  {rule: cppo, delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv, trunc_cap: 20, ablation: no_prefix_budget}
  cppo_shuffled_w: {rule: cppo, delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv, trunc_cap: 20, ablation: shuffled_weights}
  cppo_kl:         {rule: cppo, delta: 0.1, delta_b: 0.002, w_min: 0.8, divergence: binary_kl, trunc_cap: 20}   # KL instead of TV
  cppo_soft:       {rule: cppo, delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv, trunc_cap: 20, mask_mode: soft}
  cppo_no_cap:     {rule: cppo, delta: 0.15, delta_b: 0.02, w_min: 0.8, divergence: binary_tv, trunc_cap: null}  # C = inf
  # verl 0.9.1's other policy losses at verl's defaults (as in tiny.yaml)
  sapo:     {rule: sapo, tau_pos: 1.0, tau_neg: 1.05}
  gpg:      {rule: gpg}
  clip_cov: {rule: clip_cov, eps_low: 0.2, eps_high: 0.2, clip_cov_ratio: 2.0e-4, clip_cov_lb: 1.0, clip_cov_ub: 5.0}
  kl_cov:   {rule: kl_cov, kl_cov_ratio: 2.0e-4, ppo_kl_coef: 0.1}
  geo_mean: {rule: geo_mean, eps_low: 0.2, eps_high: 0.2}
  dro:      {rule: dro, beta: 0.05}

grid:
  methods: [pg_is, grpo, cispo, dppo, trm_max, trm_avg, minpro, cppo,
            cppo_no_posw, cppo_no_prefix, cppo_shuffled_w, cppo_kl, cppo_soft, cppo_no_cap,
            sapo, gpg, clip_cov, kl_cov, geo_mean, dro]
  scales: [s, m]
  seeds: [1, 2, 3, 4, 5]
  # tiny's ladder plus the precision-mismatch setting (above on-policy, below one off-policy step)
  # and a lag of one rollout on top of the top rung
  settings: [onpolicy, onpolicy_bf16, upd2, upd4, upd8, upd8_lag1]
  reference: {setting: onpolicy, method: pg_is}

"""


def render(tiny_text: str) -> str:
    """tiny.yaml's text -> tiny-all.yaml's text (sections copied verbatim, comments included)."""
    lines = tiny_text.splitlines(keepends=True)

    def top(name: str) -> int:
        for i, line in enumerate(lines):
            if line.startswith(f"{name}:"):
                return i
        raise SystemExit(f"make_tiny_all: config/tiny.yaml has no top-level `{name}:`")

    after_profile = top("profile") + 1
    body = "".join(lines[after_profile:top("methods")])  # data_dir .. settings
    tail = "".join(lines[top("eval"):])  # eval, report
    import yaml

    grid = yaml.safe_load(METHODS)["grid"]
    n_m, n_sc, n_se, n_st = (len(grid[k]) for k in ("methods", "scales", "seeds", "settings"))
    ref = 1 if grid.get("reference") else 0
    count = (f"{n_m} methods x {n_sc} scales x {n_se} seeds x {n_st - ref} settings"
             + (f" + {n_sc} x {n_se} on-policy reference runs" if ref else "")
             + f" = {n_m * n_sc * n_se * (n_st - ref) + ref * n_sc * n_se} runs")
    return HEADER.format(count=count) + body + METHODS + tail


def main() -> None:
    text = render((REPO / "config" / "tiny.yaml").read_text())
    out = REPO / "config" / "tiny-all.yaml"
    if "--check" in sys.argv:
        raise SystemExit(0 if out.read_text() == text else "config/tiny-all.yaml is out of date: re-run "
                         "workflow/scripts/make_tiny_all.py")
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
