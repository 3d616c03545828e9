"""Records each CUDA-graph capture once, so that replayed kernels can be put back under the
regions that were open when they were captured (lltrace.trace.graphs reads the record).

Kernels replayed from a graph carry no annotation: the trace shows them under the range around
`cudaGraphLaunch` only. During `torch.cuda.graph` capture, though, the Python code runs once
with every region, compiled-region and op range open, and each kernel launch it makes becomes
one node of the graph, in order. So the capture, recorded by torch.profiler, is the map from
replay position to region. The pipeline opens `observer.graph_capture(i)` around the capture
of graph i (`ll/graph_capture[i]`) and `ll/graph[i]` around each replay.

Where the record goes: if the run's profiler window is recording at capture time, the capture
is in the window's own trace; otherwise a private profiler records just the capture into
`graph-capture-<i>.json.gz` in the run directory (docs/FORMATS.md §2). The cost is paid once,
at capture; nothing runs per replay but the `ll/graph[i]` range.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

from lltrace import names
from lltrace.capture.events import EventSink, RunEvent
from lltrace.capture.profiler import PROFILER_LOG, native_stderr_to, write_trace_gz
from lltrace.capture.regions import Region

CAPTURE_FILE = "graph-capture-{index}.json.gz"


def capture_region(index: int) -> str:
    return names.name(names.GRAPH_CAPTURE, index)


class GraphCaptureRecorder:
    """`record(i)`: a context manager around the capture of graph i.

    `window_state()` says what the run's profiler is doing: "recording" (the capture lands in
    its trace), "idle" (record privately) or "busy" (warming up: a second profiler cannot start,
    so the capture is not recorded and a note says so)."""

    def __init__(self, out_dir: Path | str | None, window_state: Callable[[], str],
                 sinks: Iterable[EventSink] = ()):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.window_state = window_state
        self.sinks = list(sinks)
        self.records: list[dict] = []     # meta.json `graph_captures`

    @contextlib.contextmanager
    def record(self, index: int) -> Iterator[None]:
        state = self.window_state()
        can = self.out_dir is not None and torch.cuda.is_available()
        prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=False) \
            if can and state == "idle" else None
        log = self.out_dir / PROFILER_LOG if prof is not None else None
        if prof is not None:
            with native_stderr_to(log):    # Kineto's start/stop lines go to the run's log
                prof.start()
        try:
            with Region(capture_region(index)):
                yield
        finally:
            if prof is not None:
                with native_stderr_to(log):
                    prof.stop()
        if prof is not None:
            path = self.out_dir / CAPTURE_FILE.format(index=index)
            write_trace_gz(prof, path)
            self._done(index, path.name)
        elif state == "recording":
            self._done(index, "trace")
        elif can:
            self._done(index, None, "the profiler window was warming up during the capture")
        else:
            self._done(index, None)

    def _done(self, index: int, where: str | None, why: str | None = None) -> None:
        rec = {"graph": index, "record": where}
        if why:
            rec["note"] = why
        self.records.append(rec)
        msg = (f"CUDA graph {index} captured; capture recorded in {where}" if where else
               f"CUDA graph {index} captured, not recorded ({why or 'no run directory'}): its replays "
               "stay at step level in the budget")
        for sink in self.sinks:
            sink(RunEvent("note", msg, {"source": "graph_capture", **rec}))
