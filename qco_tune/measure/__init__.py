"""The parent side of measuring: child processes that run trials, probe the machine and materialise presets.

``measure.backends`` is the child side and the only code that imports torch and diffusers."""
