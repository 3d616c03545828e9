"""What the TUI renders comes from a feed (memray's model: a data source posts snapshots, the app
only renders them). The app runs a feed's `run(post, ...)` in a worker thread; everything
that builds data (the pipeline, the capture Session, the pre-flight doctor, budgets, reading a
recorded run) happens here, outside the App class.

- `LiveFeed(pipeline_or_factory, session_kwargs, doctor=True)`: builds the pipeline if given a
  factory, starts a Session with the app's bridge as a listener (lltrace.ui.live), runs
  `lltrace doctor` on the per-block stages before the run, then the run; returns its RunResult.
- `RecordedFeed(path)`: a run directory, trace or budget JSON: posts `RecordedLoaded`, then
  `BudgetReady` with its budget.
- `window_budget(run_dir, name)`: the budget of one profiled window of a live run.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.message import Message

from lltrace.ui.live import DoctorChecked, SessionStarted, is_pipeline

# The stages every block runs (the generator forwards that a CUDA graph would replay); the
# recache, decoder and text encoder are lltrace doctor's full run, not a pre-flight.
DOCTOR_STAGES = ("denoise", "kv_update")

Post = Callable[[Message], Any]


class BudgetReady(Message):
    def __init__(self, budget: Any | None, message: str = "") -> None:
        super().__init__()
        self.budget = budget
        self.message = message


class RecordedLoaded(Message):
    def __init__(self, recorded: Any) -> None:
        super().__init__()
        self.recorded = recorded


class LiveFeed:
    def __init__(self, pipeline: Any | Callable[[], Any], session_kwargs: dict[str, Any] | None = None,
                 doctor: bool = True):
        self.pipeline = pipeline
        self.session_kwargs = dict(session_kwargs or {})
        self.doctor = doctor

    def run(self, post: Post, control, bridge) -> Any:
        """In the app's worker thread: the run, start to end; its RunResult, or None when the
        user quit before it started. Exceptions reach the caller (the app shows and re-raises)."""
        from lltrace.capture.session import Session

        pipe = self.pipeline if is_pipeline(self.pipeline) else self.pipeline()
        if control.stopping:            # quit while the pipeline was being built: nothing ran
            return None
        kwargs = dict(self.session_kwargs)
        listeners = [*kwargs.pop("listeners", ()), bridge]
        kwargs.setdefault("handle_signals", False)
        session = Session(pipe, listeners=listeners, next_switch=control.next_switch, **kwargs)
        bridge.session = session
        if control.stopping:            # quit raced the start: stop_run may not have seen it
            session.request_stop()
        describe = pipe.describe() if callable(getattr(pipe, "describe", None)) else {}
        post(SessionStarted(session, describe))
        if self.doctor:
            post(preflight_doctor(pipe))
        if control.stopping:            # quit during the doctor: nothing ran yet either
            return None
        return session.run()


def preflight_doctor(pipe: Any) -> DoctorChecked:
    """Before session.run(): the run's clock starts at its pipe.start(), so the first-frame
    latency leaves the doctor out. The doctor puts the pipeline's observer, CUDA graphs and
    compiled blocks back and leaves its stream mid-way (session.run() starts a new one). A
    doctor that fails is shown, never ends the run."""
    from lltrace.doctor import pipeline as pipeline_doctor

    try:
        report = pipeline_doctor.diagnose_pipeline(pipe, list(DOCTOR_STAGES), compile_check=False)
    except Exception as exc:  # noqa: BLE001 - shown in the CUDA-graph panel
        return DoctorChecked(None, exc)
    return DoctorChecked(report, None)


class RecordedFeed:
    """`path`: a run directory, trace or budget JSON, or a RecordedRun that `lltrace view` read
    (with its budget) before the app took the screen."""

    def __init__(self, path: Any):
        self.path = path

    def run(self, post: Post) -> None:
        from lltrace.errors import LltraceError
        from lltrace.ui.recorded import RecordedRun, load_recorded, load_run_budget

        read = self.path if isinstance(self.path, RecordedRun) else None
        try:
            rec = read or load_recorded(self.path)
        except LltraceError as exc:
            post(BudgetReady(None, str(exc)))
            return
        post(RecordedLoaded(rec))
        if read is not None and rec.budget is not None:
            post(BudgetReady(rec.budget, rec.path.name))
            return
        if not rec.has_trace:
            post(BudgetReady(None, "this run has no profiled window (lltrace run --profile-blocks A:B, "
                                   "or p in the live view)"))
            return
        try:
            post(BudgetReady(load_run_budget(rec), rec.path.name))
        except LltraceError as exc:
            post(BudgetReady(None, str(exc)))


def window_budget(run_dir: Path, name: str) -> BudgetReady:
    """The budget of one profiled window of the live run (that trace file only)."""
    from lltrace.trace.budget import build_budget
    from lltrace.trace.loader import Source, load_trace

    try:
        meta = run_dir / "meta.json"
        src = Source("run", run_dir / name, run_dir, meta if meta.is_file() else None)
        return BudgetReady(build_budget(load_trace(src)), name)
    except Exception as exc:  # noqa: BLE001 - shown in the panel
        return BudgetReady(None, f"{name}: no budget ({type(exc).__name__}: {exc})")
