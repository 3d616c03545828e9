"""Frame clock: when each video frame became available, without adding a sync to the hot path.

On CUDA a `torch.cuda.Event` is recorded at each boundary (run start, end of text encode /
recache, switch request, end of a block's decode) and a background thread polls
`event.query()`; once an event has completed its time is read with `elapsed_time` against the
run-start event. On CPU the same boundaries are host `perf_counter_ns` stamps (`clock: "host"`):
CPU work is synchronous, so the host time is when the work finished.

Definitions (docs/FORMATS.md §2, frames.jsonl): a block's time runs from the previous boundary
(end of the previous block, or of the text encode / recache before it) to the end of its
decode; each of its frames gets `block_ms / frames_in_block`. First-frame latency runs from
run start to the end of block 0, prompt-switch latency from the switch request to the end of
the first block after it.

Cold start: the clock also times, on the host, the one-time work done inside each block:
torch.compile (dynamo's compile callbacks: tracing, AOT autograd, inductor and its compile-time
autotuning) and CUDA-graph capture (`graph_capture()`, which the observer opens around each
capture, and inductor's cudagraph-tree recording). A block after block 0 that did any is `cold`,
not `steady` (FORMATS.md §2). The warm first-frame latency is the first frame's minus the
compile and capture time inside block 0.
"""
from __future__ import annotations

import collections
import contextlib
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from lltrace.capture.events import TimeBase


@dataclass(frozen=True)
class FrameRecord:
    frame: int
    block: int
    prompt: int
    kind: str            # "first" | "steady" | "switch" | "profiled" | "cold"
    ready_s: float
    latency_ms: float
    block_ms: float
    frames_in_block: int
    clock: str           # "cuda" | "host"
    compile_ms: float = 0.0         # host ms of torch.compile inside the block (cold start)
    graph_capture_ms: float = 0.0   # host ms of CUDA-graph capture inside the block

    def to_json(self) -> dict[str, Any]:
        # not dataclasses.asdict: its recursive copy is ~0.3 ms per frame on a busy CPU, paid on
        # the thread driving a host-bound pipeline (issue #15)
        d = {name: getattr(self, name) for name in _FRAME_FIELDS}
        for k in ("ready_s", "latency_ms", "block_ms", *_COLD_FIELDS):
            d[k] = round(d[k], 6)
        for k in _COLD_FIELDS:      # only blocks that did one-time work carry them
            if not d[k]:
                del d[k]
        return d

    @classmethod
    def from_json(cls, d: Any) -> "FrameRecord":
        """One line of frames.jsonl back; ValueError naming the field when it is not a record."""
        if not isinstance(d, dict):
            raise ValueError("not an object")
        out = {}
        for name, kind in _FRAME_FIELDS.items():
            v = d.get(name, "steady" if name == "kind" else "host" if name == "clock" else
                      0.0 if name in _COLD_FIELDS else None)
            if kind is int and not (isinstance(v, int) and not isinstance(v, bool)):
                raise ValueError(f"{name} is not an integer")
            if kind is float and not (isinstance(v, (int, float)) and not isinstance(v, bool)):
                raise ValueError(f"{name} is not a number")
            if kind is str and not isinstance(v, str):
                raise ValueError(f"{name} is not a string")
            if kind is not str and not (math.isfinite(v) and abs(v) <= _MAX_VALUE):
                raise ValueError(f"{name} is out of range")
            out[name] = float(v) if kind is float else v
        return cls(**out)


_MAX_VALUE = 2 ** 53   # beyond this a frame index or a time in ms / s is corrupt, not a run
_FRAME_FIELDS = {"frame": int, "block": int, "prompt": int, "kind": str, "ready_s": float, "latency_ms": float,
                 "block_ms": float, "frames_in_block": int, "clock": str, "compile_ms": float,
                 "graph_capture_ms": float}
_COLD_FIELDS = ("compile_ms", "graph_capture_ms")
COLD_WORK = ("compile", "graph_capture")    # what `cold_work(what)` times


@dataclass(frozen=True)
class SwitchRecord:
    prompt: int
    requested_s: float
    latency_ms: float    # switch request -> end of the first block after it
    block: int


@dataclass(frozen=True)
class ClockStats:
    """A snapshot for live views and summary.json; ms-per-frame numbers are over steady frames
    (while there are none, over `steady_blocks`' fallback; `steady_frames` says which)."""

    clock: str
    frames: int = 0
    blocks: int = 0
    steady_frames: int = 0
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    fps: float | None = None
    first_frame_ms: float | None = None
    switch_ms: list[float] = field(default_factory=list)
    block_ms: dict[str, float | None] = field(default_factory=dict)  # mean/p50/p95/p99 of steady blocks
    last_ready_s: float | None = None
    profiled_frames: int = 0    # frames of blocks the profiler recorded or saved after: not steady
    cold_frames: int = 0        # frames of blocks after block 0 that compiled or captured a graph
    warm_first_frame_ms: float | None = None   # first_frame_ms less block 0's compile + capture
    cold_start: dict[str, Any] = field(default_factory=dict)   # {"blocks", "compile_ms", "graph_capture_ms"}


