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
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from lltrace.capture.events import TimeBase


@dataclass(frozen=True)
class FrameRecord:
    frame: int
    block: int
    prompt: int
    kind: str            # "first" | "steady" | "switch" | "profiled"
    ready_s: float
    latency_ms: float
    block_ms: float
    frames_in_block: int
    clock: str           # "cuda" | "host"

    def to_json(self) -> dict[str, Any]:
        # not dataclasses.asdict: its recursive copy is ~0.3 ms per frame on a busy CPU, paid on
        # the thread driving a host-bound pipeline (issue #15)
        d = {name: getattr(self, name) for name in _FRAME_FIELDS}
        for k in ("ready_s", "latency_ms", "block_ms"):
            d[k] = round(d[k], 6)
        return d

    @classmethod
    def from_json(cls, d: Any) -> "FrameRecord":
        """One line of frames.jsonl back; ValueError naming the field when it is not a record."""
        if not isinstance(d, dict):
            raise ValueError("not an object")
        out = {}
        for name, kind in _FRAME_FIELDS.items():
            v = d.get(name, "steady" if name == "kind" else "host" if name == "clock" else None)
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
                 "block_ms": float, "frames_in_block": int, "clock": str}


@dataclass(frozen=True)
class SwitchRecord:
    prompt: int
    requested_s: float
    latency_ms: float    # switch request -> end of the first block after it
    block: int


@dataclass(frozen=True)
class ClockStats:
    """A snapshot for live views and summary.json; ms-per-frame numbers are over steady frames
    (all frames until the first steady one arrives; `steady_frames` says which)."""

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


def clock_stats(frames: list[FrameRecord], switch_ms: list[float], clock: str) -> ClockStats:
    """The statistics of a list of frames (FrameClock.stats, and a recorded run without a
    summary.json): ms per frame over steady frames, else all; per block the same rule."""
    steady = [f.latency_ms for f in frames if f.kind == "steady"]
    per_frame = steady or [f.latency_ms for f in frames]
    rows = block_rows(frames)
    chosen = steady_blocks(frames)
    total_ms = sum(r["block_ms"] for r in chosen)
    total_frames = sum(r["frames"] for r in chosen)
    d = _dist(per_frame)
    first = [f for f in frames if f.block == 0]
    return ClockStats(clock=clock, frames=len(frames), blocks=len(rows), steady_frames=len(steady),
                      mean_ms=d["mean"], p50_ms=d["p50"], p95_ms=d["p95"], p99_ms=d["p99"],
                      fps=(1e3 * total_frames / total_ms) if total_ms > 0 else None,
                      first_frame_ms=first[0].ready_s * 1e3 if first else None, switch_ms=list(switch_ms),
                      block_ms=_dist([r["block_ms"] for r in chosen]),
                      last_ready_s=max((f.ready_s for f in frames), default=None),
                      profiled_frames=sum(1 for f in frames if f.kind == "profiled"))


def block_rows(frames: list[FrameRecord]) -> list[dict[str, Any]]:
    """One row per block: {"block", "kind", "block_ms", "latency_ms", "frames"} (frames of a
    block share their latency, so per-block values are the independent samples)."""
    blocks: dict[int, dict[str, Any]] = {}
    for f in frames:
        blocks.setdefault(f.block, {"block": f.block, "kind": f.kind, "block_ms": f.block_ms,
                                    "latency_ms": f.latency_ms, "frames": f.frames_in_block})
    return [blocks[b] for b in sorted(blocks)]


def steady_blocks(frames: list[FrameRecord]) -> list[dict[str, Any]]:
    """The blocks summary.json's ms_per_frame is over: steady ones, or all while there are none."""
    rows = block_rows(frames)
    return [r for r in rows if r["kind"] == "steady"] or rows


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
        if self.cuda:
            # Once, at the request (not on the hot path): with the device idle, the start event
            # completes at once, so device time since it is time since the request.
            torch.cuda.synchronize(self.device)
        self._mark("start")

    def boundary(self) -> None:
        """End of a text encode or recache: the next block's time starts here."""
        self._mark("boundary")

    def switch_requested(self, prompt_index: int) -> None:
        self._mark("switch", prompt_index)

    def block_done(self, block_index: int, num_frames: int, prompt_index: int, after_switch: bool) -> None:
        self._mark("block", block_index, num_frames, prompt_index, after_switch, self.profiled_next)
        self.profiled_next = False

    profiled_next = False
    """Set by the session before a block the profiler records (or that pays for saving its trace):
    its frames are `profiled`, not `steady`, so the steady statistics leave the profiler out."""

    def _mark(self, what: str, *args) -> None:
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
                block, n, prompt, after_switch, profiled = mark.args
                block_ms = t - self._boundary_ms
                self._boundary_ms = t
                kind = "first" if block == 0 else ("switch" if after_switch else
                                                   "profiled" if profiled else "steady")
                if after_switch and self._pending_switch is not None:
                    p, req = self._pending_switch
                    self._pending_switch = None
                    switch_out = SwitchRecord(prompt=p, requested_s=req / 1e3, latency_ms=t - req, block=block)
                    self._switches.append(switch_out)
                per_frame = block_ms / n if n else 0.0
                for _ in range(n):
                    rec = FrameRecord(self._frames, block, prompt, kind, t / 1e3, per_frame, block_ms, n, self.clock)
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
