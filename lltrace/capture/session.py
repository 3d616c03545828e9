"""Drive a streaming pipeline with every capture tool on, into one run directory.

`run_session(pipeline, ...)` = observer + frame clock + recompile monitor + profiler window
(+ py-spy) around `pipeline.start(prompt)`, `switch_prompt(...)` and `generate_block()` calls.
Whatever happens (normal end, Ctrl-C / SIGTERM, an exception), the run directory is finalized:
frames and events so far, summary.json, meta.json with the status and how the run ended, and
the profiler window cut short if it was open.
"""
from __future__ import annotations

import contextlib
import resource
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from lltrace.capture import provenance
from lltrace import names
from lltrace.capture.events import RunEvent, TimeBase
from lltrace.capture.frame_clock import ClockStats, FrameClock, FrameRecord, SwitchRecord
from lltrace.capture.graph_capture import GraphCaptureRecorder
from lltrace.capture.hooks import DEFAULT_PATTERNS, InstrumentHandle, instrument_module, wrap_method
from lltrace.capture.meta import build_meta
from lltrace.capture.observer import CaptureObserver
from lltrace.capture.profiler import ProfilerWindow, check_blocks
from lltrace.capture.pyspy import PySpyRecorder
from lltrace.capture.recompiles import RecompileMonitor
from lltrace.capture.regions import LEVELS, check_level, enabled_at
from lltrace.capture.rundir import RunDirectory, summary_from_stats, write_json_atomic
from lltrace.errors import LltraceError
from lltrace.words import count
from lltrace.pipeline.vae import video_frames


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so the run directory is finalized."""


def blocks_for_frames(frames: int, frames_per_block: int) -> int:
    """How many blocks make at least `frames` video frames."""
    if frames < 1:
        raise LltraceError(f"a run needs at least one video frame (got {frames})")
    n, made = 0, 0
    while made < frames:
        made += video_frames(frames_per_block, first_block=n == 0)
        n += 1
    return n


def switch_block(frame: int, frames_per_block: int) -> int:
    """The block before which a switch asked for at video frame `frame` happens: the first block
    whose frames start at or after `frame` (frames of a block come out together)."""
    n, first = 0, 0
    while first < frame:
        first += video_frames(frames_per_block, first_block=n == 0)
        n += 1
    return n


@dataclass
class RunResult:
    run_dir: Path
    status: str                       # completed | interrupted | error
    reason: str
    message: str
    stats: ClockStats
    summary: dict[str, Any]
    traces: list[Path] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)
    instrumented: list[tuple[str, str]] = field(default_factory=list)


def _call(listener: Any, method: str, *args) -> None:
    fn = getattr(listener, method, None)
    if fn is not None:
        fn(*args)


class Session:
    """One run. Attributes (clock, profiler, monitor, run_dir) are live for a TUI to read;
    `request_stop()` and `profiler.request(n)` may be called from another thread.

    Listeners are objects with any of: on_frame(FrameRecord), on_event(RunEvent),
    on_switch(SwitchRecord), on_block(BlockOutput), on_end(RunResult).

    `next_switch(block) -> str | None` (the live TUI's hook) is called in the run's thread
    before each block after the first: it returns a prompt to switch to before that block (it
    replaces a scheduled switch there), or None. It may block: a paused live view waits in it.

    Regions: at level "layer"/"op" the session hooks `pipeline.generator` by module name
    (`patterns`), wraps `pipeline.kv_cache.update` as ll/kv_update, and calls
    `instrument(pipeline, level) -> InstrumentHandle` for anything else; all removed at the end.
    """

    def __init__(self, pipeline: Any, *, num_blocks: int | None, prompt: str | None,
                 switches: dict[int, str] | None = None,
                 run_dir: RunDirectory | Path | str | None = None,
                 profile_blocks: Sequence[int] | None = None,
                 regions_level: str = "op", py_spy: bool = False,
                 listeners: Iterable[Any] = (), record_shapes: bool = False,
                 patterns: Sequence[tuple[str, str]] = DEFAULT_PATTERNS,
                 command: list[str] | None = None, handle_signals: bool = True,
                 instrument: Callable[[Any, str], InstrumentHandle] | None = None,
                 next_switch: Callable[[int], str | None] | None = None, kernel_map: bool = True):
        if num_blocks is not None and num_blocks < 1:
            raise LltraceError(f"a run needs at least one block (got {num_blocks})")
        self.switches = dict(switches or {})
        for b in self.switches:   # num_blocks None: the code driving the run decides (capture.script)
            if not (isinstance(b, int) and 0 < b < (num_blocks or 0)):
                raise LltraceError(f"a prompt switch before block {b} is outside the run",
                                   f"switch before a block in 1..{num_blocks - 1}")
        self.profile_blocks = check_blocks(profile_blocks, num_blocks)
        self.pipeline = pipeline
        self.num_blocks = num_blocks
        self.prompt = prompt
        self.regions_level = check_level(regions_level)
        self.py_spy = py_spy
        self.listeners = list(listeners)
        self.record_shapes = record_shapes
        self.patterns = patterns
        self.command = command
        self.handle_signals = handle_signals
        self.instrument = instrument
        self.next_switch = next_switch
        self.kernel_map = kernel_map   # provenance.json + CUDA-graph capture records (lltrace.trace.kernelmap)
        self._run_dir_arg = run_dir
        self._stop = threading.Event()
        self._signalled: int | None = None   # SIGINT / SIGTERM received during the run
        self._defer = 0                      # > 0: inside a profiler state change, interrupts wait
        self._pending = False                # an interrupt arrived while deferred: raise it after
        self.events: list[RunEvent] = []
        self.listener_errors: list[str] = []
        self.run_dir: RunDirectory | None = None
        self.clock: FrameClock | None = None
        self.profiler: ProfilerWindow | None = None
        self.monitor: RecompileMonitor | None = None
        self.observer: CaptureObserver | None = None
        self.provenance = None
        self.ended: tuple[str, str, str] | None = None
        self.result: RunResult | None = None

    # -- control from other threads ---------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish after the current block (status "interrupted", reason "stopped")."""
        self._stop.set()

    # -- fan-out ----------------------------------------------------------------------------------
    def _notify(self, method: str, *args) -> None:
        for listener in self.listeners:
            try:
                _call(listener, method, *args)
            except Exception as exc:  # a broken live view must not end the run
                if len(self.listener_errors) < 10:
                    self.listener_errors.append(f"{type(listener).__name__}.{method}: {exc!r}")

    def _event(self, event: RunEvent) -> None:
        self.events.append(event)
        if self.run_dir is not None:
            self.run_dir.append_event(event)
            if event.kind == "profile_window" and event.data.get("phase") == "saved" and self.provenance is not None:
                self._write_provenance()   # the live view builds this window's budget now
        self._notify("on_event", event)

    def _frame(self, rec: FrameRecord) -> None:
        self.run_dir.append_frame(rec)
        self._notify("on_frame", rec)

    def _switch(self, rec: SwitchRecord) -> None:
        self._event(RunEvent("prompt_switch", f"prompt {rec.prompt} showing after {rec.latency_ms:.1f} ms",
                             {"phase": "done", "prompt": rec.prompt, "latency_ms": rec.latency_ms,
                              "block": rec.block, "requested_s": rec.requested_s}))
        self._notify("on_switch", rec)

    # -- the run ----------------------------------------------------------------------------------
    def _open_run_dir(self) -> RunDirectory:
        arg = self._run_dir_arg
        if isinstance(arg, RunDirectory):
            return arg
        if arg is None:
            return RunDirectory.create(self._run_name())
        path = Path(arg)
        path.mkdir(parents=True, exist_ok=True)
        return RunDirectory(path)

    def _run_name(self) -> str:
        """The last part of the run id (`YYYYmmdd-HHMMSS-<name>`): the preset's name."""
        return getattr(getattr(self.pipeline, "preset", None), "name", None) or "run"

    def run(self) -> RunResult:
        """Drive the pipeline block by block; see the class doc."""
        with self.capturing():
            self._drive()
        return self.result

    @contextlib.contextmanager
    def capturing(self, *, reraise_interrupt: bool = False):
        """Every capture tool on around the body, which drives the run (`run()`: lltrace's own
        loop; lltrace.capture.script: the user's code). Whatever ends the body (its end, Ctrl-C /
        SIGTERM, an exception), the run directory is finalized and `self.result` is set; an
        exception is re-raised after that, a KeyboardInterrupt only with `reraise_interrupt`."""
        pipeline = self.pipeline
        rd = self.run_dir = self._open_run_dir()
        meta = build_meta(pipeline, run_id=rd.run_id, command=self.command, extra={
            "profile": {"blocks": list(self.profile_blocks)} if self.profile_blocks else None,
            "regions_level": self.regions_level,
            "num_blocks": self.num_blocks,
            **self._prompts_meta(),
        })
        rd.write_meta(**meta)
        rd.touch_lines()

        device = getattr(pipeline, "device", torch.device("cpu"))
        self.clock = FrameClock(device, on_frame=[self._frame], on_switch=[self._switch], on_start=[self._started])
        self.monitor = RecompileMonitor([self._event])
        self.profiler = ProfilerWindow(rd.path, blocks=self.profile_blocks, record_shapes=self.record_shapes,
                                       sinks=[self._event], on_clock_sync=self._clock_sync)
        self.graphs = GraphCaptureRecorder(rd.path, self.profiler.state, sinks=[self._event])
        self.observer = CaptureObserver(self.clock, level=self.regions_level, sinks=[self._event],
                                        graphs=self.graphs if self.kernel_map else None)
        self.provenance = provenance.recording() if self.kernel_map else None
        spy = PySpyRecorder(rd.path, sinks=[self._event]) if self.py_spy else None
        handle = InstrumentHandle()
        previous_observer = getattr(pipeline, "observer", None)
        self.ended = None                    # (status, reason, message) set by the body, else "completed"
        status, reason, message = "completed", "finished", ""
        error: BaseException | None = None
        interrupted: BaseException | None = None
        interrupted_in_block = False
        with self._signals():
            try:
                handle = self._instrument(pipeline)
                pipeline.observer = self.observer
                self.monitor.start()
                if spy is not None:
                    spy.start()
                rd.write_meta(pyspy={"file": "pyspy.json", "started": spy.started.to_json()}
                              if spy is not None and spy.started else None)
                with self._deferred():
                    self.profiler.start()
                if self.clock.cuda:   # the run's peak: not whatever ran before it (the TUI's doctor pre-flight)
                    torch.cuda.reset_peak_memory_stats(device)
                yield self
                if self.ended is not None:
                    status, reason, message = self.ended
                else:
                    message = count(self.observer.blocks_done, "block")
                self.observer.run_finished()
            except KeyboardInterrupt as exc:
                interrupted, interrupted_in_block = exc, self.observer.in_block
                status = "interrupted"
                reason = "sigterm" if isinstance(exc, Terminated) else "sigint"
                message = f"interrupted during block {self.observer.blocks_done}" if interrupted_in_block else \
                    f"interrupted after {count(self.observer.blocks_done, 'block')}"
            except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised below
                interrupted_in_block = self.observer.in_block
                status, reason = "error", type(exc).__name__
                message = str(exc) or type(exc).__name__
                error = exc
                self._event(RunEvent("note", f"run failed: {reason}: {message}",
                                     {"source": "session", "traceback": traceback.format_exc()[-4000:]}))
            finally:
                with self._patient_sigint():
                    self.result = self._finalize(status, reason, message, handle, previous_observer, spy,
                                                 interrupted_in_block)
        self._notify("on_end", self.result)
        if error is not None:
            raise error
        if interrupted is not None and reraise_interrupt:
            raise interrupted

    def _drive(self) -> None:
        """lltrace's own loop: start, then one `generate_block()` per block, switches before them."""
        pipeline = self.pipeline
        pipeline.start(self.prompt)  # -> observer.run_started() -> self._started(t0)
        saved_before = 0
        for block_no in range(self.num_blocks):
            live = self.next_switch(block_no) if self.next_switch is not None and block_no else None
            if self._signalled is not None:
                # The KeyboardInterrupt was caught by code it landed in (a library's
                # `except BaseException`, a finalizer): the signal still ends the run here.
                self.ended = ("interrupted", "sigterm" if self._signalled == signal.SIGTERM else "sigint",
                              f"interrupted after {count(block_no, 'block')}")
                self._event(RunEvent("note", f"{self.ended[1]} was swallowed inside block {block_no - 1}: "
                                             "stopped at the block boundary", {"source": "session"}))
                return
            if self._stop.is_set():
                self.ended = ("interrupted", "stopped", f"stopped after {count(block_no, 'block')}")
                return
            if live is not None:
                self._live_switch(block_no, live)
            if block_no in self.switches:
                pipeline.switch_prompt(self.switches[block_no])
            # a block the profiler warms up for or records, or the one after a window (it pays for the
            # trace's export), is no steady sample (FORMATS.md §2 `kind`)
            self.clock.profiled_next = self.profiler.state() != "idle" or saved_before < len(self.profiler.windows)
            saved_before = len(self.profiler.windows)
            out = pipeline.generate_block()
            with self._deferred():   # a window opening or being saved is not cut in half
                self.profiler.step()
            self._notify("on_block", out)

    def _live_switch(self, block_no: int, prompt: str) -> None:
        """A switch asked for during the run: recorded in meta.json like a scheduled one."""
        self.switches[block_no] = prompt
        self.run_dir.write_meta(**self._prompts_meta())

    def _prompts_meta(self) -> dict[str, Any]:
        """Prompts in the order they are shown (prompt index = position) and the switches."""
        order = sorted(self.switches.items())
        return {"prompts": [self.prompt, *(p for _, p in order)], "switches": {str(b): p for b, p in order}}

    def _instrument(self, pipeline: Any) -> InstrumentHandle:
        """Layer/op regions on the generator's modules, ll/kv_update on `pipeline.kv_cache.update`
        (a method, not a module), plus the caller's `instrument(pipeline, level)` if given."""
        handle = InstrumentHandle()
        if self.regions_level not in ("layer", "op"):
            return handle
        generator = getattr(pipeline, "generator", None)
        if isinstance(generator, torch.nn.Module):
            handle.add(instrument_module(generator, self.regions_level, self.patterns))
        if isinstance(generator, torch.nn.Module) and enabled_at("ll/self_attn", self.regions_level):
            # A regionally compiled block calls its attention between the compiled halves, outside
            # self_attn's forward (whose hook never fires): give that call its region.
            for block in getattr(generator, "blocks", ()):
                attn = getattr(block, "self_attn", None)
                if block.forward == getattr(block, "forward_split", None) and callable(getattr(attn, "attend", None)):
                    handle.add(wrap_method(attn, "attend", "ll/self_attn", self.regions_level))
        cache = getattr(pipeline, "kv_cache", None)
        if cache is not None and callable(getattr(cache, "update", None)):
            handle.add(wrap_method(cache, "update", names.name(names.KV_UPDATE), self.regions_level))
        if self.instrument is not None:
            handle.add(self.instrument(pipeline, self.regions_level))
        if handle.skipped:
            skipped = ", ".join(name for name, _ in handle.skipped[:4])
            more = f" and {len(handle.skipped) - 4} more" if len(handle.skipped) > 4 else ""
            self._event(RunEvent("note", f"no op regions inside compiled modules ({skipped}{more}): "
                                         f"{handle.skipped[0][1]}",
                                 {"source": "regions", "skipped": [n for n, _ in handle.skipped]}))
        return handle

    def _write_provenance(self) -> None:
        """provenance.json (FORMATS.md §2) when anything was compiled with inductor."""
        data = self.provenance.to_json() if self.provenance is not None else {"compiles": None}
        if data["compiles"]:
            write_json_atomic(self.run_dir.path / "provenance.json", data)

    def _started(self, t0: TimeBase) -> None:
        """The run's zero for `ready_s` (frames) and `t_s` (events): the request, on the host."""
        self.run_dir.set_time_base(t0)
        sync = {} if self.profiler.clock_sync else {"clock_sync": t0.to_json() | {"marker": None}}
        self.run_dir.write_meta(t0=t0.to_json(), **sync)

    def _clock_sync(self, base: TimeBase) -> None:
        self.run_dir.write_meta(clock_sync=base.to_json() | {"marker": names.CLOCK_SYNC})

    def _finalize(self, status: str, reason: str, message: str, handle: InstrumentHandle,
                  previous_observer: Any, spy: PySpyRecorder | None, mid_block: bool) -> RunResult:
        """Each step on its own: one failing must not cost the rest of the run directory."""
        rd = self.run_dir
        problems: list[str] = []

        def attempt(what: str, fn, *args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                problems.append(f"{what}: {type(exc).__name__}: {exc}")
                return None

        attempt("observer", setattr, self.pipeline, "observer", previous_observer)
        attempt("hooks", handle.remove)
        attempt("frame clock", self.clock.close, 60.0)
        stats = self.clock.stats()
        summary = summary_from_stats(stats, status=status, peak_mem_bytes=_peak_device_mem(self.clock),
                                     peak_host_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        # Status first: if exporting the trace is cut short too, the directory still says how it ended.
        attempt("summary", rd.write_summary, summary)
        attempt("meta", rd.write_meta, status=status, end={"reason": reason, "message": message})
        attempt("profiler", self.profiler.close, mid_block)
        if spy is not None:
            attempt("py-spy", spy.stop)
        attempt("recompile monitor", self.monitor.stop)
        attempt("provenance", self._write_provenance)
        for err in self.clock.errors[:5]:
            problems.append(f"frame clock: {err}")
        for err in self.listener_errors:
            problems.append(f"listener: {err}")
        for p in problems:
            attempt("event", self._event, RunEvent("note", p, {"source": "finalize"}))
        files = sorted(p.name for p in rd.path.iterdir() if not p.name.startswith("."))
        attempt("finalize", rd.finalize, status, reason, message, summary,
                profile={"blocks": list(self.profile_blocks)} if self.profile_blocks else None,
                profile_windows=self.profiler.windows, graph_captures=self.graphs.records or None, files=sorted(set(files) | {"meta.json", "summary.json"}))
        return RunResult(run_dir=rd.path, status=status, reason=reason, message=message, stats=stats,
                         summary=summary, traces=list(self.profiler.traces), events=list(self.events),
                         instrumented=list(handle.installed))

    def _interrupt(self, signum: int) -> BaseException:
        return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT -> KeyboardInterrupt, SIGTERM -> Terminated (a KeyboardInterrupt), in the main
        thread; the signal is also remembered, so one swallowed by the code it lands in still
        ends the run at the next block boundary. Inside `_deferred()` it is raised on leaving."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum, frame):
            self._signalled = signum
            if self._defer:
                self._pending = True
                return
            raise self._interrupt(signum)

        with _handling(on_signal):
            yield

    @contextlib.contextmanager
    def _deferred(self):
        """A Ctrl-C arriving in here waits until the block ends: torch.profiler's start / step
        change several pieces of state, and an exception between two leaves the window broken."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        if not self._defer and self._pending:
            self._pending = False
            raise self._interrupt(self._signalled or signal.SIGINT)


    @contextlib.contextmanager
    def _patient_sigint(self):
        """While the run directory is being finalized, a first Ctrl-C (or SIGTERM) only warns; a
        second aborts."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        presses = []

        def on_int(signum, frame):
            presses.append(signum)
            if len(presses) >= 2:
                raise KeyboardInterrupt()
            print("lltrace: saving the run directory; Ctrl-C again to abort", file=sys.stderr, flush=True)

        with _handling(on_int):
            yield


@contextlib.contextmanager
def _handling(handler):
    """`handler` for SIGINT and SIGTERM while inside, the previous ones back after. A signal
    ignored by the parent (a background job, nohup) stays ignored."""
    handled = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, handler) for s in handled}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _peak_device_mem(clock: FrameClock) -> int | None:
    if clock.cuda:
        try:
            return int(torch.cuda.max_memory_allocated(clock.device))
        except Exception:
            return None
    return None


def run_session(pipeline: Any, *, num_blocks: int, prompt: str, switches: dict[int, str] | None = None,
                run_dir: RunDirectory | Path | str | None = None,
                profile_blocks: Sequence[int] | None = None, regions_level: str = "op",
                py_spy: bool = False, listeners: Iterable[Any] = (), **kwargs: Any) -> RunResult:
    """Run `num_blocks` blocks of `pipeline` with full capture; see Session. `switches` maps a
    block index to the prompt switched to before that block. Returns the RunResult for a
    completed or interrupted run; an exception is re-raised after the run directory is final."""
    return Session(pipeline, num_blocks=num_blocks, prompt=prompt, switches=switches, run_dir=run_dir,
                   profile_blocks=profile_blocks, regions_level=regions_level, py_spy=py_spy,
                   listeners=listeners, **kwargs).run()


__all__ = ["LEVELS", "RunResult", "Session", "Terminated", "blocks_for_frames", "run_session",
           "switch_block"]
