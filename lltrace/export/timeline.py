"""What happened when, on the trace's clock: video frames, prompt switches, recompiles and
other run events, and region instances (host and GPU spans), for `lltrace export`.

frames.jsonl and events.jsonl count seconds from the run's start on the host (meta.json
`t0`); a Kineto trace counts µs on its own clock. The bridge is the `ll/clock_sync` marker:
the capture records it at the start of a profiler window and stores the (time_ns,
perf_counter_ns) pair taken at that instant in meta.json `clock_sync`. So

    trace_us = marker_ts + (perf_counter_ns - clock_sync.perf_counter_ns) / 1000

and a run time s maps through perf_counter_ns = t0.perf_counter_ns + s * 1e9. Without the
marker, Kineto's `baseTimeNanoseconds` gives wall-clock µs (ts + base/1000 = time_ns/1000),
which is good to a few tens of µs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lltrace import names
from lltrace.capture.rundir import RunData
from lltrace.trace.events import Trace
from lltrace.trace.instances import Instances, RegionInstance

CLOCK_SYNC = names.CLOCK_SYNC


@dataclass(frozen=True)
class ClockMap:
    """Run seconds (since meta.json t0) -> trace µs; `method` says how it was found."""
    method: str | None                 # "ll/clock_sync marker" | "wall clock (baseTimeNanoseconds)" | None
    t0_perf_ns: float = 0.0
    ref_perf_ns: float = 0.0
    ref_trace_us: float = 0.0

    def __call__(self, run_s: float) -> float:
        perf = self.t0_perf_ns + run_s * 1e9
        return self.ref_trace_us + (perf - self.ref_perf_ns) / 1e3

    @property
    def ok(self) -> bool:
        return self.method is not None


def _pair(d: Any) -> tuple[float, float] | None:
    if not isinstance(d, dict):
        return None
    t, p = d.get("time_ns"), d.get("perf_counter_ns")
    if isinstance(t, (int, float)) and isinstance(p, (int, float)):
        return float(t), float(p)
    return None


def clock_map(trace: Trace, meta: dict[str, Any] | None, warnings: list[str]) -> ClockMap:
    meta = meta or {}
    t0 = _pair(meta.get("t0"))
    if t0 is None:
        return ClockMap(None)
    sync = _pair(meta.get("clock_sync"))
    base = trace.top.get("baseTimeNanoseconds")
    base = float(base) if isinstance(base, (int, float)) and not isinstance(base, bool) else None
    x = trace.x
    try:
        nid = trace.names.index(CLOCK_SYNC)
    except ValueError:
        nid = -1
    markers = sorted(float(t) for t in x["ts"][x["name"] == nid]) if nid >= 0 else []
    if sync is not None and markers and (meta.get("clock_sync") or {}).get("marker") == CLOCK_SYNC:
        if base is not None:   # several windows: the marker whose wall time matches the recorded pair
            predicted = sync[0] / 1e3 - base / 1e3
            marker = min(markers, key=lambda m: abs(m - predicted))
            if abs(marker - predicted) > 1e6:
                warnings.append(f"the ll/clock_sync marker is {abs(marker - predicted) / 1e3:.0f} ms away from "
                                "meta.json clock_sync's wall time: frame times may be misplaced")
        else:
            marker = markers[0]
            if len(markers) > 1:
                warnings.append(f"{len(markers)} ll/clock_sync markers and no baseTimeNanoseconds: aligned to the "
                                "first one")
        return ClockMap("ll/clock_sync marker", t0[1], sync[1], marker)
    if base is not None:
        # wall clock: trace_us = time_ns/1000 - base/1000, with time_ns = t0.time_ns + s*1e9
        # (the wall clock stands in for perf_counter here: both axes are time_ns)
        return ClockMap("wall clock (baseTimeNanoseconds)", t0[0], t0[0], (t0[0] - base) / 1e3)
    warnings.append("no ll/clock_sync marker and no baseTimeNanoseconds in the trace: frames and run events "
                    "cannot be placed on its clock")
    return ClockMap(None)


@dataclass
class Slice:
    """Times in integer ns of the trace clock: children then nest exactly after any JSON
    round trip (µs doubles near 4.6e12 are only good to about 1 ns)."""
    ts_ns: int
    dur_ns: int
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    depth: int = 0

    @property
    def ts(self) -> float:      # µs
        return self.ts_ns / 1e3

    @property
    def dur(self) -> float:
        return self.dur_ns / 1e3


@dataclass
class Marker:
    ts_ns: int
    name: str
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def ts(self) -> float:
        return self.ts_ns / 1e3


@dataclass
class Timeline:
    clock: ClockMap
    frames: list[Slice] = field(default_factory=list)        # blocks (depth 0) with their frames (depth 1)
    latency: list[tuple[int, float]] = field(default_factory=list)   # (ns, ms per frame) counter samples
    switches: list[Slice] = field(default_factory=list)      # request -> first frame of the new prompt
    markers: list[Marker] = field(default_factory=list)
    regions: list[RegionInstance] = field(default_factory=list)
    blocks: dict[int, tuple[float, float]] = field(default_factory=dict)   # ll/block[i] host span, µs
    warnings: list[str] = field(default_factory=list)


def _ns(us: float) -> int:
    return int(round(us * 1e3))


def build(trace: Trace, run: RunData, instances: Instances) -> Timeline:
    warnings: list[str] = []
    clock = clock_map(trace, run.meta, warnings) if run.run_dir is not None else ClockMap(None)
    tl = Timeline(clock, regions=list(instances.regions), warnings=warnings)
    for r in instances.regions:
        b = names.index_of(r.name, names.BLOCK)
        if b is not None:
            tl.blocks[b] = (r.start_us, r.end_us)
    if not clock.ok:
        return tl

    # frames: a block's frames split its time [end - block_ms, end] evenly (they come out together;
    # a player paces them), nested under one slice for the block
    by_block: dict[int, list] = {}
    for f in run.frames:      # FrameRecords: the reader checked their types
        by_block.setdefault(f.block, []).append(f)
    prev_end = None
    for b in sorted(by_block):
        fr = sorted(by_block[b], key=lambda f: f.frame)
        end = _ns(clock(fr[0].ready_s))
        start = _ns(clock(fr[0].ready_s) - fr[0].block_ms * 1e3)
        if prev_end is not None:
            start = max(start, prev_end)
        if end <= start:
            continue
        prev_end = end
        kinds = {f.kind for f in fr}
        label = " (first)" if "first" in kinds else " (after switch)" if "switch" in kinds else ""
        tl.frames.append(Slice(start, end - start, f"block {b}{label}",
                               {"block": b, "frames": len(fr), "block_ms": fr[0].block_ms,
                                "ms_per_frame": fr[0].latency_ms, "prompt": fr[0].prompt}))
        n = len(fr)
        for i, f in enumerate(fr):
            fs = start + (end - start) * i // n
            fe = start + (end - start) * (i + 1) // n
            tl.frames.append(Slice(fs, fe - fs, f"frame {f.frame}",
                                   {k: getattr(f, k) for k in ("frame", "block", "prompt", "kind", "latency_ms",
                                                               "ready_s", "clock")}, depth=1))
        tl.latency.append((start, fr[0].latency_ms))
    if tl.latency and prev_end is not None:
        tl.latency.append((prev_end, tl.latency[-1][1]))   # the last value holds to the last frame

    prev_end = None
    for e in run.events:      # EventRecords
        t, kind, data, msg = e.t_s, e.kind, e.data, e.message
        if t is None:
            continue
        tl.markers.append(Marker(_ns(clock(float(t))), _marker_name(kind, msg, data), kind,
                                 {"message": msg, **({"data": data} if data else {})}))
        if kind == "prompt_switch" and data.get("phase") == "done" \
                and isinstance(data.get("requested_s"), (int, float)) and isinstance(data.get("latency_ms"), (int, float)):
            req = clock(float(data["requested_s"]))
            start, end = _ns(req), _ns(req + float(data["latency_ms"]) * 1e3)
            if prev_end is not None:
                start = max(start, prev_end)
            if end > start:
                prev_end = end
                tl.switches.append(Slice(start, end - start, f"prompt switch -> {data.get('prompt')}",
                                         {"latency_ms": data["latency_ms"], "prompt": data.get("prompt"),
                                          "block": data.get("block")}))
    return tl


def _marker_name(kind: str, message: str, data: dict[str, Any]) -> str:
    if kind == "recompile":
        fn = data.get("function") if isinstance(data.get("function"), dict) else {}
        return f"recompile {fn.get('name', '')}".strip()
    if kind == "graph_break":
        return f"graph break {data.get('where', '')}".strip()
    if kind == "prompt_switch":
        return f"prompt switch {data.get('phase', '')} -> {data.get('prompt', '')}".strip()
    short = message if len(message) <= 60 else message[:59] + "…"
    return f"{kind}: {short}" if short else kind

