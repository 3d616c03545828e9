"""The run directory `traces/<run-id>/` (docs/FORMATS.md §2): its writer and its one reader.

Every whole file (meta.json, summary.json) is written to a temp file in the same directory and
moved into place with os.replace; frames.jsonl / events.jsonl get one complete line per write,
flushed, so a killed run leaves every finished line readable.
"""
from __future__ import annotations

import json
import os
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from lltrace.capture.events import EventRecord, RunEvent, TimeBase
from lltrace.capture.frame_clock import ClockStats, FrameRecord, clock_stats
from lltrace.capture.schema import check_meta, check_summary
from lltrace.errors import LltraceError
from lltrace.inputs import is_regular_file, what_is
from lltrace.paths import traces_dir

STATUSES = ("running", "completed", "interrupted", "error")
_FRAME_ENCODER = msgspec.json.Encoder()


def _json_default(obj: Any) -> Any:
    for attr in ("tolist", "item"):  # numpy / torch scalars and arrays
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _finite(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(_finite(obj), default=_json_default, indent=indent, allow_nan=False)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON to `path` via a temp file in the same directory and os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(dumps(obj, indent=2))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def new_run_id(preset: str, when: datetime | None = None) -> str:
    """`YYYYmmdd-HHMMSS-<preset>`."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in preset) or "run"
    return f"{(when or datetime.now()).strftime('%Y%m%d-%H%M%S')}-{safe}"


class RunDirectory:
    """Creates and fills one run directory. Thread-safe appends (the frame clock writes from
    its own thread on CUDA)."""

    def __init__(self, path: Path | str, run_id: str | None = None):
        self.path = Path(path)
        self.run_id = run_id or self.path.name
        self.meta: dict[str, Any] = {}
        self.time_base: TimeBase | None = None
        self._early_events: list[RunEvent] = []
        self._lock = threading.Lock()
        self._files: dict[str, Any] = {}
        self.frames_written = 0
        self.events_written = 0

    @classmethod
    def create(cls, preset: str, root: Path | str | None = None, run_id: str | None = None) -> "RunDirectory":
        """Make `root/<run-id>/` (root: lltrace.paths.traces_dir()); a clash gets a `-2` suffix."""
        root = Path(root) if root is not None else traces_dir()
        base = run_id or new_run_id(preset)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LltraceError(f"cannot create the traces directory {root}: {exc.strerror}") from None
        for n in range(1, 1000):
            rid = base if n == 1 else f"{base}-{n}"
            try:
                (root / rid).mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise LltraceError(f"cannot create run directory {root / rid}: {exc.strerror}") from None
            return cls(root / rid, rid)
        raise LltraceError(f"cannot find a free run directory name for {base} in {root}")

    # -- whole files ----------------------------------------------------------------------------
    def write_meta(self, **updates: Any) -> dict[str, Any]:
        with self._lock:
            self.meta.update(updates)
            self.meta.setdefault("run_id", self.run_id)
            write_json_atomic(self.path / "meta.json", self.meta)
            return dict(self.meta)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / "summary.json", summary)

    # -- line files -----------------------------------------------------------------------------
    def _append(self, name: str, obj: dict[str, Any]) -> None:
        self._write_line(name, dumps(obj) + "\n")

    def _write_line(self, name: str, line: str) -> None:
        with self._lock:
            f = self._files.get(name)
            if f is None:
                f = self._files[name] = open(self.path / name, "a", encoding="utf-8")
            f.write(line)  # one write per line: a reader never sees half of a flushed line
            f.flush()

    def append_frame(self, rec: FrameRecord) -> None:
        # msgspec, not dumps(): 0.3 vs 8 us a line, and a block has 12 frames, written on the
        # thread of a host-bound pipeline (CPU) or the clock's, which takes the GIL from it (CUDA).
        # Its NaN/inf -> null is what _finite does; a record holds only numbers and strings.
        self._write_line("frames.jsonl", _FRAME_ENCODER.encode(rec.to_json()).decode() + "\n")
        self.frames_written += 1

    def append_event(self, event: RunEvent) -> None:
        """Events before the time base is set wait in memory (their t_s needs it)."""
        with self._lock:
            if self.time_base is None:
                self._early_events.append(event)
                return
        self._append("events.jsonl", event.to_json(self.time_base))
        self.events_written += 1

    def set_time_base(self, base: TimeBase) -> None:
        """The run's origin for `t_s` (run start); writes the events that waited for it."""
        with self._lock:
            self.time_base = base
            early, self._early_events = self._early_events, []
        for event in early:
            self.append_event(event)

    def touch_lines(self) -> None:
        """Create frames.jsonl and events.jsonl now, so even a run with none has them."""
        with self._lock:
            for name in ("frames.jsonl", "events.jsonl"):
                if name not in self._files:
                    self._files[name] = open(self.path / name, "a", encoding="utf-8")

    # -- end --------------------------------------------------------------------------------------
    def finalize(self, status: str, reason: str, message: str = "",
                 summary: dict[str, Any] | None = None, **meta_updates: Any) -> None:
        """Write summary.json (if given) and meta.json with `status` and `end`; close the files."""
        if status not in STATUSES:
            raise ValueError(f"bad status {status!r}")
        if self.time_base is None and self._early_events:
            self.set_time_base(TimeBase.now())  # the run never started: keep its events anyway
        if summary is not None:
            self.write_summary(summary)
        self.write_meta(status=status, end={"reason": reason, "message": message,
                                             "time": datetime.now().astimezone().isoformat(timespec="milliseconds"),
                                             "frames": self.frames_written, "events": self.events_written},
                        **meta_updates)
        self.close()

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                try:
                    f.close()
                except OSError:
                    pass
            self._files.clear()


def summary_from_stats(stats: ClockStats, *, status: str, peak_mem_bytes: int | None,
                       peak_host_rss_bytes: int | None = None) -> dict[str, Any]:
    """summary.json (FORMATS.md §2) from the frame clock's final snapshot."""
    return {
        "frames": stats.frames,
        "blocks": stats.blocks,
        "ms_per_frame": {"mean": stats.mean_ms, "p50": stats.p50_ms, "p95": stats.p95_ms, "p99": stats.p99_ms},
        "fps": stats.fps,
        "first_frame_ms": stats.first_frame_ms,
        "prompt_switch_ms": list(stats.switch_ms),
        "ms_per_block": dict(stats.block_ms),
        "peak_mem_bytes": peak_mem_bytes,
        "peak_host_rss_bytes": peak_host_rss_bytes,
        "partial": status != "completed",
        "status": status,
        "clock": stats.clock,
        "steady_frames": stats.steady_frames,
        "profiled_frames": stats.profiled_frames,
        "cold_frames": stats.cold_frames,
        "warm_first_frame_ms": stats.warm_first_frame_ms,
        "cold_start": dict(stats.cold_start),
    }


def stats_from_summary(summary: dict[str, Any], frames: list[FrameRecord] = ()) -> ClockStats:
    """summary.json read back into the ClockStats it was written from (summary_from_stats)."""
    def num(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    def count(v):
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
    mpf = summary.get("ms_per_frame") if isinstance(summary.get("ms_per_frame"), dict) else {}
    mpb = summary.get("ms_per_block") if isinstance(summary.get("ms_per_block"), dict) else {}
    switches = summary.get("prompt_switch_ms") if isinstance(summary.get("prompt_switch_ms"), list) else []
    return ClockStats(clock=str(summary.get("clock", "host")), frames=count(summary.get("frames")),
                      blocks=count(summary.get("blocks")), steady_frames=count(summary.get("steady_frames")),
                      mean_ms=num(mpf.get("mean")), p50_ms=num(mpf.get("p50")), p95_ms=num(mpf.get("p95")),
                      p99_ms=num(mpf.get("p99")), fps=num(summary.get("fps")),
                      first_frame_ms=num(summary.get("first_frame_ms")),
                      switch_ms=[x for x in map(num, switches) if x is not None],
                      block_ms={k: num(v) for k, v in mpb.items()},
                      last_ready_s=max((f.ready_s for f in frames), default=None),
                      profiled_frames=count(summary.get("profiled_frames")),
                      cold_frames=count(summary.get("cold_frames")),
                      warm_first_frame_ms=num(summary.get("warm_first_frame_ms")),
                      cold_start=_cold_start(summary.get("cold_start"), num, count))


def _cold_start(v: Any, num, count) -> dict[str, Any]:
    """summary.json `cold_start` read back: {"blocks", "compile_ms", "graph_capture_ms"}; {} if absent."""
    if not isinstance(v, dict):
        return {}
    blocks = v.get("blocks") if isinstance(v.get("blocks"), list) else []
    return {"blocks": [b for b in blocks if count(b) == b and not isinstance(b, bool)],
            "compile_ms": num(v.get("compile_ms")) or 0.0, "graph_capture_ms": num(v.get("graph_capture_ms")) or 0.0}


# ----------------------------------------------------------------------------- reader
# The one reader of the files above, next to their writer: a format change is one edit here.

@dataclass
class RunData:
    """The non-trace files of a run directory, read leniently: a killed run leaves a cut last
    line, a missing file is "unknown" (None / []), and a bad line or file is a warning."""
    run_dir: Path | None
    meta: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    frames: list[FrameRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def stats(self) -> ClockStats:
        """The run's frame statistics: summary.json's, else recomputed from frames.jsonl."""
        if self.summary is not None:
            return stats_from_summary(self.summary, self.frames)
        switches = [float(e.data["latency_ms"]) for e in self.events
                    if e.kind == "prompt_switch" and e.data.get("phase") == "done"
                    and isinstance(e.data.get("latency_ms"), (int, float))]
        clock = self.frames[0].clock if self.frames else "host"
        return clock_stats(self.frames, switches, clock)


def _present(path: Path, warnings: list[str]) -> bool:
    """A regular file is there; a FIFO, device or directory by that name is a warning (reading
    it could block forever), a missing file is just missing."""
    if is_regular_file(path):
        return True
    what = what_is(path) if os.path.lexists(path) else None
    if what:
        warnings.append(f"{path.name} is {what}, not a file: ignored")
    return False


def read_json(path: Path, warnings: list[str], consequence: str = "ignored") -> Any:
    """The decoded JSON file, or None when it is missing or unreadable (a warning says which and
    ends with `consequence`). Any JSON value comes back: capture.schema's checks say what is
    not an object."""
    if not _present(path, warnings):
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        warnings.append(f"{path.name} is unreadable ({exc.__class__.__name__}): {consequence}")
        return None


def read_jsonl(path: Path, record, warnings: list[str]) -> list:
    """The records of a .jsonl file (`record.from_json` per line); bad lines are skipped and
    counted in one warning, a cut last line (a killed run) included."""
    if not _present(path, warnings):
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        warnings.append(f"{path.name} is unreadable ({exc.strerror or exc}): ignored")
        return []
    out, bad, why = [], 0, None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(record.from_json(json.loads(line)))
        except (ValueError, TypeError, RecursionError) as exc:
            bad += 1
            why = why or str(exc)
    if bad:
        warnings.append(f"{path.name}: {bad} unreadable line(s) skipped ({why})")
    return out


def read_run(run_dir: Path | None, meta: dict[str, Any] | None = None) -> RunData:
    """Everything but the trace; an empty RunData for None (a bare trace file)."""
    if run_dir is None:
        return RunData(None, meta)
    warnings: list[str] = []
    run_dir = Path(run_dir)
    if meta is None:
        meta = check_meta(read_json(run_dir / "meta.json", warnings), warnings)
    return RunData(run_dir, meta, check_summary(read_json(run_dir / "summary.json", warnings), warnings),
                   read_jsonl(run_dir / "frames.jsonl", FrameRecord, warnings),
                   read_jsonl(run_dir / "events.jsonl", EventRecord, warnings), warnings)


def read_meta(path: Path | None, warnings: list[str] | None = None) -> dict[str, Any] | None:
    """meta.json of a run, or None; a broken one is a warning, not an error (the trace loader's
    reader: the model config for FLOPs, without reading the rest of the run)."""
    if path is None:
        return None
    warnings = warnings if warnings is not None else []
    return check_meta(read_json(path, warnings, "no model config"), warnings, path.name)
