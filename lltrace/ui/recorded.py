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

from lltrace.capture.events import EventRecord
from lltrace.capture.frame_clock import ClockStats, FrameRecord
from lltrace.capture.rundir import read_json, read_run
from lltrace.capture.schema import check_meta
from lltrace.errors import LltraceError
from lltrace.inputs import is_regular_file, os_error, what_is
from lltrace.trace.loader import resolve_source

TRACE_SUFFIXES = (".json", ".json.gz")


@dataclass
class RecordedRun:
    path: Path                              # the run directory, or the trace / budget file
    kind: str                               # "run" | "trace" | "budget"
    meta: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    frames: list[FrameRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
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
    """("run" | "trace" | "budget", path): lltrace.trace.loader.resolve_source, which also takes
    a run directory that was never profiled here; a file must look like a trace. A directory
    that cannot be searched is a one-line error."""
    src = resolve_source(path, require_trace=False)
    if src.kind == "run" and not Path(path).is_file():   # a directory or a run id
        try:
            os.stat(os.path.join(src.run_dir, "."))   # the directory can be searched, not only listed
        except OSError as exc:
            raise os_error(src.run_dir, exc) from None
        return "run", src.run_dir
    if src.kind != "budget" and not src.path.name.endswith(TRACE_SUFFIXES):   # a file named explicitly
        raise LltraceError(f"{src.path}: not a trace (.json / .json.gz) nor a run directory")
    return ("budget" if src.kind == "budget" else "trace"), src.path


def load_recorded(path: str | Path) -> RecordedRun:
    """Read a run directory's small files (capture.rundir.read_run); a trace or budget file
    gives a run with only a budget."""
    kind, p = locate(path)
    if kind != "run":
        meta = check_meta(read_json(p.parent / "meta.json", []), []) if kind == "trace" else None
        return RecordedRun(path=p, kind=kind, meta=meta, has_trace=True)
    run = read_run(p)
    rec = RecordedRun(path=p, kind="run", meta=run.meta, summary=run.summary, frames=run.frames,
                      events=run.events, warnings=list(run.warnings),
                      has_trace=resolve_source(p, require_trace=False).has_trace)
    for n in ("trace.json.gz", "trace.json"):   # a FIFO or device by a trace's name is never read
        what = what_is(p / n) if os.path.lexists(p / n) and not is_regular_file(p / n) else None
        if what:
            rec.warnings.append(f"{n} is {what}, not a file: ignored")
    rec.stats = run.stats()
    if run.summary is None and run.frames:
        rec.warnings.append("no summary.json (the run was killed?): statistics recomputed from frames.jsonl")
    return rec


def load_run_budget(rec: RecordedRun):
    """The Budget of a recorded run (every profiled window), trace or budget JSON; None when the
    run has no profiled window."""
    from lltrace.trace.budget import load_budget

    if not rec.has_trace:
        return None
    return load_budget(rec.path)
