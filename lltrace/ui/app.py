"""The Textual app of `lltrace run` (live) and `lltrace view` (a recorded run).

For commands/run.py and commands/view.py; the app renders a feed (lltrace.ui.feeds):

    tui_available() -> bool
        stdin and stdout are terminals; otherwise print the headless rich output instead.
    run_live_app(pipeline_or_factory, session_kwargs, *, notes=(), budget_ms=40.0,
                 profile_window_blocks=4, doctor=True) -> RunResult | None
        Runs `Session(pipeline, **session_kwargs)` (lltrace.capture.session) in a worker thread
        under the TUI. `pipeline_or_factory`: a built pipeline, or a no-argument callable that
        builds one (it then runs in the worker while the TUI shows "building"). `session_kwargs`:
        num_blocks, prompt, switches, run_dir, profile_blocks, regions_level, py_spy, command, ...
        (its `listeners` are kept; the app adds its own and the `next_switch` hook;
        handle_signals defaults to False). `notes`: lines shown under the knobs (e.g. the CPU
        fallback notes). `doctor`: before the run, check the built pipeline's per-block stages
        with `lltrace doctor` (CUDA-graph captures on CUDA, static checks on a CPU) and show its
        verdict in the CUDA-graph panel. Returns the RunResult once the user quits (q: the run
        stops after the current block and the run directory is finalized) or after the run ended
        and the user quit; re-raises the session's exception after the TUI closes; None when the
        user quit before the run started (no run directory then).
    run_view_app(path) -> None
        `lltrace view`: the same screens over a run directory, a trace or a budget JSON.

Keys: ? help, space pause/resume, s switch prompt, p profiled window, q quit.
The UI thread never waits on the run: the session posts messages (lltrace.ui.live), a timer
reads the frame clock's thread-safe stats, traces are parsed in worker threads.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widgets import Footer, Header, Input

from lltrace.ui.feeds import BudgetReady, LiveFeed, RecordedFeed, RecordedLoaded, window_budget
from lltrace.ui.live import (BlockFinished, DoctorChecked, EventArrived, FrameReady, LiveControl, RunEnded,
                             SessionBridge, SessionStarted, SwitchShown, is_pipeline)
from lltrace.ui.widgets import (BudgetTree, EventLog, FoldedPanels, GraphsPanel, HelpScreen, KnobsPanel, LatencyPlot,
                                MemoryPanel, StatsPanel)
from lltrace.ui.verdict import FRAME_BUDGET_MS
from lltrace.ui.widgets.panels import (DOCTOR_CHECKING, DOCTOR_FAILED, GraphStatus, MemoryStatus, graphs_could_save,
                                       read_memory)
from lltrace.words import count, plural

TALL_ROWS = 45      # from this height the CUDA-graph / memory / preset panels get their rows

DOCTOR_STATE = "checking CUDA graphs (lltrace doctor)…"


class LltraceApp(App):
    """Live: `LltraceApp(pipeline=..., session_kwargs=...)`; recorded: `LltraceApp(recorded=path)`."""

    CSS_PATH = "app.tcss"
    TITLE = "lltrace"
    # Screen.-short (app.tcss): below TALL_ROWS the small panels fold into one line and the
    # headline numbers into five, so the budget tree and the event log keep their rows.
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-short"), (TALL_ROWS, "-tall")]
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        # priority: the budget tree binds space too; check_action lets it through to the prompt box.
        Binding("space", "toggle_pause", "pause/resume", priority=True),
        Binding("s", "switch_prompt", "switch prompt"),
        Binding("p", "profile", "profile window"),
        Binding("escape", "cancel_prompt", "cancel", show=False),
        Binding("q", "quit_run", "quit"),
        Binding("ctrl+q,ctrl+c", "quit_run", "quit", show=False, priority=True),
    ]

    state: reactive[str] = reactive("starting")

    def __init__(self, *, feed: LiveFeed | RecordedFeed | None = None,
                 pipeline: Any | Callable[[], Any] | None = None,
                 session_kwargs: dict[str, Any] | None = None, recorded: str | Path | None = None,
                 notes: Sequence[str] = (), budget_ms: float = FRAME_BUDGET_MS,
                 profile_window_blocks: int = 4, refresh_s: float = 0.25, plot_window: int = 600,
                 doctor: bool = True) -> None:
        """The app renders one feed; `pipeline`/`session_kwargs`/`doctor` or `recorded` build it."""
        super().__init__()
        if feed is None:
            if (pipeline is None) == (recorded is None):
                raise ValueError("give a feed, a pipeline (live) or a recorded run path")
            feed = (LiveFeed(pipeline, session_kwargs, doctor=doctor) if pipeline is not None
                    else RecordedFeed(recorded))
        self.feed = feed
        self.live = isinstance(feed, LiveFeed) or getattr(feed, "live", False)
        self.script = getattr(feed, "script", False) is True   # lltrace.ui.script_feed: a --script run
        doctor = self.live and feed.doctor
        self.notes = tuple(notes)
        self.budget_ms = budget_ms
        self.profile_window_blocks = profile_window_blocks
        self.refresh_s = refresh_s
        self.doctor = doctor
        self.control = LiveControl()
        self.bridge = SessionBridge(self.post_message, self.control)
        self.session: Any = None
        self.pipeline: Any = None
        self.recorded: Any = None
        self.run_result: Any = None
        self.run_error: BaseException | None = None
        self.done = threading.Event()        # the run's worker has returned (the run dir is final)
        self.ended = False
        self.quitting = False
        self.profiling: str | None = None    # None | "requested" | "recording" | "stopping"
        self._samples: deque[tuple[int, float, str]] = deque(maxlen=plot_window)
        self._dirty = False
        self._graphs = GraphStatus()
        self._mem_device: Any = None
        self._mem_total: int | None = None
        self._device_name = ""
        self._titled = False
        self._scheduled_window = False

    # -- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            yield LatencyPlot(id="plot")
            yield StatsPanel(id="stats")
        with Horizontal(id="middle"):
            yield BudgetTree(id="budget")
            yield EventLog(id="events")
        with Horizontal(id="bottom"):
            yield GraphsPanel(id="graphs")
            yield MemoryPanel(id="memory")
            yield KnobsPanel(id="knobs")
        yield FoldedPanels(id="folded")
        yield Input(id="prompt", placeholder="new prompt; Enter switches before the next block, Esc cancels")
        yield Footer()

    def on_mount(self) -> None:
        for wid, title in (("plot", "frame latency"), ("stats", "frames"), ("budget", "time budget"),
                           ("events", "events"), ("graphs", "CUDA graphs / compile"), ("memory", "memory"),
                           ("knobs", "preset")):
            self.query_one(f"#{wid}").border_title = title
        self.query_one(LatencyPlot).budget_ms = self.budget_ms
        self.query_one(StatsPanel).budget_ms = self.budget_ms
        self.query_one(KnobsPanel).notes = self.notes
        tree = self.query_one(BudgetTree)
        if self.live:
            tree.show_message(f"no profiled window yet: press p to profile the next "
                              f"{count(self.profile_window_blocks, 'block')}")
            self.state = getattr(self.feed, "starting", None) or (
                "building the pipeline" if not is_pipeline(self.feed.pipeline) else "starting")
            self._run_feed()
            self.set_interval(self.refresh_s, self._tick)
        else:
            tree.show_message("reading the run...")
            self.state = "loading"
            self._run_feed()
        tree.focus()

    def watch_state(self, state: str) -> None:
        self.sub_title = state
        try:
            self.query_one(StatsPanel).state = state
        except NoMatches:   # before compose
            pass

    # -- live: the run in a worker thread ------------------------------------------------------------
    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _run_feed(self) -> None:
        """The feed runs in this worker and posts what the app renders (lltrace.ui.feeds)."""
        if not self.live:
            self.feed.run(self.post_message)
            return
        result = error = None
        try:
            result = self.feed.run(self.post_message, self.control, self.bridge)
        except BaseException as exc:  # noqa: BLE001 - shown in the TUI, re-raised by run_live_app
            error = exc
        finally:
            self.run_result, self.run_error = result, error
            self.done.set()
            self.post_message(RunEnded(result, error))

    def on_session_started(self, m: SessionStarted) -> None:
        self.session, self.pipeline = m.session, m.session.pipeline
        d = m.describe
        knobs = d.get("knobs") or {}
        self._show_knobs(str(d.get("preset") or knobs.get("name") or ""), knobs)
        self._graphs = GraphStatus(knobs=knobs, optimizations=dict(d.get("optimizations") or {}),
                                   verdict=DOCTOR_CHECKING if self.doctor else None)
        self._show_graphs(self._graphs)
        dev = d.get("device") or {}
        self._mem_device = getattr(self.pipeline, "device", None)
        self._device_name, self._mem_total = str(dev.get("name") or ""), dev.get("memory_bytes")
        self.title = f"lltrace run · {d.get('preset', '')}"
        if self.control.stopping:
            m.session.request_stop()
        elif self.state.startswith(("building", "starting")):
            self.state = DOCTOR_STATE if self.doctor else "running"
        self._tick()

    def on_doctor_checked(self, m: DoctorChecked) -> None:
        from lltrace.ui.doctor_report import panel_verdict, panel_where

        if m.report is not None:
            verdict, where = panel_verdict(m.report), panel_where(m.report)
        else:
            first = next(iter(str(m.error).strip().splitlines()), "")   # one row, not a traceback
            verdict, where = f"{DOCTOR_FAILED}: {type(m.error).__name__}: {first}", None
        self._graphs = replace(self._graphs, verdict=verdict, verdict_where=where)
        self._show_graphs(self._graphs)
        if m.error is not None:
            self.query_one(EventLog).add_note(f"lltrace doctor failed (the run goes on): "
                                              f"{type(m.error).__name__}: {m.error}", "yellow")
        if self.state == DOCTOR_STATE:
            self.state = "running"

    def _tick(self) -> None:
        """Timer on the UI thread: cheap reads only (lock-guarded stats, allocator counters)."""
        s = self.session
        if s is not None and not self._titled and getattr(s, "run_dir", None) is not None:
            self._titled = True
            self.title = f"lltrace run · {s.run_dir.run_id} · {self.query_one(KnobsPanel).preset}"
        if self._dirty:
            self._dirty = False
            self.query_one(LatencyPlot).samples = tuple(self._samples)
            clock = getattr(s, "clock", None)
            if clock is not None and not self.ended:
                self.query_one(StatsPanel).stats = clock.stats()
        if self.pipeline is not None:
            gf = getattr(self.pipeline, "graphed_forward", None)
            status = self._graphs
            if gf is not None:
                status = replace(status, replays=int(getattr(gf, "replays", 0)),
                                 eager_calls=int(getattr(gf, "eager_calls", 0)),
                                 graphs=len(getattr(gf, "graphs", {}) or {}))
            self._show_graphs(status)
            self._show_memory(read_memory(self._mem_device, self._device_name, self._mem_total))

    # the small panels and their folded line show the same statuses
    def _show_graphs(self, status: GraphStatus) -> None:
        self.query_one(GraphsPanel).status = status
        self.query_one(FoldedPanels).graphs = status

    def _show_memory(self, status: MemoryStatus) -> None:
        self.query_one(MemoryPanel).status = status
        self.query_one(FoldedPanels).memory = status

    def _show_knobs(self, preset: str, knobs: dict[str, Any]) -> None:
        panel = self.query_one(KnobsPanel)
        panel.preset, panel.knobs = preset, knobs
        self.query_one(FoldedPanels).preset = preset

    def on_frame_ready(self, m: FrameReady) -> None:
        r = m.record
        self._samples.append((r.frame, r.latency_ms, r.kind))
        self._dirty = True

    def on_block_finished(self, m: BlockFinished) -> None:
        total = getattr(self.session, "num_blocks", None)
        done = (f"{m.index + 1}/{total} {plural('block', total)}" if total else
                f"{m.index + 1} {plural('block', m.index + 1)}")
        if self.quitting or self.ended:
            return
        if self.control.paused:
            self.state = f"paused after {done} (space resumes)"
        else:
            self.state = f"running: {done}"

    def on_switch_shown(self, m: SwitchShown) -> None:
        self.query_one(StatsPanel).since_enter_ms = m.since_enter_ms
        self._dirty = True

    def on_event_arrived(self, m: EventArrived) -> None:
        self._show_event(m.t_s, m.event.kind, m.event.message, m.event.data)
        if m.event.kind == "profile_window":
            phase = m.event.data.get("phase")
            tree = self.query_one(BudgetTree)
            if phase == "start":
                self.profiling = "recording"
                self._scheduled_window = m.event.data.get("blocks") is not None   # --profile-blocks
                tree.border_subtitle = f"recording from block {m.event.data.get('block')} (p stops)"
            elif phase == "saved" and self.session is not None:
                self.profiling = None
                name = m.event.data.get("file", "trace.json.gz")
                tree.border_subtitle = f"{name}: building the budget..."
                self._window_budget(self.session.run_dir.path, name)

    def _show_event(self, t_s: float | None, kind: str, message: str, data: dict[str, Any]) -> None:
        self.query_one(EventLog).add_event(t_s, kind, message, data)
        g = self._graphs
        if kind == "recompile":
            g = replace(g, recompiles=g.recompiles + 1)
        elif kind == "graph_break":
            g = replace(g, graph_breaks=g.graph_breaks + 1)
        elif kind == "cudagraph_skip":
            g = replace(g, skips=g.skips + (str(data.get("reason") or message),))
        if g is not self._graphs:
            self._graphs = g
            self._show_graphs(g)

    def on_run_ended(self, m: RunEnded) -> None:
        self.ended = True
        self.run_result, self.run_error = m.result, m.error
        self.query_one(StatsPanel).ended = True
        log = self.query_one(EventLog)
        if m.result is not None:
            self.query_one(StatsPanel).stats = m.result.stats
            self.query_one(LatencyPlot).samples = tuple(self._samples)
            self.state = f"{m.result.status} ({m.result.message}); saved {m.result.run_dir}; q quits"
            log.add_note(f"run directory final: {m.result.run_dir}", "green")
        elif m.error is not None:
            self.state = f"error: {type(m.error).__name__}: {m.error}; q quits"
            log.add_note(f"the run failed: {type(m.error).__name__}: {m.error}", "bold red")
        else:
            self.state = "stopped before the run started"
        if self.quitting:
            self.exit(m.result)

    # -- budget (both modes) -------------------------------------------------------------------------
    @work(thread=True, group="budget", exit_on_error=False)
    def _window_budget(self, run_dir: Path, name: str) -> None:
        self.post_message(window_budget(run_dir, name))

    def on_budget_ready(self, m: BudgetReady) -> None:
        tree = self.query_one(BudgetTree)
        if m.budget is None:
            tree.show_message(m.message)
            tree.border_subtitle = ""
            return
        tree.show_budget(m.budget)
        b = m.budget
        what = "GPU" if b.metric == "gpu" else "host"
        tree.border_subtitle = f"{m.message}: {what} time{' (partial)' if b.partial else ''}"
        save = graphs_could_save(b.idle)
        if save != self._graphs.could_save:
            self._graphs = replace(self._graphs, could_save=save)
            self._show_graphs(self._graphs)

    # -- recorded runs -------------------------------------------------------------------------------
    def on_recorded_loaded(self, m: RecordedLoaded) -> None:
        rec = self.recorded = m.recorded
        meta, summary = rec.meta or {}, rec.summary or {}
        self.title = f"lltrace view · {rec.name}"
        knobs = meta.get("knobs") or {}
        self._show_knobs(str(meta.get("preset") or ""), knobs)
        self.query_one(StatsPanel).ended = True      # a recorded run: no more frames come
        self._samples.extend((f.frame, f.latency_ms, f.kind) for f in rec.frames[-self._samples.maxlen:])
        self.query_one(LatencyPlot).samples = tuple(self._samples)
        self.query_one(StatsPanel).stats = rec.stats
        self._graphs = GraphStatus(knobs=knobs, optimizations=dict(meta.get("optimizations") or {}))
        for e in rec.events:
            self._show_event(e.t_s, e.kind, e.message, e.data)
        self._show_graphs(self._graphs)
        log = self.query_one(EventLog)
        for w in rec.warnings:
            log.add_note(f"warning: {w}", "yellow")
        dev = meta.get("device") or {}
        if rec.kind == "run":
            cuda = dev.get("type") == "cuda"
            self._show_memory(MemoryStatus(
                "cuda" if cuda else "cpu", str(dev.get("name") or ""), peak=summary.get("peak_mem_bytes"),
                total=dev.get("memory_bytes"), host_rss_peak=summary.get("peak_host_rss_bytes")))
            end = meta.get("end") or {}
            self.state = f"recorded run: {meta.get('status', 'unknown status')}" + \
                         (f" ({end.get('reason')}: {end.get('message')})" if end else "")
        else:
            self.state = f"recorded {rec.kind}: {rec.path.name}"
        if rec.kind != "run":
            self.query_one(StatsPanel).state = self.state
        self.query_one(BudgetTree).border_subtitle = "building the budget..." if rec.has_trace else ""

    # -- actions -------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pause", "switch_prompt", "profile"):
            if action == "toggle_pause" and isinstance(self.focused, Input):
                return False            # a space typed in the prompt box
            if not self.live:
                return False            # hidden in `lltrace view`
            return None if self.quitting else True   # after the end: the action says why it does nothing
        return True

    def _ended_notice(self, why: str) -> bool:
        """After the run ended, a key of the live run says why it does nothing."""
        if not self.ended:
            return False
        self.notify(f"the run has ended: {why}", severity="warning")
        return True

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.live))

    def action_toggle_pause(self) -> None:
        if self._ended_notice("nothing left to pause"):
            return
        if self.control.paused:
            self.control.resume()
            self.state = "running"
        else:
            self.control.pause()
            self.state = "pausing after the current block (space resumes)"

    def action_switch_prompt(self) -> None:
        if self._ended_notice("no blocks are left to show a new prompt"):
            return
        if self.script:
            self.notify("a --script run's prompts are the script's own: lltrace cannot switch them",
                        severity="warning")
            return
        box = self.query_one("#prompt", Input)
        box.add_class("-visible")
        box.focus()

    def action_cancel_prompt(self) -> None:
        box = self.query_one("#prompt", Input)
        if box.has_class("-visible"):
            box.value = ""
            box.remove_class("-visible")
            self.query_one(BudgetTree).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        text = event.value.strip()
        self.action_cancel_prompt()
        if not text or not self.live or self.ended:
            return
        self.control.queue_switch(text)
        when = "when you resume" if self.control.paused else "before the next block"
        self.query_one(EventLog).add_note(f"prompt switch queued ({when}): {text!r}", "green")

    def action_profile(self) -> None:
        traced = getattr(self.run_result, "traces", None)
        where = getattr(self.run_result, "run_dir", None)
        if self._ended_notice("no blocks are left to profile" +
                              (f"; its recorded budget: lltrace budget {where}" if traced else "")):
            return
        prof = getattr(self.session, "profiler", None)
        tree = self.query_one(BudgetTree)
        if prof is None:
            self.notify("the run has not started yet", severity="warning")
            return
        if self.profiling in ("requested", "recording"):
            if self.profiling == "recording" and self._scheduled_window:
                self.notify("a --profile-blocks window is recording; it ends by itself", severity="warning")
                return
            prof.stop_request()
            self.profiling = "stopping"
            tree.border_subtitle = "stopping the window after the current block..."
            return
        if prof.recording:
            self.notify("a --profile-blocks window is recording; it ends by itself", severity="warning")
            return
        prof.request(self.profile_window_blocks)
        self.profiling = "requested"
        tree.border_subtitle = (f"a window of {count(self.profile_window_blocks, 'block')} opens at the next "
                                "block boundary (p stops it early)")

    def action_quit_run(self) -> None:
        if not self.live or self.ended:
            self.exit(self.run_result)
            return
        if self.quitting:   # a second q: leave now; run_live_app waits for the run directory
            self.exit(None)
            return
        self.quitting = True
        self.stop_run()
        self.state = ("stopping the script at its next block; saving the run directory (q again: leave now)"
                      if self.script else
                      "stopping after the current block; saving the run directory (q again: leave now)")

    def stop_run(self) -> None:
        """Thread-safe: ask the run to stop after its current block (a paused run resumes to stop)."""
        self.control.stop()
        session = self.bridge.session or self.session   # bridge.session is set first, in the worker
        if session is not None:
            session.request_stop()


def tui_available() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


@contextlib.contextmanager
def native_stderr_captured():
    """While the TUI owns the terminal, native libraries' writes to fd 2 (Kineto's "USDT:"
    lines at each profiler start/stop, CUDA / inductor warnings) would land on the screen:
    send them to a temp file and print them after the TUI closes. Textual draws through
    `sys.__stderr__`, which gets a duplicate of the terminal's descriptor meanwhile."""
    if not (sys.__stderr__ is not None and sys.__stderr__.isatty()):
        yield
        return
    sys.__stderr__.flush()
    saved_obj, term_fd = sys.__stderr__, os.dup(2)
    log = tempfile.TemporaryFile(mode="w+b")
    os.dup2(log.fileno(), 2)
    sys.__stderr__ = os.fdopen(os.dup(term_fd), "w", encoding=saved_obj.encoding, errors="replace")
    try:
        yield
    finally:
        sys.__stderr__.flush()
        sys.__stderr__.close()
        sys.__stderr__ = saved_obj
        os.dup2(term_fd, 2)
        os.close(term_fd)
        log.seek(0)
        captured = log.read().decode(errors="replace")
        log.close()
        if captured:
            saved_obj.write(captured)
            saved_obj.flush()


