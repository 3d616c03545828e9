"""`lltrace export`: the run's Chrome trace plus lltrace's own tracks, for ui.perfetto.dev.

The trace's events are copied byte for byte (args, shapes, flows and all; a whole trace in
the same read that loads it), optionally trimmed to whole blocks (`--blocks 3:6`) or a time
window (`--window-ms`), and a process "lltrace" is added with:
  tid 1 "video frames"     one slice per block, one nested slice per video frame
  tid 2 "prompt switches"  request -> first frame of the new prompt
  tid 3 "run events"       instant markers: recompiles, graph breaks, prompt switches, ...
  tid 4 "regions (host)"   the region ranges alone (no aten ops in between)
  tid 5 "regions (GPU)"    each region from its first to its last GPU activity
  counter "frame latency"  ms per video frame, one sample per block
All times are on the trace's clock (lltrace.export.timeline). Output follows the Trace Event
Format (lltrace.export.chrome_format validates it), is written atomically (temp file + rename) and
gzipped when the name ends in .gz (lltrace.trace.deflate: zlib-ng / python-isal when installed).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np

from lltrace.capture.rundir import read_meta, read_run
from lltrace.errors import LltraceError
from lltrace.export import timeline as tl_mod
from lltrace.trace.deflate import DEFAULT_LEVEL, gzip_writer
from lltrace.trace.events import GPU_ACTIVITY, MAX_US, RUNTIME, Trace, lenient_event
from lltrace.trace.instances import measure
from lltrace.trace.jsonround import num, rounded
from lltrace.trace.loader import Source, load_trace, resolve_source
from lltrace.trace.ranks import rank_traces
from lltrace.trace.reader import read_events

BROWSER_LIMIT = 256 << 20     # uncompressed JSON above this is slow or too big for a browser tab
TRACK_FRAMES, TRACK_SWITCHES, TRACK_EVENTS, TRACK_REGIONS, TRACK_GPU_REGIONS = 1, 2, 3, 4, 5
TRACK_NAMES = {TRACK_FRAMES: "video frames", TRACK_SWITCHES: "prompt switches", TRACK_EVENTS: "run events",
               TRACK_REGIONS: "regions (host)", TRACK_GPU_REGIONS: "regions (GPU)"}
_GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset", "memcpy", "memset", "gpu_user_annotation"}


@dataclass(frozen=True)
class Window:
    start_us: float
    end_us: float
    label: str


@dataclass
class ExportResult:
    path: Path
    bytes: int                      # on disk (set once the file is in place)
    json_bytes: int                 # uncompressed
    gzip: bool
    events_read: int
    events_written: int             # trace events copied
    lltrace_events: dict[str, int]  # added, by track
    window: Window | None
    clock: str | None
    warnings: list[str] = field(default_factory=list)

    @property
    def total_events(self) -> int:
        return self.events_written + sum(self.lltrace_events.values())


# ----------------------------------------------------------------------------- window

def plan_window(trace: Trace, timeline: tl_mod.Timeline, blocks: tuple[int, int] | None,
                window_ms: tuple[float, float] | None) -> Window | None:
    """The part of the trace to keep: whole blocks [start, stop) or [start, end) ms from the
    trace's first event (one or the other), or None for all of it."""
    if blocks is not None and window_ms is not None:
        raise LltraceError("keep whole blocks or a time window, not both")
    if blocks is not None:
        have = sorted(timeline.blocks)
        if not have:
            raise LltraceError("this trace has no ll/block[i] regions to keep blocks of",
                               "it is not an lltrace run; keep a time window instead")
        want = range(*blocks)
        missing = [b for b in want if b not in timeline.blocks]
        if missing:
            raise LltraceError(f"blocks {blocks[0]}:{blocks[1]}: block(s) {', '.join(map(str, missing))} are not in "
                               f"this trace", f"it has blocks {_ranges(have)}")
        return Window(min(timeline.blocks[b][0] for b in want), max(timeline.blocks[b][1] for b in want),
                      f"blocks {blocks[0]}..{blocks[1] - 1}")
    if window_ms is not None:
        t0, t1 = trace.span_us
        start, end = t0 + window_ms[0] * 1e3, t0 + window_ms[1] * 1e3
        if start >= t1:
            raise LltraceError(f"the window {window_ms[0]:g}:{window_ms[1]:g} ms starts after the trace ends "
                               f"({(t1 - t0) / 1e3:.1f} ms long)")
        return Window(start, min(end, t1), f"{window_ms[0]:g}..{min(window_ms[1], (t1 - t0) / 1e3):g} ms")
    return None


