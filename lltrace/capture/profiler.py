"""Profiler windows: torch.profiler over a range of blocks, or started/stopped on demand.

A profiled minute is gigabytes (docs/DESIGN.md §3), so lltrace records a window of blocks:
`--profile-blocks 3:6` records blocks 3, 4 and 5 after the warm-up blocks ran unprofiled. The
window is a torch.profiler schedule driven by one `step()` per block. The live TUI can also
`request(n)` a window of n blocks from the next block on, or `stop_request()` one early.

Each window is written atomically into the run directory as `trace.json.gz` (later windows
`trace-2.json.gz`, ...). At the start of a window an `ll/clock_sync` marker is recorded and the
(time_ns, perf_counter_ns) pair taken at that instant is kept in `clock_sync`, so other tools
can align the Kineto clock with wall time and with the run's host clock.

Kineto (C++) writes a line to stderr each time a profiler starts or stops ("USDT: ...
profiler_start"). Every call into torch.profiler here runs inside `native_stderr_to(log)`, which
points fd 2 at the run directory's `profiler.log` for that call, so those lines are kept with
the run instead of reaching the user's terminal.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch.profiler import ProfilerAction, ProfilerActivity, profile, record_function, schedule

from lltrace import names
from lltrace.capture.events import EventSink, RunEvent, TimeBase
from lltrace.capture.syncs import SyncSites
from lltrace.errors import LltraceError

CLOCK_SYNC = names.CLOCK_SYNC
PROFILER_LOG = "profiler.log"   # in the run directory: what Kineto wrote to stderr


@contextlib.contextmanager
def native_stderr_to(path: Path | str | None) -> Iterator[None]:
    """Inside, file descriptor 2 is appended to `path`: what C/C++ code writes to stderr (Kineto's
    USDT lines) lands there. Python's sys.stderr is flushed on the way in and out, so its writes
    keep their order. fd 2 is restored whatever happens inside. `path` None: no redirection.
    Hand-written with os.dup2 because the writers are native: contextlib.redirect_stderr only
    swaps the Python object."""
    if path is None:
        yield
        return
    existed = os.path.lexists(path)
    try:
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:          # a run directory that cannot take the log: leave stderr alone
        yield
        return
    _flush_stderr()
    saved = os.dup(2)
    try:
        os.dup2(target, 2)
        yield
    finally:
        _flush_stderr()
        os.dup2(saved, 2)
        os.close(saved)
        empty = os.fstat(target).st_size == 0
        os.close(target)
        if empty and not existed:     # nothing was written: no empty log in the run directory
            with contextlib.suppress(OSError):
                os.unlink(path)


def _flush_stderr() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):   # closed or broken: nothing buffered to keep in order
            pass


def check_blocks(blocks: Sequence[int] | None, num_blocks: int | None = None) -> tuple[int, int] | None:
    """`(3, 6)` -> (3, 6): record blocks 3, 4, 5; None -> None. Raises LltraceError when the range
    is empty, negative, or (with `num_blocks`) ends after the run's last block."""
    if blocks is None:
        return None
    try:
        start, stop = (int(b) for b in blocks)
    except (TypeError, ValueError):
        raise LltraceError(f"a profiler window is (start, stop) blocks, got {blocks!r}") from None
    if start < 0 or stop <= start:
        raise LltraceError(f"profiler window blocks {start}:{stop}: need 0 <= start < stop")
    if num_blocks is not None and stop > num_blocks:
        raise LltraceError(f"profiler window blocks {start}:{stop} end after the run's last block ({num_blocks} blocks)",
                           f"stop at block {num_blocks} at most, or run more blocks")
    return start, stop


def activities() -> list[ProfilerActivity]:
    acts = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(ProfilerActivity.CUDA)
    return acts


def write_trace_gz(prof: profile, path: Path) -> Path:
    """Export `prof`'s Chrome trace to `path` (.json.gz) atomically: temp files + os.replace."""
    tmp_json = path.with_name(f".{path.name}.tmp.json")
    tmp_gz = path.with_name(f".{path.name}.tmp")
    try:
        prof.export_chrome_trace(str(tmp_json))
        # gzip by hand (not torch's .gz export) for level 6: much faster than 9 on large traces.
        with open(tmp_json, "rb") as fin, gzip.open(tmp_gz, "wb", compresslevel=6) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(tmp_gz, path)
    finally:
        for tmp in (tmp_json, tmp_gz):
            tmp.unlink(missing_ok=True)
    return path