def init_profiler_here() -> None:
    """Kineto initializes on first use and expects to stay on that thread; the run profiles
    from a worker thread. Initializing it here (the main thread) keeps that one-time cost out
    of the first profiled block and Kineto's "External init callback" error off the screen."""
    from torch.profiler import profile

    from lltrace.capture.profiler import activities, native_stderr_to

    # its start/stop lines say nothing about the run (which has no directory yet): dropped
    with native_stderr_to(os.devnull), profile(activities=activities()):
        pass


def run_live_app(pipeline_or_factory: Any | Callable[[], Any], session_kwargs: dict[str, Any], *,
                 notes: Sequence[str] = (), budget_ms: float = FRAME_BUDGET_MS,
                 profile_window_blocks: int = 4, doctor: bool = True) -> Any:
    """See the module docstring. Returns the session's RunResult (None if nothing ran)."""
    app = LltraceApp(feed=LiveFeed(pipeline_or_factory, session_kwargs, doctor=doctor), notes=notes,
                     budget_ms=budget_ms, profile_window_blocks=profile_window_blocks)
    run_to_end(app, "finishing the current block")
    saved_message(app)
    if app.run_error is not None:
        raise app.run_error
    return app.run_result


def run_to_end(app: LltraceApp, stopping: str) -> None:
    """Run the app until the user leaves it, then wait for its run to finish the block it is in
    (saying so: the screen is gone by then), so that the run directory is final on return."""
    with native_stderr_captured():
        init_profiler_here()
        try:
            app.run()
        finally:
            app.stop_run()
    if not app.done.is_set():
        print(f"lltrace: {stopping} and saving the run directory...", file=sys.stderr, flush=True)
        app.done.wait()


def saved_message(app: LltraceApp, file: Any = None) -> None:
    """After the TUI left the screen: where the run was saved (the screen that said so is gone)."""
    result, error = app.run_result, app.run_error
    out = file or (sys.stderr if error is not None else sys.stdout)
    if result is not None:
        print(f"lltrace: run {result.status} ({result.message}); saved in {result.run_dir}", file=out)
        print(f"next: lltrace budget {result.run_dir}   (or lltrace view {result.run_dir})", file=out, flush=True)
        return
    rd = getattr(getattr(app.session, "run_dir", None), "path", None)
    if rd is not None:          # the run failed: its directory is final all the same
        print(f"lltrace: the run failed; what it recorded is in {rd}", file=out, flush=True)
    elif error is None:
        print("lltrace: quit before the run started; nothing was saved", file=out, flush=True)


def run_view_app(path: str | Path | Any) -> None:
    """`path`: a run directory, trace or budget file, or a RecordedRun already read (with its budget)."""
    LltraceApp(feed=RecordedFeed(path)).run()
