"""The search problem without Optuna: the space and its rules, the memory model and its calibration, the planner,
trial cost, per-step extrapolation and the Pareto summary. Imports ``core`` and ``calls``."""
