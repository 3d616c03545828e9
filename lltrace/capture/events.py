"""Run events (recompiles, graph breaks, prompt switches, ...) and the run's time base.

One line of `events.jsonl` per event (docs/FORMATS.md §2). Every source (recompile monitor,
observer, profiler window, py-spy) stamps events with both clocks; the writer turns the host
monotonic clock into `t_s` against the run's time base.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

EVENT_KINDS = ("recompile", "graph_break", "compile", "prompt_switch", "cudagraph_skip",
               "profile_window", "note")


@dataclass(frozen=True)
class TimeBase:
    """A wall-clock / monotonic pair taken at the same instant: lets tools align clocks."""

    time_ns: int
    perf_counter_ns: int

    @classmethod
    def now(cls) -> "TimeBase":
        return cls(time.time_ns(), time.perf_counter_ns())

    def seconds_since(self, perf_counter_ns: int) -> float:
        return (perf_counter_ns - self.perf_counter_ns) / 1e9

    def to_json(self) -> dict[str, int]:
        return {"time_ns": self.time_ns, "perf_counter_ns": self.perf_counter_ns}


@dataclass(frozen=True)
class RunEvent:
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    time_ns: int = field(default_factory=time.time_ns)
    perf_counter_ns: int = field(default_factory=time.perf_counter_ns)

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")

    def to_json(self, base: TimeBase) -> dict[str, Any]:
        return {"t_s": round(base.seconds_since(self.perf_counter_ns), 6), "time_ns": self.time_ns,
                "kind": self.kind, "message": self.message, "data": self.data}


@dataclass(frozen=True)
class EventRecord:
    """One line of events.jsonl read back (RunEvent.to_json's keys)."""
    t_s: float | None
    time_ns: int | None
    kind: str
    message: str
    data: dict[str, Any]

    @classmethod
    def from_json(cls, d: Any) -> "EventRecord":
        """ValueError naming the field when the line is not an event."""
        if not isinstance(d, dict):
            raise ValueError("not an object")
        kind, msg, data, t = d.get("kind"), d.get("message", ""), d.get("data", {}), d.get("t_s")
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        if not isinstance(msg, str) or not isinstance(data, dict):
            raise ValueError("message or data of the wrong type")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
            raise ValueError("t_s is not a number")
        ns = d.get("time_ns")
        return cls(float(t) if t is not None else None, ns if isinstance(ns, int) else None, kind, msg, data)


EventSink = Callable[[RunEvent], None]
