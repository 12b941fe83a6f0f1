"""The search benchmark: recorded grids and replays of samplers against them."""
