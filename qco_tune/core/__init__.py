"""The headless core: frozen value objects, the spec schema, units, paths, model references and presets as data.

Stdlib only: nothing here imports optuna, torch, diffusers, click, rich or textual."""
