"""What CUDA graphs would save on one stage: the launch-bound gaps of one eager call.

One warm eager call of the stage runs under torch.profiler (CPU + CUDA activities); its trace
is read back with lltrace's own reader and budget (lltrace.trace.loader / budget, whose `idle`
object classifies every GPU gap: lltrace.trace.idle). The gaps where the GPU waited for the
host to launch the next kernel (`launch`) are what a graph replay removes at most: the upper
bound the TUI's CUDA-graph panel shows from a profiled window ("graphs save <= X ms"), here
for one call. It is an upper bound: a replay still runs every kernel, and fusion (compile)
may win more by removing kernels.
Needs CUDA: on the CPU there are no GPU gaps, and the report says so.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lltrace.doctor.report import GraphSavings

NEEDS_CUDA = "needs CUDA"


def needs_cuda() -> GraphSavings:
    return GraphSavings(note=NEEDS_CUDA)


def measure(call: Callable[[], object]) -> GraphSavings:
    """Profile `call()` (a warm eager call of the stage, on CUDA) and bound what graphs save."""
    from torch.profiler import ProfilerActivity, profile

    from lltrace.capture.profiler import native_stderr_to
    from lltrace.doctor.gpu_lock import timed_gpu

    with tempfile.TemporaryDirectory(prefix="lltrace-doctor-") as tmp:
        # Kineto's native lines (USDT, warnings) go to a log here, not to the user's terminal.
        # timed_gpu: with the stage groups in processes of their own (isolate.py), another
        # one's kernels on the GPU would show as gaps in this call; the others wait while it
        # holds the lock, so it holds it for the profiled call only, not for the export.
        with native_stderr_to(os.path.join(tmp, "profiler.log")):
            with timed_gpu():
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    t0 = time.perf_counter()
                    call()
                    torch.cuda.synchronize()
                    wall_ms = (time.perf_counter() - t0) * 1e3
            path = Path(tmp) / "stage.json"   # not gzipped: it is read once, right away
            prof.export_chrome_trace(str(path))
        return from_trace(path, wall_ms)


def from_trace(path: str | Path, call_ms: float | None = None) -> GraphSavings:
    """The bound from a torch.profiler trace of the call: the budget's launch-bound idle time
    (lltrace.trace.idle, the same analysis `lltrace budget` and the TUI's panel use)."""
    from lltrace.trace.budget import build_budget
    from lltrace.trace.loader import load_trace

    budget = build_budget(load_trace(path))
    if not budget.devices:
        return GraphSavings(call_ms=call_ms, note="no GPU activity in the call")
    idle = budget.idle or {}
    by_cause = {k: float(v) for k, v in (idle.get("by_cause") or {}).items()}
    span = sum(d["span_ms"] for d in budget.devices)
    launch = by_cause.get("launch", 0.0)
    return GraphSavings(ms=launch, share=launch / span if span > 0 else 0.0, call_ms=call_ms,
                        gpu_span_ms=span, idle_ms=float(idle.get("total_ms", 0.0)), by_cause=by_cause)
