"""A recorded run for `lltrace view`: the run directory's files (docs/FORMATS.md §2) read back
into what the live app shows (frames, events, stats, knobs), plus where its budget comes from.

`locate(path)` is cheap (the CLI calls it before the TUI starts, for a one-line error);
`load_recorded(path)` reads meta / summary / frames / events; `load_run_budget(rec)` parses
the profiled windows. The last two run in worker threads: a long run's files are large.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from lltrace.analysis.rundata import _json, _jsonl, _present
from lltrace.capture.frame_clock import ClockStats, _dist
from lltrace.capture.schema import check_events, check_frames, check_meta, check_summary
from lltrace.errors import LltraceError
from lltrace.inputs import check_path, is_regular_file, os_error
from lltrace.paths import traces_dir

TRACE_SUFFIXES = (".json", ".json.gz")


@dataclass
class RecordedRun:
    path: Path                              # the run directory, or the trace / budget file
    kind: str                               # "run" | "trace" | "budget"
    meta: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stats: ClockStats | None = None
    has_trace: bool = False                 # a budget can be built (a trace or a budget JSON)
    warnings: list[str] = field(default_factory=list)
    budget: Any = None                      # read before the app opens (lltrace view), else None

    @property
    def name(self) -> str:
        if self.meta and self.meta.get("run_id"):
            return str(self.meta["run_id"])
        return self.path.name


def locate(path: str | Path) -> tuple[str, Path]:
    """("run" | "trace" | "budget", path); a run id is looked up under the traces directory."""
    from lltrace.trace.loader import _is_budget_json

    p = Path(path)
    if check_path(p) is None:
        candidate = traces_dir() / str(path)
        if check_path(candidate) is None or not candidate.is_dir():
            raise LltraceError(f"no such file or run directory: {path}")
        p = candidate
    if p.is_dir():
        try:
            os.stat(os.path.join(p, "."))   # the directory can be searched, not only listed
        except OSError as exc:
            raise os_error(p, exc) from None
        if is_regular_file(p / "meta.json") or is_regular_file(p / "frames.jsonl") or _trace_file(p):
            return "run", p
        raise LltraceError(f"{p}: not a run directory (no meta.json, frames.jsonl or trace)",
                           "give a run directory traces/<run-id>/, a trace file or a budget JSON")
    if _is_budget_json(p):
        return "budget", p
    if not p.name.endswith(TRACE_SUFFIXES):
        raise LltraceError(f"{p}: not a trace (.json / .json.gz) nor a run directory")
    return "trace", p


def _trace_file(d: Path) -> bool:
    try:
        from lltrace.trace.loader import _trace_in_dir
        return _trace_in_dir(d) is not None
    except OSError:
        return False


def switch_latencies(events: list[dict[str, Any]]) -> list[float]:
    return [float(e["data"]["latency_ms"]) for e in events
            if e.get("kind") == "prompt_switch" and isinstance(e.get("data"), dict)
            and e["data"].get("phase") == "done" and e["data"].get("latency_ms") is not None]


def stats_from_frames(frames: list[dict[str, Any]], switch_ms: list[float] | None = None) -> ClockStats:
    """The frame clock's statistics recomputed from frames.jsonl, for runs that ended without a
    summary.json (killed): the same rules as FrameClock.stats (steady frames, else all)."""
    if not frames:
        return ClockStats(clock="host", switch_ms=list(switch_ms or []))
    per_frame = [float(f["latency_ms"]) for f in frames if f.get("kind") == "steady"]
    steady_n = len(per_frame)
    per_frame = per_frame or [float(f["latency_ms"]) for f in frames]
    blocks: dict[int, tuple[str, float, int]] = {}
    for f in frames:
        blocks.setdefault(int(f["block"]), (f.get("kind", "steady"), float(f["block_ms"]), int(f["frames_in_block"])))
    chosen = [(ms, n) for kind, ms, n in blocks.values() if kind == "steady"] or \
             [(ms, n) for _, ms, n in blocks.values()]
    total_ms, total_frames = sum(ms for ms, _ in chosen), sum(n for _, n in chosen)
    d = _dist(per_frame)
    first = min(frames, key=lambda f: f["frame"])
    return ClockStats(clock=str(first.get("clock", "host")), frames=len(frames), blocks=len(blocks),
                      steady_frames=steady_n, mean_ms=d["mean"], p50_ms=d["p50"], p95_ms=d["p95"],
                      p99_ms=d["p99"], fps=(1e3 * total_frames / total_ms) if total_ms > 0 else None,
                      first_frame_ms=float(first["ready_s"]) * 1e3 if first.get("block") == 0 else None,
                      switch_ms=list(switch_ms or []), block_ms=_dist([ms for ms, _ in chosen]),
                      last_ready_s=max(float(f["ready_s"]) for f in frames))


def stats_from_summary(summary: dict[str, Any], frames: list[dict[str, Any]]) -> ClockStats:
    mpf = summary.get("ms_per_frame") or {}
    return ClockStats(clock=str(summary.get("clock", "host")), frames=int(summary.get("frames", 0)),
                      blocks=int(summary.get("blocks", 0)), steady_frames=int(summary.get("steady_frames", 0)),
                      mean_ms=mpf.get("mean"), p50_ms=mpf.get("p50"), p95_ms=mpf.get("p95"), p99_ms=mpf.get("p99"),
                      fps=summary.get("fps"), first_frame_ms=summary.get("first_frame_ms"),
                      switch_ms=list(summary.get("prompt_switch_ms") or []),
                      block_ms=dict(summary.get("ms_per_block") or {}),
                      last_ready_s=max((float(f["ready_s"]) for f in frames), default=None))


def load_recorded(path: str | Path) -> RecordedRun:
    """Read a run directory's small files; a trace or budget file gives a run with only a budget."""
    kind, p = locate(path)
    if kind != "run":
        meta = None
        if kind == "trace" and is_regular_file(p.parent / "meta.json"):
            meta = check_meta(_json(p.parent / "meta.json", []), [])
        return RecordedRun(path=p, kind=kind, meta=meta, has_trace=True)
    rec = RecordedRun(path=p, kind="run")
    rec.meta = check_meta(_json(p / "meta.json", rec.warnings), rec.warnings)
    rec.summary = check_summary(_json(p / "summary.json", rec.warnings), rec.warnings)
    rec.frames = check_frames(_jsonl(p / "frames.jsonl", rec.warnings), rec.warnings)
    rec.events = check_events(_jsonl(p / "events.jsonl", rec.warnings), rec.warnings)
    rec.has_trace = _trace_file(p)
    if not rec.has_trace:   # a FIFO or directory named like the trace is said, not skipped silently
        for name in ("trace.json.gz", "trace.json"):
            _present(p / name, rec.warnings)
    try:
        if rec.summary is not None:
            rec.stats = stats_from_summary(rec.summary, rec.frames)
        else:
            rec.stats = stats_from_frames(rec.frames, switch_latencies(rec.events))
            if rec.frames:
                rec.warnings.append("no summary.json (the run was killed?): statistics recomputed from frames.jsonl")
    except (KeyError, TypeError, ValueError) as exc:
        rec.warnings.append(f"frames.jsonl / summary.json do not follow FORMATS.md ({type(exc).__name__}: {exc})")
    return rec


def load_run_budget(rec: RecordedRun):
    """The Budget of a recorded run (every profiled window), trace or budget JSON; None when the
    run has no profiled window."""
    from lltrace.trace.budget import load_budget

    if not rec.has_trace:
        return None
    return load_budget(rec.path)
