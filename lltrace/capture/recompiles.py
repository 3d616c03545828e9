"""Recompile monitor: torch.compile recompiles, graph breaks and CUDA-graph skips, in-process.

Sources (docs/DESIGN.md §6):
- the structured trace logger `torch.__trace` (what tlparse reads): dynamo logs an artifact
  `recompile_reasons` (the guard failures) before recompiling, `dynamo_graph_break_reason` on a
  graph break, `dynamo_start` (the function being compiled) and `compilation_metrics` after each
  compile. Structured logging runs only while the logger has a handler, so ours turns it on.
- "skipping cudagraphs due to ..." warnings from inductor: the `cudagraphs` artifact logger
  (recent torch; it propagates to `torch._inductor`) and, in older releases, `perf_hints`.
Events are time-stamped when logged, so they land on the run's timeline. Listening has a
cost at compile time only: with a handler on `torch.__trace`, dynamo formats every structured
payload (graphs, guards); each `compile` event carries `structured_logging_overhead_s`.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Iterable

from lltrace.capture.events import EventSink, RunEvent

TRACE_LOGGER = "torch.__trace"
CUDAGRAPH_SKIP = "skipping cudagraphs due to"
# torch's registered loggers do not propagate (each has its own stderr handler): listen on each.
_TORCH_LOGGERS = ("torch", "torch._dynamo", "torch._inductor", "torch._inductor.cudagraph_trees")
# perf_hints is off by default and does not propagate: listen on its known loggers directly.
_PERF_HINT_LOGGERS = (
    "torch._inductor.compile_fx.__perf_hints",
    "torch._inductor.cudagraph_trees.__perf_hints",
    "torch._inductor.graph.__perf_hints",
)


def _torch_loggers() -> list[str]:
    try:
        from torch._logging._internal import log_registry  # private: fall back to the known names
        names = set(log_registry.get_log_qnames())
    except Exception:
        names = set()
    return sorted(names | set(_TORCH_LOGGERS))


def _payload(record: logging.LogRecord) -> str:
    p = getattr(record, "payload", None)
    return p if isinstance(p, str) else ("" if p is None else str(p))


def _compile_id(meta: dict[str, Any]) -> str | None:
    if "frame_id" in meta and "frame_compile_id" in meta:
        return f"{meta['frame_id']}/{meta['frame_compile_id']}"
    return None


def _graph_break_summary(text: str) -> tuple[str, str | None]:
    """(one-line reason, user location) from dynamo's graph-break report."""
    lines = [ln.strip() for ln in text.splitlines()]
    where = None
    reason = None
    for i, ln in enumerate(lines):
        if ln.startswith("Graph break in user code at ") and where is None:
            where = ln[len("Graph break in user code at "):]
        elif ln.startswith("Graph Break Reason:") and reason is None:
            reason = ln[len("Graph Break Reason:"):].strip()
            # The next non-empty lines name the failure and explain it; keep the first two.
            extra = [x for x in lines[i + 1:i + 6] if x and not x.startswith("Hint:")][:2]
            if extra:
                reason = f"{reason} {' '.join(extra)}".strip()
    if reason is None:
        reason = next((ln for ln in lines if ln), "graph break")
    return reason, where


# -- summaries (for people; events.jsonl keeps dynamo's raw text in `data`) ---------------------

_ENTRY = re.compile(r"^\s*\d+/\d+:\s*")        # "0/1: " - which cache entry's guard failed
_MISMATCH = re.compile(r"^tensor '(?P<name>.+?)' (?P<what>[\w ]+?) mismatch(?: at index (?P<i>\d+))?\. "
                       r"expected (?P<a>.+?), actual (?P<b>.+)$")
_EQUALS = re.compile(r"^(?P<expr>.+?) == (?P<value>.+)$")
_INDEXED = {"size": "size()", "stride": "stride()"}


def guard_summary(reason: str, width: int = 80) -> str:
    """One line from one of dynamo's guard failures: "tensor 'x' size mismatch at index 0.
    expected 4, actual 8" -> "x.size()[0] changed 4 → 8"; "k == 2  # f.py:7 in f" -> "k changed
    (was 2)"; anything else is its first line without the source comment, cut to `width`."""
    text = _ENTRY.sub("", (reason or "").strip().splitlines()[0] if (reason or "").strip() else "")
    text = text.split("#", 1)[0].strip() or text.strip()
    m = _MISMATCH.match(text)
    if m:
        what = m["what"].strip()
        attr = f".{_INDEXED.get(what, what)}" + (f"[{m['i']}]" if m["i"] is not None else "")
        if what not in _INDEXED:
            attr = f" {what}"
        return _cut(f"{m['name']}{attr} changed {m['a']} → {m['b']}", width)
    m = _EQUALS.match(text)
    if m and "(" not in m["expr"]:
        return _cut(f"{m['expr']} changed (was {m['value']})", width)
    return _cut(f"guard failed: {text}" if text else "unknown reason", width)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def recompile_message(function: dict | None, reasons: list[str]) -> str:
    """A recompile event's message: "recompiling f: x.size()[0] changed 4 → 8"."""
    first = guard_summary(str(reasons[0])) if reasons else "unknown reason"
    name = (function or {}).get("name")
    return f"recompiling {name}: {first}" if name else f"recompiling: {first}"


