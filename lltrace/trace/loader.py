"""Find and load a trace: a run directory, a trace file, or (for budgets) a budget JSON.

`load_trace(path_or_rundir, progress=None) -> Trace` is the entry point other layers use.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lltrace.capture.rundir import read_meta
from lltrace.errors import LltraceError
from lltrace.inputs import check_path, is_regular_file, os_error
from lltrace.paths import traces_dir
from lltrace.trace.events import GPU_ACTIVITY, RUNTIME, EventCollector, Trace
from lltrace.trace.reader import Copy, Progress, ReadResult, read_events

BUDGET_FORMAT = "lltrace-budget/1"
_RUN_TRACE_NAMES = ("trace.json.gz", "trace.json")
_NOT_TRACES = {"meta.json", "summary.json", "pyspy.json", "provenance.json"}
_NOT_TRACE_PREFIXES = ("graph-capture-",)   # records of CUDA-graph captures, read with their run
_WINDOW = re.compile(r"^trace-(\d+)\.json(\.gz)?$")
EARLY_US = 1000.0   # a GPU activity starting this long before its launch: the clocks disagree


@dataclass(frozen=True)
class Source:
    """What a user-given path points at."""
    kind: str                   # "run" | "trace" | "budget"
    path: Path                  # the trace file, or the budget JSON
    run_dir: Path | None = None
    meta_path: Path | None = None
    more: tuple[Path, ...] = ()  # later profile windows of a run: trace-2.json.gz, ...

    @property
    def traces(self) -> tuple[Path, ...]:
        return (self.path, *self.more)

    @property
    def has_trace(self) -> bool:
        return self.path != self.run_dir


def _is_budget_json(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return not head.startswith(b"\x1f\x8b") and BUDGET_FORMAT.encode() in head


def _trace_in_dir(d: Path) -> Path | None:
    for name in _RUN_TRACE_NAMES:
        if (d / name).is_file():
            return d / name
    found = sorted(p for p in d.iterdir()
                   if p.is_file() and p.name not in _NOT_TRACES and not p.name.startswith(_NOT_TRACE_PREFIXES)
                   and (p.name.endswith(".json") or p.name.endswith(".json.gz")))
    kineto = [p for p in found if ".pt.trace.json" in p.name]
    return (kineto or found or [None])[0]


def _later_windows(d: Path, first: Path) -> tuple[Path, ...]:
    """trace-2.json.gz, trace-3.json.gz, ... (the capture writes one file per profile window)."""
    if first.name not in _RUN_TRACE_NAMES:
        return ()
    found = [(int(m.group(1)), p) for p in d.glob("trace-*.json*") if (m := _WINDOW.match(p.name))]
    return tuple(p for _, p in sorted(found))


def resolve_source(path: str | Path, require_trace: bool = True) -> Source:
    """A run directory (`traces/<id>/` with trace.json.gz + meta.json), a run id under the
    traces directory, a trace file (.json / .json.gz / *.pt.trace.json[.gz]) or a budget JSON.
    `require_trace=False` also takes a run directory that was never profiled (`path` is then the
    directory itself and `has_trace` False), for readers of its other files.
    FIFOs, devices, sockets and paths that cannot be looked at are one-line errors."""
    p = Path(path)
    if check_path(p) is None:
        candidate = traces_dir() / str(path)
        if check_path(candidate) is not None and candidate.is_dir():
            p = candidate
        else:
            raise LltraceError(f"no such file or run directory: {path}")
    if p.is_dir():
        try:
            trace = _trace_in_dir(p)
            if trace is None and not require_trace:
                if not any(is_regular_file(p / n) for n in ("meta.json", "frames.jsonl")):
                    raise LltraceError(f"{p}: not a run directory (no meta.json, frames.jsonl or trace)",
                                       "give a run directory traces/<run-id>/, a trace file or a budget JSON")
                return Source("run", p, p, p / "meta.json" if os.path.lexists(p / "meta.json") else None)
            if trace is None:
                raise LltraceError(f"{p}: no trace file in this directory",
                                   "a run directory holds trace.json.gz; was the run profiled?")
            meta = p / "meta.json"   # whatever it is: read_meta says why it cannot be read
            return Source("run", trace, p, meta if os.path.lexists(meta) else None, _later_windows(p, trace))
        except OSError as exc:   # a directory that cannot be listed or looked into
            raise os_error(p, exc) from None
    if _is_budget_json(p):
        return Source("budget", p)
    meta = p.parent / "meta.json"
    if p.name in _RUN_TRACE_NAMES and is_regular_file(meta):
        return Source("run", p, p.parent, meta)   # a file named explicitly: that window only
    return Source("trace", p)


def _read_all(src: Source, sink: EventCollector, progress: Progress | None, copy: Copy | None = None) -> ReadResult:
    """Read every profile window of a run into one event set (one process: one clock and
    one id space, so windows merge without shifting anything)."""
    if not src.more:
        return read_events(src.path, sink, progress, copy=copy)
    sizes = [p.stat().st_size for p in src.traces]
    total, done = sum(sizes), 0
    first: ReadResult | None = None
    for path, size in zip(src.traces, sizes):
        base = done
        step = (lambda d, _t, base=base: progress(base + d, total)) if progress else None
        r = read_events(path, sink, step, copy=copy)
        done += size
        if first is None:
            first = r
            first.warnings.append(f"{len(src.traces)} profile windows merged: "
                                  + ", ".join(p.name for p in src.traces))
            continue
        first.warnings.extend(f"{path.name}: {w}" for w in r.warnings)
        first.skipped += r.skipped
        if r.partial and not first.partial:
            first.partial, first.stop_reason = True, f"{path.name}: {r.stop_reason}"
            first.stopped_at_byte = r.stopped_at_byte
    return first


def load_trace(path_or_rundir: str | Path | Source, progress: Progress | None = None, *,
               copy: Copy | None = None) -> Trace:
    """Stream a trace (every profile window of a run directory) into the compact event model.
    Damaged files give a partial Trace (`partial`, `stop_reason`); files with no usable
    event raise LltraceError. `copy` also gets the events as bytes, in the same pass (export)."""
    src = path_or_rundir if isinstance(path_or_rundir, Source) else resolve_source(path_or_rundir)
    if src.kind == "budget":
        raise LltraceError(f"{src.path} is a budget JSON, not a trace")
    sink = EventCollector()
    result = _read_all(src, sink, progress, copy)
    if not sink.x.cols["ts"]:
        if result.partial:
            raise LltraceError(f"{src.path}: {result.stop_reason}; no complete event before it")
        if sink.total == 0:
            raise LltraceError(f"{src.path}: the trace has no events")
        if sink.invalid == sink.total:
            raise LltraceError(f"{src.path}: not a trace: none of its {sink.total} array elements is a trace event")
        raise LltraceError(f"{src.path}: none of its {sink.total} events is a torch-profiler op, annotation, "
                           "launch or kernel")
    warnings = list(result.warnings)
    if sink.invalid > result.skipped:   # those the reader stepped over are named in its warnings
        warnings.append(f"{sink.invalid - result.skipped} array element(s) are not valid trace events and were skipped")
    warnings += _value_warnings(sink)
    if result.partial:
        warnings.insert(0, f"partial trace: {result.stop_reason}; kept the {sink.total} events before it")
    trace = Trace(
        source=str(src.path), x=sink.x.finish(), flows=sink.flows.finish(),
        names=list(sink.names), ids=list(sink.ids), instants=sink.instants,
        process_names=sink.process_names, thread_names=sink.thread_names, top=result.top,
        partial=result.partial, stop_reason=result.stop_reason, stopped_at_byte=result.stopped_at_byte,
        warnings=warnings, run_dir=src.run_dir,
        stats={"elements": sink.total, "kept": sink.kept, "invalid": sink.invalid,
               "ignored_categories": dict(sorted(sink.ignored_cats.items(), key=lambda kv: -kv[1])[:20]),
               "ignored_phases": sink.ignored_ph, "gzip": result.gzip},
    )
    trace.stats["out_of_range"] = sink.out_of_range
    trace.stats["skipped"] = result.skipped   # elements the reader stepped over undecoded
    early = _clock_warning(trace)
    if early:
        trace.warnings.append(early)
    trace.run_meta = read_meta(src.meta_path, trace.warnings)
    return trace


def _value_warnings(sink: EventCollector) -> list[str]:
    """What the collector dropped or clamped: corrupt values say so instead of skewing totals."""
    out = []
    if sink.out_of_range:
        out.append(f"{sink.out_of_range} event(s) have a timestamp or duration beyond 2^53 µs (285 years) or not "
                   "a number: corrupt values, left out")
    gpu = [sink.negative[c] for c in GPU_ACTIVITY if c in sink.negative]
    host = [v for c, v in sink.negative.items() if c not in GPU_ACTIVITY]
    if gpu:
        n, us = sum(v[0] for v in gpu), sum(v[1] for v in gpu)
        out.append(f"{n} GPU activities have a negative duration (together {us / 1e3:,.3f} ms; a corrupt trace?): "
                   "counted as 0 ms, so GPU time is understated and idle time overstated")
    if host:
        out.append(f"{sum(v[0] for v in host)} host event(s) have a negative duration: counted as 0 ms")
    return out


def _clock_warning(trace: Trace) -> str | None:
    """GPU activities that start before the launch that queued them (by correlation id): the
    trace's device and host clocks disagree, and every cross-clock number (wall, idle) is off."""
    x = trace.x
    cat, corr = x["cat"], x["corr"]
    rt = np.nonzero((cat == RUNTIME) & (corr >= 0))[0]
    gpu = np.nonzero(np.isin(cat, np.array(GPU_ACTIVITY, dtype=np.uint8)) & (corr >= 0))[0]
    if not len(rt) or not len(gpu):
        return None
    order = np.argsort(corr[rt], kind="stable")
    launch_corr, launch_ts = corr[rt][order], x["ts"][rt][order]
    pos = np.minimum(np.searchsorted(launch_corr, corr[gpu]), len(launch_corr) - 1)
    hit = launch_corr[pos] == corr[gpu]
    lead = launch_ts[pos[hit]] - x["ts"][gpu[hit]]
    early = lead > EARLY_US
    if not early.any():
        return None
    return (f"{int(early.sum())} of {int(hit.sum())} linked GPU activities start before their launch (by up to "
            f"{lead.max() / 1e3:,.1f} ms): the trace's GPU and host clocks disagree, so wall and idle times "
            "are not reliable")
