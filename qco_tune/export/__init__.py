"""A configuration as Python source, JSON or TOML. Pure: imports ``core`` and ``calls`` only."""