class ProfilerWindow:
    """Owns at most one torch.profiler at a time; `step()` is called once per finished block."""

    def __init__(self, out_dir: Path | str, *, blocks: tuple[int, int] | None = None,
                 record_shapes: bool = False, profile_memory: bool = False,
                 sinks: Iterable[EventSink] = (),
                 on_clock_sync: Callable[[TimeBase], None] | None = None):
        self.out_dir = Path(out_dir)
        self.blocks = blocks
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.sinks = list(sinks)
        self.on_clock_sync = on_clock_sync
        self.traces: list[Path] = []
        self.clock_sync: TimeBase | None = None
        self.windows: list[dict] = []          # {"blocks": [start, stop], "file", "partial"}
        self._prof: profile | None = None
        self._mode: str | None = None          # "schedule" | "demand"
        self._block = 0                        # index of the block about to run
        self._window_start: int | None = None
        self._demand_left = 0
        self._requested: int | None = None
        self._stop_requested = False
        self._lock = threading.Lock()
        self._closing = False
        self._saved = False
        self._mid_block = False
        self._syncs = None                     # SyncSites while a window records

    # -- state ----------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._prof is not None and self._prof.current_action in (
            ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE)

    def state(self) -> str:
        """"recording", "idle" (no profiler is prepared: another one may start) or "busy"
        (warming up: Kineto is prepared for this window, a second profiler cannot start)."""
        if self.recording:
            return "recording"
        if self._prof is None or self._prof.current_action == ProfilerAction.NONE:
            return "idle"
        return "busy"

    def _new_profile(self, sched=None) -> profile:
        return profile(activities=activities(), schedule=sched, on_trace_ready=self._trace_ready,
                       record_shapes=self.record_shapes, profile_memory=self.profile_memory,
                       with_stack=False)

    # -- driving --------------------------------------------------------------------------------
    def start(self) -> None:
        """Call before the run starts (block 0): arms the scheduled window, if any."""
        if self.blocks is None:
            return
        start, stop = self.blocks
        # The schedule counts steps (= blocks): skip the warm-up blocks, then one warm-up step.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*warmup.*")  # a window at block 0 has none
            sched = schedule(wait=max(start - 1, 0), warmup=1 if start >= 1 else 0, active=stop - start,
                             repeat=1)
            self._prof = self._new_profile(sched)
            self._mode = "schedule"
            with self._native_log():
                self._prof.start()
        self._maybe_window_opened()

    def step(self) -> None:
        """Call after each block is enqueued (its regions closed)."""
        self._block += 1
        if self._prof is not None and self._mode == "schedule":
            with self._native_log():
                self._prof.step()  # saves the window (via _trace_ready) at its last block
            if self._saved:
                self._release()
            else:
                self._maybe_window_opened()
        elif self._prof is not None and self._mode == "demand":
            self._demand_left -= 1
            with self._lock:
                stop, self._stop_requested = self._stop_requested, False
            if self._demand_left <= 0 or stop:
                with self._native_log():
                    self._prof.stop()  # -> _trace_ready
                self._release()
        with self._lock:
            n, self._requested = self._requested, None
        if n and self._prof is None:
            self._prof = self._new_profile()
            self._mode = "demand"
            self._demand_left = n
            with self._native_log():
                self._prof.start()
            self._maybe_window_opened()

    def request(self, n_blocks: int) -> None:
        """Thread-safe: record the next `n_blocks` blocks (ignored while a window is open)."""
        if n_blocks < 1:
            raise LltraceError("a profiler window needs at least one block")
        with self._lock:
            self._requested = n_blocks

    def stop_request(self) -> None:
        """Thread-safe: end an on-demand window at the next block boundary."""
        with self._lock:
            self._stop_requested = True

    def close(self, mid_block: bool = False) -> None:
        """Stop whatever is open; a window cut short is still written (marked partial).
        `mid_block`: a block was in progress (interrupted run); it is in the trace, cut short."""
        self._closing = True
        self._mid_block = mid_block
        if self._prof is not None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ii]ncorrect schedule.*")  # stopped in warm-up
                with self._native_log():
                    self._prof.stop()  # a recording profiler saves what it has through _trace_ready
            self._release()

    # -- internals ------------------------------------------------------------------------------
    def _native_log(self):
        """Kineto's stderr lines of this call go to the run directory's profiler.log."""
        return native_stderr_to(self.out_dir / PROFILER_LOG if self.out_dir.is_dir() else None)

    def _maybe_window_opened(self) -> None:
        if self._window_start is None and self.recording:
            self._window_start = self._block
            self._mark_clock_sync()
            self._syncs = SyncSites(cuda=torch.cuda.is_initialized())   # the pipeline's device
            self._syncs.start()
            self._emit(RunEvent("profile_window", f"profiling from block {self._block}",
                                {"phase": "start", "block": self._block,
                                 "blocks": list(self.blocks) if self._mode == "schedule" else None}))

    def _stop_syncs(self) -> None:
        if self._syncs is not None:
            self._syncs.stop()
            self._syncs = None

    def _release(self) -> None:
        self._stop_syncs()
        self._prof, self._mode, self._window_start, self._saved = None, None, None, False

    def _mark_clock_sync(self) -> None:
        base = TimeBase.now()
        with record_function(CLOCK_SYNC):  # zero-length: its ts in the trace <-> `base`
            pass
        self.clock_sync = base
        if self.on_clock_sync is not None:
            self.on_clock_sync(base)

    def _trace_ready(self, prof: profile) -> None:
        self._stop_syncs()
        start = self._window_start if self._window_start is not None else self._block
        stop = self._block + 1 if self._closing and self._mid_block else self._block
        n = len(self.traces) + 1
        path = self.out_dir / ("trace.json.gz" if n == 1 else f"trace-{n}.json.gz")
        write_trace_gz(prof, path)
        self.traces.append(path)
        self._saved = True
        window = {"blocks": [start, stop], "file": path.name, "partial": self._closing}
        self.windows.append(window)
        self._emit(RunEvent("profile_window", f"wrote {path.name} (blocks {start}..{stop - 1}"
                                              f"{', cut short' if self._closing else ''})",
                            {"phase": "saved", **window, "bytes": path.stat().st_size}))

    def _emit(self, event: RunEvent) -> None:
        for sink in self.sinks:
            sink(event)