def _ranges(v: list[int]) -> str:
    out, i = [], 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[j + 1] == v[j] + 1:
            j += 1
        out.append(str(v[i]) if i == j else f"{v[i]}..{v[j]}")
        i = j + 1
    return ", ".join(out)


# ----------------------------------------------------------------------------- filtering

class _ProbeArgs(msgspec.Struct):
    correlation: int | None = None


class _Probe(msgspec.Struct):
    """The fields the window filter looks at; the rest of the event stays raw bytes."""
    ph: str = ""
    cat: str = ""
    ts: float | None = None
    dur: float | None = None
    id: int | str | None = None
    args: _ProbeArgs | None = None


_PROBE = msgspec.json.Decoder(_Probe)
_ANY = msgspec.json.Decoder()


def _probe(raw) -> _Probe | None:
    try:
        return _PROBE.decode(raw)
    except (msgspec.DecodeError, RecursionError):   # odd field types: read loosely
        try:
            obj = _ANY.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        e = lenient_event(obj)
        if e is None:
            return None
        corr = e.args.correlation if e.args is not None else None
        return _Probe(e.ph, e.cat, e.ts, e.dur, e.id if isinstance(e.id, (int, str)) else None, _ProbeArgs(corr))


@dataclass
class _Filter:
    """Which events of the trace to keep for a window: host events overlapping it, GPU
    activities launched inside it (by correlation id, so a kernel that runs after the window's
    end stays with its launch), ac2g flows of those launches, metadata always."""
    window: Window | None
    corr: set[int]
    gpu_span: tuple[float, float] | None
    check_range: bool = False   # the loader left events out (corrupt times, unreadable): so does the copy

    def keep(self, p: _Probe) -> bool:
        w = self.window
        if p.ph == "M":
            return True
        ts = p.ts
        if self.check_range and ts is not None and not (-MAX_US <= ts <= MAX_US and (p.dur or 0.0) <= MAX_US):
            return False
        if w is None or ts is None:
            return True
        corr = p.args.correlation if p.args is not None else None
        if p.ph == "X":
            dur = p.dur or 0.0
            cat = p.cat.lower()
            if cat in _GPU_CATS:
                if corr is not None and corr >= 0 and cat != "gpu_user_annotation":
                    return corr in self.corr
                lo, hi = self.gpu_span or (w.start_us, w.end_us)
                mid = ts + dur / 2
                return lo <= mid <= hi
            return ts < w.end_us and ts + dur > w.start_us or (dur == 0 and w.start_us <= ts <= w.end_us)
        if p.ph in ("s", "t", "f") and p.cat == "ac2g" and isinstance(p.id, int):
            return p.id in self.corr
        return w.start_us <= ts <= w.end_us