def clock_stats(frames: list[FrameRecord], switch_ms: list[float], clock: str) -> ClockStats:
    """The statistics of a list of frames (FrameClock.stats, and a recorded run without a
    summary.json): ms per frame and per block over `steady_blocks(frames)`."""
    steady = [f.latency_ms for f in frames if f.kind == "steady"]
    rows = block_rows(frames)
    chosen = steady_blocks(frames)
    picked = {r["block"] for r in chosen}
    per_frame = [f.latency_ms for f in frames if f.block in picked]
    total_ms = sum(r["block_ms"] for r in chosen)
    total_frames = sum(r["frames"] for r in chosen)
    d = _dist(per_frame)
    first = [f for f in frames if f.block == 0]
    first_ms = first[0].ready_s * 1e3 if first else None
    cold = [r for r in rows if r["compile_ms"] or r["graph_capture_ms"]]
    warm = None
    if first_ms is not None:
        # What block 0 would have taken in a warm pipeline: its one-time work taken out. Other
        # one-time costs (graph warm-up runs, autotuning at a kernel's first launch, lazy
        # init) are not timed and stay in: an upper bound (FORMATS.md §2 summary.json).
        warm = max(0.0, first_ms - first[0].compile_ms - first[0].graph_capture_ms)
    return ClockStats(clock=clock, frames=len(frames), blocks=len(rows), steady_frames=len(steady),
                      mean_ms=d["mean"], p50_ms=d["p50"], p95_ms=d["p95"], p99_ms=d["p99"],
                      fps=(1e3 * total_frames / total_ms) if total_ms > 0 else None,
                      first_frame_ms=first_ms, switch_ms=list(switch_ms),
                      block_ms=_dist([r["block_ms"] for r in chosen]),
                      last_ready_s=max((f.ready_s for f in frames), default=None),
                      profiled_frames=sum(1 for f in frames if f.kind == "profiled"),
                      cold_frames=sum(1 for f in frames if f.kind == "cold"),
                      warm_first_frame_ms=warm,
                      cold_start={"blocks": [r["block"] for r in cold],
                                  "compile_ms": sum(r["compile_ms"] for r in cold),
                                  "graph_capture_ms": sum(r["graph_capture_ms"] for r in cold)})


def block_rows(frames: list[FrameRecord]) -> list[dict[str, Any]]:
    """One row per block: {"block", "kind", "block_ms", "latency_ms", "frames", "compile_ms",
    "graph_capture_ms"} (frames of a block share their latency, so per-block values are the
    independent samples)."""
    blocks: dict[int, dict[str, Any]] = {}
    for f in frames:
        blocks.setdefault(f.block, {"block": f.block, "kind": f.kind, "block_ms": f.block_ms,
                                    "latency_ms": f.latency_ms, "frames": f.frames_in_block,
                                    "compile_ms": f.compile_ms, "graph_capture_ms": f.graph_capture_ms})
    return [blocks[b] for b in sorted(blocks)]


def steady_blocks(frames: list[FrameRecord]) -> list[dict[str, Any]]:
    """The blocks summary.json's ms_per_frame is over: steady ones, or all while there are none.
    Not steady: block 0 (`first`), the block after a switch, blocks the profiler recorded or
    saved after (`profiled`), blocks that compiled or captured a CUDA graph (`cold`)."""
    rows = block_rows(frames)
    # Without steady blocks (early in a live run, or a short run), the next best are blocks that
    # are slowed by the profiler or a switch but did no one-time work; only then every block:
    # block 0 alone can be 30 s of compile and capture.
    return ([r for r in rows if r["kind"] == "steady"] or
            [r for r in rows if r["kind"] in ("profiled", "switch")] or rows)


def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    a = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


@dataclass
class _Mark:
    what: str                 # "start" | "boundary" | "switch" | "block"
    stamp: Any                # torch.cuda.Event or perf_counter_ns
    args: tuple = ()