def recompile_reasons(reasons: list[str], limit: int = 3) -> list[str]:
    """The distinct summarized guard failures of one recompile, most recent cache entry first."""
    out: list[str] = []
    for r in reasons:
        line = guard_summary(str(r))
        if line not in out:
            out.append(line)
    return out[:limit]


# compilation_metrics fields: each time contains the next (µs fields are torch >= 2.6)
_PARTS = ("dynamo_s", "aot_autograd_s", "inductor_s", "autotune_s")


def compile_parts(events: Iterable[Any]) -> dict[str, float]:
    """torch.compile's time by part, summed over a run's `compile` events (RunEvent or
    EventRecord): {"compiles", "total_s", "dynamo_s" (tracing, guards), "aot_autograd_s",
    "inductor_s" (lowering, code generation, Triton compile), "autotune_s" (inductor's
    benchmarking of kernel configs, at compile time and at a kernel's first launch)}.
    From dynamo's compilation metrics: entire frame ⊃ backend ⊃ inductor ⊃ compile-time autotune."""
    out = {"compiles": 0, "total_s": 0.0, **dict.fromkeys(_PARTS, 0.0)}

    def sec(d: dict, key: str, us: bool = False) -> float:
        v = d.get(key)
        return float(v) / (1e6 if us else 1.0) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0

    for e in events:
        if getattr(e, "kind", None) != "compile":
            continue
        d = getattr(e, "data", None) or {}
        total, backend, inductor = (sec(d, "entire_frame_compile_time_s"), sec(d, "backend_compile_time_s"),
                                    sec(d, "inductor_compile_time_s"))
        autotune = sec(d, "compile_time_autotune_time_us", us=True)
        out["compiles"] += 1
        out["total_s"] += total + sec(d, "runtime_triton_autotune_time_us", us=True)
        out["dynamo_s"] += max(0.0, total - backend)
        out["aot_autograd_s"] += max(0.0, backend - inductor)
        out["inductor_s"] += max(0.0, inductor - autotune)
        out["autotune_s"] += autotune + sec(d, "runtime_triton_autotune_time_us", us=True)
    return out


class _Handler(logging.Handler):
    def __init__(self, monitor: "RecompileMonitor"):
        super().__init__(level=logging.DEBUG)
        self.monitor = monitor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.monitor._on_record(record)
        except Exception:  # never let monitoring break a compile
            self.handleError(record)


