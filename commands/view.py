"""`lltrace view RUN_OR_TRACE`: the live TUI's screens over a recorded run, to browse a budget."""
from __future__ import annotations

import contextlib

import click


@click.command()
@click.argument("path", metavar="RUN_OR_TRACE")
def view(path):
    """Browse RUN_OR_TRACE in the TUI: a run directory (traces/<run-id>/), a run id, a
    torch-profiler trace (.json / .json.gz) or a budget JSON. Shows the frame latencies,
    the statistics, the events and the time budget tree (expand it down to layer and op)."""
    from rich.console import Console

    from lltrace.errors import LltraceError
    from lltrace.ui.app import run_view_app, tui_available
    from lltrace.ui.recorded import load_recorded, load_run_budget, locate

    locate(path)   # a bad path is a one-line error, before the screen is taken over
    if not tui_available():
        raise LltraceError("lltrace view needs a terminal",
                           f"for text output use `lltrace budget {path}`")
    # Everything is read before the app takes the screen: bad input is a one-line error and
    # exit code 2 here, never a panel stuck on "reading the run..." or a traceback in the TUI.
    rec = load_recorded(path)
    if rec.has_trace:
        err = Console(stderr=True)
        with err.status(f"reading {rec.path}") if err.is_terminal else contextlib.nullcontext():
            rec.budget = load_run_budget(rec)
    run_view_app(rec)
