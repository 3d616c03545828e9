"""Where lltrace finds its configs and writes its runs."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def configs_dir() -> Path:
    """`configs/` of the checkout; LLTRACE_CONFIGS overrides it (installed elsewhere)."""
    return Path(os.environ.get("LLTRACE_CONFIGS", REPO_ROOT / "configs"))


def traces_dir() -> Path:
    """Run directories land here; LLTRACE_TRACES overrides (tests point it at tmp)."""
    return Path(os.environ.get("LLTRACE_TRACES", Path.cwd() / "traces"))
