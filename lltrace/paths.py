"""Where lltrace finds its configs and writes its runs."""
from __future__ import annotations

import os
from pathlib import Path


def configs_dir() -> Path:
    """The presets and model configs: `lltrace/configs` (the repository's `configs/`, shipped
    as package data, so an installed wheel has them too); LLTRACE_CONFIGS overrides it."""
    return Path(os.environ.get("LLTRACE_CONFIGS", Path(__file__).resolve().parent / "configs"))


def traces_dir() -> Path:
    """Run directories land here; LLTRACE_TRACES overrides (tests point it at tmp)."""
    return Path(os.environ.get("LLTRACE_TRACES", Path.cwd() / "traces"))