def _make_filter(trace: Trace, window: Window | None) -> _Filter:
    check_range = bool(trace.stats.get("out_of_range") or trace.stats.get("skipped"))
    if window is None:
        return _Filter(None, set(), None, check_range)
    x = trace.x
    cat = x["cat"]
    rt = np.nonzero(cat == RUNTIME)[0]
    s, e = x["ts"][rt], x["ts"][rt] + x["dur"][rt]
    inside = rt[(s < window.end_us) & (e > window.start_us)]
    corr = {int(c) for c in x["corr"][inside] if c >= 0}
    gpu = np.nonzero(np.isin(cat, np.array(GPU_ACTIVITY, dtype=np.uint8)))[0]
    launched = gpu[np.isin(x["corr"][gpu], np.fromiter(corr, dtype=np.int64, count=len(corr)))] if corr else gpu[:0]
    span = None
    if len(launched):
        span = (float(x["ts"][launched].min()), float((x["ts"][launched] + x["dur"][launched]).max()))
    return _Filter(window, corr, span, check_range)


# ----------------------------------------------------------------------------- writing

class _WriteError(Exception):
    """An OSError of the output file, carried past read_events' `except OSError`."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


class _Writer:
    """Streams `{header..., "traceEvents": [e, e, ...], trailer...}` into a binary file.
    The header may come later (`start`): the one-pass export learns it while reading."""

    def __init__(self, f: BinaryIO, header: dict[str, Any] | None = None):
        self.f = f
        self.n = 0
        self.bytes = 0
        self.header: dict[str, Any] | None = None
        if header is not None:
            self.start(header)

    def start(self, header: dict[str, Any]) -> None:
        if self.header is not None:   # a later profile window of the run: its keys are the first's
            return
        self.header = {k: v for k, v in header.items() if k != "traceEvents"}
        self._put(b"{" + b"".join(_enc_json(k) + b":" + _enc_json(v) + b"," for k, v in self.header.items())
                  + b'"traceEvents":[\n')

    def _put(self, b) -> None:
        try:
            self.f.write(b)
        except OSError as exc:   # e.g. disk full; inside the reader's callback, which would call it "cannot read"
            raise _WriteError(exc) from exc
        self.bytes += len(b)

    def event(self, raw) -> None:
        if self.n:
            self._put(b",\n")
        self._put(raw)
        self.n += 1

    def events(self, data, n: int) -> None:
        """`n` events as the trace has them, comma-separated."""
        if self.n:
            self._put(b",\n")
        self._put(data)
        self.n += n

    def close(self, trailer: dict[str, Any]) -> None:
        self.start({})
        self._put(b"\n]" + b"".join(b"," + _enc_json(k) + b":" + _enc_json(v) for k, v in trailer.items()) + b"}\n")


def _enc_json(v: Any) -> bytes:
    return json.dumps(v, allow_nan=False, separators=(",", ":")).encode()


class _Sink:
    """Receives the reader's batches: raw events (fast path) or RawEvents (its lenient slow
    path, which keeps only the core fields) and copies those the filter keeps."""

    def __init__(self, writer: _Writer, flt: _Filter):
        self.writer = writer
        self.flt = flt
        self.total = 0
        self.kept = 0
        self.reencoded = 0
        self.invalid = 0

    def add(self, batch: list) -> None:
        self.total += len(batch)
        everything = self.flt.window is None and not self.flt.check_range
        for item in batch:
            if isinstance(item, msgspec.Raw):
                if everything:           # no window: copy without looking inside
                    self.writer.event(memoryview(item))
                    self.kept += 1
                    continue
                p = _probe(item)
                if p is None:
                    self.invalid += 1
                    continue
                if self.flt.keep(p):
                    self.writer.event(memoryview(item))
                    self.kept += 1
                continue
            # a RawEvent from the lenient path: re-encode what it has
            corr = item.args.correlation if item.args is not None else None
            p = _Probe(item.ph, item.cat, item.ts, item.dur, item.id if isinstance(item.id, (int, str)) else None,
                       _ProbeArgs(corr))
            if not self.flt.keep(p) or item.ts is None or not math.isfinite(item.ts):
                continue
            ev = {"ph": item.ph, "cat": item.cat, "name": item.name, "pid": item.pid, "tid": item.tid, "ts": item.ts}
            if item.ph == "X":
                ev["dur"] = item.dur
            if item.id is not None:
                ev["id"] = item.id
            if item.args is not None:
                args = {"correlation": item.args.correlation, "External id": item.args.external_id,
                        "name": item.args.name}
                ev["args"] = {k: v for k, v in args.items() if v is not None}
            self.writer.event(_enc_json(ev))
            self.kept += 1
            self.reencoded += 1

    def count_invalid(self, n: int = 1) -> None:
        self.total += n
        self.invalid += n

    # the reader's Copy protocol (one-pass export, no window: everything is copied)
    def start(self, top: dict[str, Any]) -> None:
        self.writer.start(top)

    def chunk(self, data: memoryview, n: int) -> None:
        self.writer.events(data, n)
        self.total += n
        self.kept += n


def _copy_events(src: Source, writer: _Writer, flt: _Filter, warnings: list[str],
                 progress: Callable[[int, int], None] | None) -> _Sink:
    sink = _Sink(writer, flt)
    for path in src.traces:
        result = read_events(path, sink, progress, raw=True)
        if result.partial:
            warnings.append(f"{path.name}: {result.stop_reason}; exported the events before it")
    if sink.reencoded:
        warnings.append(f"{sink.reencoded} events with values JSON cannot hold (NaN, invalid UTF-8) were re-encoded "
                        "with their core fields only")
    return sink


# ----------------------------------------------------------------------------- lltrace tracks

def _lltrace_pid(trace: Trace) -> int:
    ints = [v for v in trace.ids if isinstance(v, int)] + [v for v in trace.process_names if isinstance(v, int)]
    return max(ints, default=0) + 1


def _us(ns: int) -> float:
    """µs with ns precision, as JSON writes it (4584764718451.66)."""
    return ns / 1e3


def _nested(slices: list[tuple[int, int, Any]]) -> tuple[list[tuple[int, int, Any]], int]:
    """Keep the slices (start, end in ns) that nest: a track's slices may not overlap
    partially; count the rest."""
    out, dropped, stack = [], 0, []
    for s, e, item in sorted(slices, key=lambda t: (t[0], -(t[1] - t[0]))):
        while stack and stack[-1] <= s:
            stack.pop()
        if stack and e > stack[-1]:
            dropped += 1
            continue
        stack.append(e)
        out.append((s, e, item))
    return out, dropped


def lltrace_events(trace: Trace, timeline: tl_mod.Timeline, window: Window | None, pid: int,
                   warnings: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The events of the lltrace process inside the window, or inside the trace's span without
    one (a run profiled for 3 of 100 blocks gets 3 blocks of frames, not a timeline 30x longer
    than its kernels). Times are integer ns of the trace clock until written as µs."""
    lo_us, hi_us = (window.start_us, window.end_us) if window else trace.span_us
    lo, hi = math.floor(lo_us * 1e3), math.ceil(hi_us * 1e3)

    def inside(s: int, e: int) -> bool:
        return s < hi and e > lo or (s == e and lo <= s <= hi)

    out: list[dict[str, Any]] = []
    counts = {"frames": 0, "blocks": 0, "switches": 0, "markers": 0, "regions": 0, "gpu_regions": 0, "counter": 0}

    def x(tid: int, ts_ns: int, dur_ns: int, name: str, cat: str, args: dict[str, Any]) -> None:
        out.append({"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": _us(ts_ns),
                    "dur": _us(max(dur_ns, 0)), "args": rounded(args, other=str)})

    for sl in timeline.frames:
        if sl.ts_ns >= 0 and inside(sl.ts_ns, sl.ts_ns + sl.dur_ns):
            x(TRACK_FRAMES, sl.ts_ns, sl.dur_ns, sl.name, "lltrace.frame" if sl.depth else "lltrace.block", sl.args)
            counts["frames" if sl.depth else "blocks"] += 1
    for sl in timeline.switches:
        if sl.ts_ns >= 0 and inside(sl.ts_ns, sl.ts_ns + sl.dur_ns):
            x(TRACK_SWITCHES, sl.ts_ns, sl.dur_ns, sl.name, "lltrace.switch", sl.args)
            counts["switches"] += 1
    for m in timeline.markers:
        if m.ts_ns >= 0 and lo <= m.ts_ns <= hi:
            out.append({"ph": "i", "s": "t", "cat": f"lltrace.{m.kind}", "name": m.name, "pid": pid,
                        "tid": TRACK_EVENTS, "ts": _us(m.ts_ns), "args": rounded(m.args, other=str)})
            counts["markers"] += 1
    samples = [(ts, v) for ts, v in timeline.latency if ts >= 0 and lo <= ts <= hi]
    for ts, v in samples:
        out.append({"ph": "C", "name": "frame latency", "cat": "lltrace.counter", "pid": pid, "tid": 0,
                    "ts": _us(ts), "args": {"ms per frame": num(v)}})
    counts["counter"] = len(samples)

    # recorded regions keep the trace's own ts / dur (so they nest exactly as on their thread)
    xt, xd = trace.x["ts"], trace.x["dur"]
    host = []
    for r in timeline.regions:
        ts, dur = (float(xt[r.row]), float(xd[r.row])) if r.row >= 0 else (r.start_us, r.end_us - r.start_us)
        s_ns, d_ns = round(ts * 1e3), round(dur * 1e3)
        if inside(s_ns, s_ns + d_ns):
            host.append((s_ns, s_ns + d_ns, r))
    kept, dropped = _nested(host)
    for s, e, r in kept:
        x(TRACK_REGIONS, s, e - s, r.name, "lltrace.region", {"path": "/".join(r.path), "ms": r.value_ms})
    counts["regions"] = len(kept)
    gpu = []
    for r in timeline.regions:
        if r.gpu_start_us is not None and r.gpu_end_us is not None:
            s_ns, e_ns = round(r.gpu_start_us * 1e3), round(r.gpu_end_us * 1e3)
            if inside(round(r.start_us * 1e3), round(r.end_us * 1e3)):
                gpu.append((s_ns, e_ns, r))
    kept_g, dropped_g = _nested(gpu)
    for s, e, r in kept_g:
        x(TRACK_GPU_REGIONS, s, e - s, r.name, "lltrace.gpu_region",
          {"path": "/".join(r.path), "gpu_ms": r.value_ms, "span_ms": (e - s) / 1e6})
    counts["gpu_regions"] = len(kept_g)
    if dropped or dropped_g:
        warnings.append(f"{dropped + dropped_g} region spans overlap another one partially (several threads or "
                        "streams): left off the regions tracks")

    meta = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "lltrace"}},
            {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": -1}}]
    used = {e["tid"] for e in out if e["ph"] != "C"}
    for tid, name in TRACK_NAMES.items():
        if tid in used:
            meta += [{"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}},
                     {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}}]
    return (meta + out if out else []), counts


# ----------------------------------------------------------------------------- export

class _Refilter(Exception):
    """The one-pass copy cannot stand: the loader left events out (corrupt times), so must the copy."""

    def __init__(self, trace: Trace):
        super().__init__()
        self.trace = trace


@dataclass
class _Plan:
    """What the export adds to the trace's events, and which of them it keeps."""
    warnings: list[str]
    window: Window | None
    clock: str | None
    pid: int
    extra: list[dict[str, Any]]
    counts: dict[str, int]
    flt: _Filter


def _plan(src: Source, trace: Trace, blocks, window_ms) -> _Plan:
    warnings = list(trace.warnings)
    inst = measure(trace)
    run = read_run(src.run_dir, trace.run_meta or {})   # {}: meta.json was read (and warned about) by the loader
    warnings += run.warnings
    timeline = tl_mod.build(trace, run, inst)
    warnings += timeline.warnings
    window = plan_window(trace, timeline, blocks, window_ms)
    if src.run_dir is None:
        warnings.append("a trace file outside a run directory: no frames or run events to add (regions only)")
    pid = _lltrace_pid(trace)
    extra, counts = lltrace_events(trace, timeline, window, pid, warnings)
    return _Plan(warnings, window, timeline.clock.method, pid, extra, counts, _make_filter(trace, window))


def _trailer(src: Source, plan: _Plan) -> dict[str, Any]:
    w = plan.window
    return {"lltraceExport": {"source": str(src.path), "window": None if w is None else
                              {"label": w.label, "start_us": w.start_us, "end_us": w.end_us},
                              "clock": plan.clock, "pid": plan.pid}}


def _atomic(out: Path, level: int | None, body: Callable[[BinaryIO], Any]) -> Any:
    """body(stream) into a temp file renamed onto `out` when it returns; gzipped when `level`."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb", buffering=1 << 20) as raw_f:
            if level is None:
                done = body(raw_f)
            else:
                f, _ = gzip_writer(raw_f, level)
                try:
                    done = body(f)
                except BaseException:
                    f.abort()   # stops the compression thread; the temp file goes below
                    raise
                f.close()   # ends the gzip member (raising the compression's errors); raw_f stays open
        os.replace(tmp, out)
        return done
    except (OSError, _WriteError) as exc:
        exc = exc.error if isinstance(exc, _WriteError) else exc
        raise LltraceError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def export(source: str | Path, out: str | Path, *, blocks: tuple[int, int] | None = None,
           window_ms: tuple[float, float] | None = None,
           progress: Callable[[int, int], None] | None = None,
           gzip_level: int = DEFAULT_LEVEL) -> ExportResult:
    """Write `source` (a run directory, run id or trace file) with lltrace's tracks to `out`,
    trimmed to blocks [start, stop) or to [start, end) ms from the trace's first event.
    `gzip_level` 1-9 (zlib's scale) for a .gz name.

    The whole trace is read once: its events are copied as they are decoded, and lltrace's
    tracks follow them. A window (and a trace whose corrupt events the loader left out) needs
    the trace first, to know what to keep, and reads it a second time to copy."""
    out = Path(out)
    if out.is_dir():
        raise LltraceError(f"{out} is a directory", "give a file name, e.g. run.json.gz")
    if not out.parent.is_dir():
        raise LltraceError(f"no such directory: {out.parent}")
    if not (out.name.endswith(".json") or out.name.endswith(".json.gz")):
        raise LltraceError(f"{out.name}: the output name should end in .json or .json.gz",
                           "Perfetto opens both; .gz is gzipped")
    src = resolve_source(source)
    if src.kind == "budget":
        raise LltraceError(f"{src.path} is a budget JSON: export needs the trace itself",
                           "pass the run directory or its trace.json.gz")
    gz = out.name.endswith(".gz")
    level = gzip_level if gz else None
    if src.kind == "run" and src.meta_path is not None:
        files = rank_traces(read_meta(src.meta_path))
        if len(files) > 1:   # a sequence-parallel run: every rank, a process each
            return _export_ranks(src, out, files, blocks, window_ms, level, progress)
    trace: Trace | None = None
    if blocks is None and window_ms is None:
        try:
            result = _atomic(out, level, lambda f: _one_pass(src, out, f, gz, progress))
            result.bytes = out.stat().st_size
            return result
        except _Refilter as redo:
            trace = redo.trace
    if trace is None:
        trace = load_trace(src)
    plan = _plan(src, trace, blocks, window_ms)

    def body(f: BinaryIO) -> tuple[_Writer, _Sink]:
        writer = _Writer(f, trace.top)
        sink = _copy_events(src, writer, plan.flt, plan.warnings, progress)
        for e in plan.extra:
            writer.event(_enc_json(e))
        writer.close(_trailer(src, plan))
        return writer, sink

    writer, sink = _atomic(out, level, body)
    result = _result(out, gz, writer, sink.total, sink.kept, plan)
    result.bytes = out.stat().st_size
    return result


def _export_ranks(src: Source, out: Path, files: dict[int, list[str]], blocks, window_ms, level: int | None,
                  progress) -> ExportResult:
    """A multi-rank run (lltrace.export.ranks): rank 0's lltrace tracks, every rank's events."""
    from lltrace.export.ranks import merged_events

    trace = load_trace(src, progress)   # rank 0: its frames, events and window are the run's
    plan = _plan(src, trace, blocks, window_ms)
    files = {**files, 0: [p.name for p in src.traces]}
    base = trace.top.get("baseTimeNanoseconds")
    window = None if plan.window is None else (plan.window.start_us, plan.window.end_us)
    events, info = merged_events(src.run_dir, files, plan.pid + 1, base if isinstance(base, (int, float)) else None,
                                 window)
    header = {k: v for k, v in trace.top.items() if k not in ("traceEvents", "distributedInfo")}

    def body(f: BinaryIO) -> _Writer:
        writer = _Writer(f, header)
        dropped = 0
        for e in [*events, *plan.extra]:
            try:
                writer.event(_enc_json(e))
            except (ValueError, TypeError):   # NaN / Infinity: JSON cannot hold them
                dropped += 1
        if dropped:
            plan.warnings.append(f"{dropped} events with values JSON cannot hold (NaN, Infinity) were left out")
        writer.close({**_trailer(src, plan), "lltraceRanks": info})
        return writer

    writer = _atomic(out, level, body)
    result = _result(out, out.name.endswith(".gz"), writer, len(events), writer.n - len(plan.extra), plan)
    result.bytes = out.stat().st_size
    return result


def _one_pass(src: Source, out: Path, f: BinaryIO, gz: bool, progress) -> ExportResult:
    writer = _Writer(f)
    # chunk() copies what the typed decoder read whole; add() gets the event-by-event path's
    # items, where a NaN or 1e300 time may be: those are left out as the loader leaves them out
    sink = _Sink(writer, _Filter(None, set(), None, check_range=True))
    trace = load_trace(src, progress, copy=sink)
    if trace.stats.get("out_of_range") or trace.stats.get("skipped"):
        raise _Refilter(trace)
    plan = _plan(src, trace, None, None)
    if trace.partial:
        reason = trace.stop_reason or "cut off"
        named = any(reason.startswith(f"{p.name}: ") for p in src.traces)   # a later window names itself
        plan.warnings.append(f"{'' if named else src.path.name + ': '}{reason}; exported the events before it")
    if sink.reencoded:
        plan.warnings.append(f"{sink.reencoded} events with values JSON cannot hold (NaN, invalid UTF-8) were "
                             "re-encoded with their core fields only")
    for e in plan.extra:
        writer.event(_enc_json(e))
    # keys the trace has after its events (Kineto: traceName, baseTimeNanoseconds) come after them here too
    later = {k: v for k, v in trace.top.items() if k != "traceEvents" and k not in (writer.header or {})}
    writer.close({**later, **_trailer(src, plan)})
    return _result(out, gz, writer, trace.stats["elements"], sink.kept, plan)


def _result(out: Path, gz: bool, writer: _Writer, read: int, written: int, plan: _Plan) -> ExportResult:
    warnings = plan.warnings
    if writer.bytes > BROWSER_LIMIT:
        warnings.append(f"{writer.bytes / 2**20:,.0f} MB of JSON may be too much for a browser tab: "
                        "trim it to a few blocks or a time window")
    return ExportResult(out, 0, writer.bytes, gz, read, written, plan.counts, plan.window, plan.clock,
                        list(dict.fromkeys(warnings)))


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"

