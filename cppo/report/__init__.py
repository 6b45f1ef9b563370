"""Reports of a profile: the grid's cells, statistics over seeds, tables, curves and the summary.

- `grid`: reading a profile config and expanding its grid (shared with the pipeline and mlflow-init)
- `stats`: bootstrap confidence intervals, interquartile mean, collapse detection
- `collect`: run histories from MLflow (run folders as fallback)
- `tables`, `plots`, `summary`: the outputs under `results/<profile>/`
- `cli`: `cppo report CONFIG`
"""
