"""Importing torch, diffusers and transformers quietly: what every child process does first."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Silence download/progress chatter and deprecation noise; errors still reach stderr.

    Must run before torch, diffusers and transformers are imported.
    """
    import warnings

    for key, value in {
        "HF_HUB_OFFLINE": "1",  # trials never download
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "DIFFUSERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def import_libraries() -> None:
    """Import torch, diffusers and transformers quietly, before anything is timed.

    Imports take seconds and are the same for every configuration, so ``load_s`` excludes them.
    torch configures its loggers on import, so its registration warnings (logged when torchao
    imports) are silenced after torch and before diffusers.
    """
    import logging

    import torch  # noqa: F401

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


__all__ = ["import_libraries", "quiet_libraries"]
