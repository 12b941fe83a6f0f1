"""The ``qco-tune`` command, its progress display and its text reports (a face: click and rich live here)."""
