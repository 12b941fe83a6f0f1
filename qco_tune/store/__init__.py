"""The Optuna storage: opening it, heartbeats and stale-trial recovery.

The only code that touches Optuna's internals.
"""
