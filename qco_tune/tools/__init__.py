"""GPU recording tools (``python -m qco_tune.tools.NAME``): grids, full-size cases, cold starts, rule probes,
study summaries. Their records live under ``studies/results/``."""
