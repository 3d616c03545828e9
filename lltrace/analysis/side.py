"""One input of `lltrace diff`: a run directory, run id, trace file or budget JSON, loaded
into its budget, per-instance values and the run directory's other files."""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lltrace.capture.rundir import RunData, read_meta, read_run
from lltrace.errors import LltraceError
from lltrace.trace.budget import Budget, budget_of, load_budget
from lltrace.trace.instances import Instances, measure
from lltrace.trace.loader import load_trace, resolve_source
from lltrace.trace.reader import Progress


@dataclass
class Side:
    """One input of the diff: its budget, per-instance values (None for a budget JSON) and
    the run directory's other files (empty for a bare trace)."""
    path: str
    kind: str                        # "run" | "trace" | "budget"
    budget: Budget
    instances: Instances | None
    run: RunData

    @property
    def describe(self) -> dict[str, Any]:
        b = self.budget
        meta = self.run.meta or {}
        return {"path": self.path, "kind": self.kind, "source": b.source, "metric": b.metric,
                "preset": (b.run or {}).get("preset") or meta.get("preset"),
                "run_id": (b.run or {}).get("run_id") or meta.get("run_id"),
                "device": b.trace.get("device") or (b.run or {}).get("device"),
                "profile_blocks": (meta.get("profile") or {}).get("blocks") if isinstance(meta.get("profile"), dict)
                else None,
                "partial": b.partial}


def _run_of_budget(budget: Budget) -> RunData:
    """The run directory a budget JSON was made from, if it is still there and is the same run."""
    run_id = (budget.run or {}).get("run_id")
    if not run_id or not budget.source:
        return RunData(None)
    d = Path(budget.source).parent
    meta = read_meta(d / "meta.json")
    if meta is None or meta.get("run_id") != run_id:
        return RunData(None)
    return read_run(d, meta)


def load_side(path: str | Path, progress: Progress | None = None) -> Side:
    """A run directory, a run id, a trace file or a budget JSON (LltraceError when none)."""
    src = resolve_source(path)
    if src.kind == "budget":
        b = load_budget(src.path)
        return Side(str(path), "budget", b, None, _run_of_budget(b))
    trace = load_trace(src, progress)
    inst = measure(trace)
    run = read_run(src.run_dir, trace.run_meta or {})   # {}: meta.json was read (and warned about) by the loader
    # What the loader found wrong with the trace (corrupt values, clocks, meta.json) holds for the
    # diff too; a partial trace has its own line in the diff.
    run.warnings[:0] = trace.warnings[1:] if trace.partial else trace.warnings
    return Side(str(path), src.kind, budget_of(trace, inst), inst, run)


def _side_or_error(path: str | Path) -> Side | tuple[str, str | None]:
    """load_side in a worker process: an LltraceError comes back as (message, hint), which
    pickles whole (the exception's args hold the message only)."""
    try:
        return load_side(path)
    except LltraceError as exc:
        return exc.message, exc.hint


def load_sides(*paths: str | Path, labels: tuple[str, ...] = ("A", "B")) -> list[Side]:
    """Every side of a diff, the traces read at the same time: the last one (B) in a forked
    worker process, the others here (the decode holds the GIL, so threads would take turns).
    A side is a few MB to send back. Sequential where fork is not the safe default (macOS,
    Windows) or when a side is a budget JSON (nothing to read). An error names its side:
    "B: no such file ...". """
    def named(label: str, got: Side | tuple[str, str | None]) -> Side:
        """The side, or its error (a (message, hint) pair) raised with the side's label."""
        if isinstance(got, tuple):
            raise LltraceError(f"{label}: {got[0]}", got[1])
        return got

    srcs = []
    for label, path in zip(labels, paths):
        try:
            srcs.append(resolve_source(path))
        except LltraceError as exc:
            named(label, (exc.message, exc.hint))
    parallel = (len(paths) > 1 and sys.platform.startswith("linux")
                and sum(s.kind != "budget" for s in srcs) > 1)
    if not parallel:
        return [named(label, _side_or_error(path)) for label, path in zip(labels, paths)]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        last = pool.submit(_side_or_error, paths[-1])
        try:
            out = [named(label, _side_or_error(path)) for label, path in zip(labels[:-1], paths[:-1])]
        except LltraceError:
            last.cancel()
            raise
        b = last.result()
    return [*out, named(labels[len(paths) - 1], b)]