class RecompileMonitor:
    """Context manager; while active, calls `sinks` with a RunEvent per recompile, graph break,
    compile and CUDA-graph skip. `events` keeps them all. Logging state is restored on exit."""

    def __init__(self, sinks: Iterable[EventSink] = ()):
        self.sinks = list(sinks)
        self.events: list[RunEvent] = []
        self._lock = threading.Lock()
        self._trace_handler = _Handler(self)
        self._text_handler = _Handler(self)
        self._saved: list[tuple[logging.Logger, int]] = []
        self._text_loggers: list[str] = []
        # compile id -> (recompile reasons, time_ns, perf_ns) waiting for dynamo_start's name
        self._pending: dict[str, tuple[list[str], int, int]] = {}
        self._strings: dict[int, str] = {}
        self._active = False
        self._last_record: logging.LogRecord | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "RecompileMonitor":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._active:
            return
        trace_log = logging.getLogger(TRACE_LOGGER)
        self._saved.append((trace_log, trace_log.level))
        trace_log.setLevel(logging.DEBUG)  # torch keeps it at DEBUG; make sure of it while we listen
        trace_log.addHandler(self._trace_handler)
        self._text_loggers = _torch_loggers()
        for name in self._text_loggers:
            logging.getLogger(name).addHandler(self._text_handler)
        for name in _PERF_HINT_LOGGERS:
            lg = logging.getLogger(name)
            self._saved.append((lg, lg.level))
            if lg.getEffectiveLevel() > logging.DEBUG:
                lg.setLevel(logging.DEBUG)  # does not propagate (off by default): only we see it
            lg.addHandler(self._text_handler)
        self._active = True

    def stop(self) -> None:
        if not self._active:
            return
        self._active = False
        logging.getLogger(TRACE_LOGGER).removeHandler(self._trace_handler)
        for name in self._text_loggers:
            logging.getLogger(name).removeHandler(self._text_handler)
        for name in _PERF_HINT_LOGGERS:
            logging.getLogger(name).removeHandler(self._text_handler)
        for lg, level in reversed(self._saved):
            lg.setLevel(level)
        self._saved.clear()
        with self._lock:
            pending, self._pending = self._pending, {}
        for cid, (reasons, tns, pns) in pending.items():
            self._emit_recompile(cid, reasons, None, tns, pns)

    # -- parsing --------------------------------------------------------------------------------
    def _on_record(self, record: logging.LogRecord) -> None:
        if record is self._last_record:
            return  # the same record reached us through a second logger of the chain
        self._last_record = record
        meta = getattr(record, "metadata", None)
        if isinstance(meta, dict):
            self._on_structured(meta, _payload(record), record)
            return
        msg = record.getMessage()
        if CUDAGRAPH_SKIP in msg:
            reason = msg.split(CUDAGRAPH_SKIP, 1)[1].strip()
            self._emit(RunEvent("cudagraph_skip", msg.strip(), {"reason": reason, "logger": record.name},
                                time_ns=int(record.created * 1e9)))

    def _on_structured(self, meta: dict[str, Any], payload: str, record: logging.LogRecord) -> None:
        if "str" in meta:  # interned file names used by dynamo_start stacks
            s, i = meta["str"]
            self._strings[i] = s
            return
        cid = _compile_id(meta)
        if "artifact" in meta:
            name = (meta["artifact"] or {}).get("name")
            if name == "recompile_reasons":
                try:
                    reasons = json.loads(payload)
                except ValueError:
                    reasons = payload
                if isinstance(reasons, str):
                    reasons = [reasons]
                reasons = [str(r).strip() for r in reasons]
                with self._lock:  # wait for dynamo_start (next record) to name the function
                    self._pending[cid or "?"] = (reasons, int(record.created * 1e9), time.perf_counter_ns())
            elif name == "dynamo_graph_break_reason":
                reason, where = _graph_break_summary(payload)
                msg = f"graph break at {where}: {reason}" if where else f"graph break: {reason}"
                self._emit(RunEvent("graph_break", msg, {"compile_id": cid, "where": where, "reason": reason,
                                                         "detail": payload[:4000]},
                                    time_ns=int(record.created * 1e9)))
        elif "dynamo_start" in meta:
            with self._lock:
                pending = self._pending.pop(cid, None) if cid else None
            if pending is not None:
                stack = (meta["dynamo_start"] or {}).get("stack") or []
                frame = stack[-1] if stack else {}
                fn = {"name": frame.get("name"), "file": self._strings.get(frame.get("filename"), frame.get("filename")),
                      "line": frame.get("line")}
                self._emit_recompile(cid, pending[0], fn, pending[1], pending[2])
        elif "compilation_metrics" in meta:
            m = meta["compilation_metrics"] or {}
            secs = m.get("entire_frame_compile_time_s")
            where = f"{m.get('co_name')} ({m.get('co_filename')}:{m.get('co_firstlineno')})"
            failed = m.get("fail_type")
            msg = (f"compile of {where} failed: {m.get('fail_reason')}" if failed else
                   f"compiled {where}" + (f" in {secs:.2f} s" if isinstance(secs, (int, float)) else ""))
            keep = ("compile_id", "co_name", "co_filename", "co_firstlineno", "start_time",
                    "entire_frame_compile_time_s", "backend_compile_time_s", "inductor_compile_time_s",
                    "graph_op_count", "guard_count", "fail_type", "fail_reason", "recompile_reason",
                    "cudagraph_skip_reason", "cache_size",
                    # the parts of the compile time (compile_parts): autotuning, runtime autotuning
                    "compile_time_autotune_time_us", "runtime_triton_autotune_time_us",
                    "runtime_cudagraphify_time_us", "triton_compile_time_us",
                    # what listening costs: dynamo builds every structured payload once a handler exists
                    "structured_logging_overhead_s")
            data = {k: m.get(k) for k in keep if k in m}
            data["graph_breaks"] = len(m.get("restart_reasons") or [])
            self._emit(RunEvent("compile", msg, data, time_ns=int(record.created * 1e9)))

    def _emit_recompile(self, cid: str | None, reasons: list[str], fn: dict | None, tns: int, pns: int) -> None:
        msg = recompile_message(fn, reasons)    # summarized; the raw text stays in data
        self._emit(RunEvent("recompile", msg, {"compile_id": cid, "function": fn, "reasons": reasons},
                            time_ns=tns, perf_counter_ns=pns))

    def _emit(self, event: RunEvent) -> None:
        with self._lock:
            self.events.append(event)
        for sink in self.sinks:
            sink(event)
