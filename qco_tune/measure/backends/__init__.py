"""Everything that touches torch and diffusers. Import submodules directly; this package imports nothing heavy."""
