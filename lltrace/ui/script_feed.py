"""The live TUI over `lltrace run --script` (issue #15): the user's script runs in the app's
worker thread under a ForeignSession (lltrace.capture.script), as a preset run's Session does
(lltrace.ui.feeds.LiveFeed), and feeds the same frame clock, events and budget panels.

- The script's own output would draw over the TUI: its `print`s (sys.stdout / sys.stderr) and
  what native code writes to file descriptor 1 go to `<run>/script.log`; native writes to fd 2
  wait in lltrace.ui.app.native_stderr_captured and are printed after the TUI closes.
- Controls: `p` opens a profiler window at the next detected block; space pauses at the next
  block boundary (the script waits inside lltrace's hook); `s` cannot apply (the script owns its
  prompts) and says so; `q` / Ctrl-C stop the script at the next block boundary (it unwinds as
  from Ctrl-C) and the run directory is final, status interrupted, reason stopped.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lltrace.ui.live import SessionStarted

LOG_NAME = "script.log"


class ScriptFeed:
    """`run(post, control, bridge)` in the app's worker: the script, start to end; its RunResult.
    After it, `session` and `error` (the script's own exception, None if it completed or was
    stopped) are set for the caller, which shows the script's traceback."""

    live = True           # LltraceApp: the live screens and keys
    script = True         # ... with the keys that cannot apply to a foreign script saying so
    doctor = False        # lltrace doctor checks lltrace's own pipeline stages only
    starting = "starting the script"

    def __init__(self, script: str | os.PathLike, args: Sequence[str] = (),
                 session_kwargs: dict[str, Any] | None = None):
        self.path = Path(script)
        self.args = list(args)
        self.session_kwargs = dict(session_kwargs or {})
        self.session: Any = None
        self.error: BaseException | None = None
        self.result: Any = None
        self.log_path: Path | None = None

    def run(self, post, control, bridge) -> Any:
        from lltrace.capture.rundir import RunDirectory
        from lltrace.capture.script import run_script, script_name

        kwargs = dict(self.session_kwargs)
        out = kwargs.pop("run_dir", None)
        rd = out if isinstance(out, RunDirectory) else (
            RunDirectory(Path(out)) if out is not None else RunDirectory.create(script_name(self.path)))
        rd.path.mkdir(parents=True, exist_ok=True)
        self.log_path = rd.path / LOG_NAME
        listeners = [*kwargs.pop("listeners", ()), bridge]
        kwargs.setdefault("handle_signals", False)   # a worker thread; Ctrl-C is the TUI's key

        def started(session) -> None:
            self.session = bridge.session = session
            if control.stopping:
                session.request_stop()
            post(SessionStarted(session, {"preset": f"script {self.path.name}",
                                          "knobs": {"name": f"script {self.path.name}"}}))

        with open(self.log_path, "w", encoding="utf-8", buffering=1) as log, _output_to(log):
            result, session, error = run_script(self.path, self.args, on_session=started, run_dir=rd,
                                                listeners=listeners, next_switch=control.next_switch, **kwargs)
        self.session, self.error, self.result = session, error, result
        if error is not None:   # the run directory is final (status error); the app shows it
            raise error
        return result


@contextlib.contextmanager
def _output_to(log):
    """sys.stdout / sys.stderr and fd 1 into `log` (the TUI draws through a copy of fd 2)."""
    saved_fd = None
    try:
        sys.stdout.flush()
        saved_fd = os.dup(1)
        os.dup2(log.fileno(), 1)
    except (OSError, ValueError, AttributeError):   # no fd 1 (an embedded interpreter): Python output only
        saved_fd = None
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def run_script_app(feed: ScriptFeed, *, notes: Sequence[str] = (), profile_window_blocks: int = 2) -> Any:
    """The TUI over `feed` until the user quits; returns its RunResult (None if nothing ran).
    The script's exception is on `feed.error` (the caller prints its traceback)."""
    from lltrace.ui.app import LltraceApp, run_to_end, saved_message

    app = LltraceApp(feed=feed, notes=notes, profile_window_blocks=profile_window_blocks)
    outputs = sys.stdout, sys.stderr   # Textual swaps them while it runs; the script's log after
    run_to_end(app, "stopping the script at its next block")
    sys.stdout, sys.stderr = outputs
    if feed.error is None:
        saved_message(app)
    if feed.log_path is not None:
        print(f"the script's output: {feed.log_path}", file=sys.stderr, flush=True)
    return feed.result