class FrameClock:
    """Feed it the pipeline's boundaries; it emits FrameRecords to listeners as frames become ready.

    `device`: the pipeline's device; CUDA events are used iff it is a CUDA device.
    Listeners are called from the clock's thread on CUDA and from the caller on CPU;
    `on_start` gets the host time of the run's start (`origin`, the zero of `ready_s`).
    """

    def __init__(self, device: torch.device | str = "cpu", *,
                 on_frame: list[Callable[[FrameRecord], None]] | None = None,
                 on_switch: list[Callable[[SwitchRecord], None]] | None = None,
                 on_start: list[Callable[[TimeBase], None]] | None = None,
                 poll_interval_s: float = 0.001):
        import torch   # here, not at import: reading a run directory (budget, diff, view) needs no torch
        device = torch.device(device)
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self.clock = "cuda" if self.cuda else "host"
        self.device = device
        self.on_frame = list(on_frame or [])
        self.on_switch = list(on_switch or [])
        self.on_start = list(on_start or [])
        self.origin: TimeBase | None = None  # host (time_ns, perf_counter_ns) at the run's start
        self._poll = poll_interval_s
        self._lock = threading.Lock()
        # Resolved state (guarded by _lock).
        self._origin_ms: float | None = None   # host clock: origin in ms; cuda: 0 at the start event
        self._boundary_ms = 0.0
        self._pending_switch: tuple[int, float] | None = None
        self._frames = 0
        self._records: list[FrameRecord] = []             # every frame resolved so far
        self._switches: list[SwitchRecord] = []
        self.errors: list[str] = []
        # Cold work since the last block mark, host ms by COLD_WORK kind (guarded by _cold_lock:
        # dynamo's callbacks run on whichever thread compiles).
        self._cold = dict.fromkeys(COLD_WORK, 0.0)
        self._cold_lock = threading.Lock()
        self._dynamo_started: tuple[str, int] | None = None
        self._dynamo_hooked: Any = None                   # torch._dynamo.callback_handler, once hooked
        # CUDA: marks wait in order for the poller thread.
        self._queue: collections.deque[_Mark] = collections.deque()
        self._cv = threading.Condition()
        self._closing = False
        self._origin_event = None
        self._thread: threading.Thread | None = None
        if self.cuda:
            self._thread = threading.Thread(target=self._poll_loop, name="lltrace-frame-clock", daemon=True)
            self._thread.start()

    # -- boundaries, called on the hot path -----------------------------------------------------
    def run_started(self) -> None:
        import torch   # lazy, as in __init__
        if self.cuda:
            # Once, at the request (not on the hot path): with the device idle, the start event
            # completes at once, so device time since it is time since the request.
            torch.cuda.synchronize(self.device)
        self._hook_dynamo()
        self._mark("start")

    def boundary(self) -> None:
        """End of a text encode or recache: the next block's time starts here."""
        self._mark("boundary")

    def switch_requested(self, prompt_index: int) -> None:
        self._mark("switch", prompt_index)

    def block_done(self, block_index: int, num_frames: int, prompt_index: int, after_switch: bool) -> None:
        if self._dynamo_hooked is None:
            self._hook_dynamo()        # torch.compile imported mid-run: a dict lookup otherwise
        with self._cold_lock:
            cold, self._cold = self._cold, dict.fromkeys(COLD_WORK, 0.0)
        self._mark("block", block_index, num_frames, prompt_index, after_switch, self.profiled_next,
                   cold["compile"], cold["graph_capture"])
        self.profiled_next = False

    @contextlib.contextmanager
    def cold_work(self, what: str) -> Iterator[None]:
        """Around one-time work inside a block ("compile" | "graph_capture"): its host time goes
        to the block, which is then `cold` (not steady) and, for block 0, left out of the warm
        first-frame latency."""
        if what not in COLD_WORK:
            raise ValueError(f"cold work is one of {COLD_WORK}, not {what!r}")
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            self._add_cold(what, (time.perf_counter_ns() - start) / 1e6)

    def _add_cold(self, what: str, ms: float) -> None:
        with self._cold_lock:
            self._cold[what] += ms

    def _hook_dynamo(self) -> None:
        """Time every torch.compile through dynamo's compile start/end callbacks (the outermost
        compile only: they do not nest). Only when torch._dynamo is already imported: importing
        it costs a second, and nothing compiles without it."""
        dynamo = sys.modules.get("torch._dynamo")
        handler = getattr(dynamo, "callback_handler", None)
        if handler is None or self._dynamo_hooked is not None:
            return
        try:
            handler.register_start_callback(self._dynamo_start)
            handler.register_end_callback(self._dynamo_end)
        except Exception as exc:  # noqa: BLE001 - another torch: no compile timing, the clock goes on
            self.errors.append(f"compile callbacks: {exc}")
            return
        self._dynamo_hooked = handler

    def _dynamo_start(self, args: Any) -> None:
        trigger = getattr(getattr(args, "callback_trigger", None), "name", "")
        what = "graph_capture" if trigger == "CUDAGRAPH_RECORDING" else "compile"
        self._dynamo_started = (what, time.perf_counter_ns())

    def _dynamo_end(self, args: Any) -> None:
        started, self._dynamo_started = self._dynamo_started, None
        if started is not None:
            self._add_cold(started[0], (time.perf_counter_ns() - started[1]) / 1e6)

    def _unhook_dynamo(self) -> None:
        handler, self._dynamo_hooked = self._dynamo_hooked, None
        if handler is not None:
            for remove, fn in ((handler.remove_start_callback, self._dynamo_start),
                               (handler.remove_end_callback, self._dynamo_end)):
                with contextlib.suppress(ValueError):
                    remove(fn)

    profiled_next = False
    """Set by the session before a block the profiler records (or that pays for saving its trace):
    its frames are `profiled`, not `steady`, so the steady statistics leave the profiler out."""

    def _mark(self, what: str, *args) -> None:
        import torch   # lazy, as in __init__
        now = None
        if self.origin is None:  # the run's start on the host clock (normally run_started)
            self.origin = TimeBase.now()
            now = self.origin.perf_counter_ns
            for fn in self.on_start:
                fn(self.origin)
        if not self.cuda:
            self._resolve(_Mark(what, None, args), (now or time.perf_counter_ns()) / 1e6)
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))  # completes when the device gets here
        with self._cv:
            self._queue.append(_Mark(what, event, args))
            self._cv.notify_all()

    # -- resolution -----------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        import torch   # lazy, as in __init__
        try:
            if self.device.index is not None:
                torch.cuda.set_device(self.device.index)
        except Exception as exc:  # keep polling on the default device
            self.errors.append(f"set_device: {exc}")
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                mark = self._queue[0]
            try:
                if not mark.stamp.query():
                    time.sleep(self._poll)
                    continue
                if self._origin_event is None:
                    self._origin_event = mark.stamp
                ms = self._origin_event.elapsed_time(mark.stamp)
                self._resolve(mark, ms)
            except Exception as exc:  # a failed device must not hang flush(): drop the mark
                self.errors.append(f"{type(exc).__name__}: {exc}")
            with self._cv:
                self._queue.popleft()
                self._cv.notify_all()

    def _resolve(self, mark: _Mark, t_ms: float) -> None:
        frames_out: list[FrameRecord] = []
        switch_out: SwitchRecord | None = None
        with self._lock:
            if self._origin_ms is None:
                self._origin_ms = t_ms  # the first mark is the origin (run start)
                self._boundary_ms = 0.0
            t = t_ms - self._origin_ms
            if mark.what == "boundary":
                self._boundary_ms = t
            elif mark.what == "switch":
                if self._pending_switch is None:
                    self._pending_switch = (mark.args[0], t)
            elif mark.what == "block":
                block, n, prompt, after_switch, profiled, compile_ms, capture_ms = mark.args
                block_ms = t - self._boundary_ms
                self._boundary_ms = t
                kind = "first" if block == 0 else ("switch" if after_switch else
                                                   "cold" if compile_ms or capture_ms else
                                                   "profiled" if profiled else "steady")
                if after_switch and self._pending_switch is not None:
                    p, req = self._pending_switch
                    self._pending_switch = None
                    switch_out = SwitchRecord(prompt=p, requested_s=req / 1e3, latency_ms=t - req, block=block)
                    self._switches.append(switch_out)
                per_frame = block_ms / n if n else 0.0
                for _ in range(n):
                    rec = FrameRecord(self._frames, block, prompt, kind, t / 1e3, per_frame, block_ms, n, self.clock,
                                      compile_ms, capture_ms)
                    frames_out.append(rec)
                    self._records.append(rec)
                    self._frames += 1
        for rec in frames_out:
            for fn in self.on_frame:
                fn(rec)
        if switch_out is not None:
            for fn in self.on_switch:
                fn(switch_out)

    # -- reading --------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every recorded mark is resolved (on CUDA: the device has reached it)."""
        if not self.cuda:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._queue and self._thread is not None and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(0.05 if left is None else min(left, 0.05))
            return not self._queue

    def close(self, timeout: float | None = 30.0) -> bool:
        """Resolve what is pending (bounded by `timeout`) and stop the poller thread."""
        self._unhook_dynamo()
        done = self.flush(timeout)
        with self._cv:
            self._closing = True
            if not done:
                self._queue.clear()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return done

    @property
    def pending(self) -> int:
        return len(self._queue)

    def stats(self) -> ClockStats:
        """Thread-safe snapshot of everything resolved so far."""
        with self._lock:
            records, switches = list(self._records), [sw.latency_ms for sw in self._switches]
        return clock_stats(records, switches, self.clock)
