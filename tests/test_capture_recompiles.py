"""Recompile monitor: real torch.compile recompiles and graph breaks, captured in-process."""
from __future__ import annotations

import logging

import torch

from lltrace.capture.recompiles import TRACE_LOGGER, RecompileMonitor


def test_changing_an_int_argument_is_a_recompile_with_its_reason():
    torch._dynamo.reset()
    @torch.compile(backend="eager")
    def scale_by_window(x, window):
        return x * window + 1

    x = torch.randn(4)
    seen = []
    with RecompileMonitor([seen.append]) as mon:
        scale_by_window(x, 12)
        scale_by_window(x, 12)        # same int: no recompile
        scale_by_window(x, 6)         # new int: guard `window == 12` fails
    recompiles = [e for e in mon.events if e.kind == "recompile"]
    assert len(recompiles) == 1
    ev = recompiles[0]
    assert "window == 12" in ev.message and "scale_by_window" in ev.message
    assert any("window == 12" in r for r in ev.data["reasons"])
    assert ev.data["function"]["name"] == "scale_by_window"
    assert ev.data["function"]["file"].endswith("test_capture_recompiles.py")
    compiles = [e for e in mon.events if e.kind == "compile"]
    assert len(compiles) == 2 and compiles[1].data["recompile_reason"]
    assert seen == mon.events                           # sinks got every event, in order
    assert [e.time_ns for e in mon.events] == sorted(e.time_ns for e in mon.events)


def test_graph_break_is_reported_with_where_and_why():
    @torch.compile(backend="eager")
    def breaks(x):
        y = x * 2
        torch._dynamo.graph_break()
        return y + 1

    with RecompileMonitor() as mon:
        breaks(torch.randn(3))
    gbs = [e for e in mon.events if e.kind == "graph_break"]
    assert gbs, [e.message for e in mon.events]
    assert "test_capture_recompiles.py" in gbs[0].data["where"]
    assert "graph_break" in gbs[0].data["reason"] or "graph break" in gbs[0].message.lower()


def test_cudagraph_skip_from_inductors_logger():
    # The real logging call inductor makes when it cannot use CUDA graphs (compiling for CUDA
    # graphs needs a GPU; the message path is the same).
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    with RecompileMonitor() as mon:
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to mutated inputs (1 instances)")
    skips = [e for e in mon.events if e.kind == "cudagraph_skip"]
    assert len(skips) == 1 and skips[0].data["reason"] == "mutated inputs (1 instances)"


def test_logging_state_is_restored():
    trace_log = logging.getLogger(TRACE_LOGGER)
    before = (list(trace_log.handlers), trace_log.level, list(logging.getLogger("torch").handlers))
    mon = RecompileMonitor()
    with mon:
        assert len(trace_log.handlers) == len(before[0]) + 1
    assert (list(trace_log.handlers), trace_log.level, list(logging.getLogger("torch").handlers)) == before

    @torch.compile(backend="eager")
    def f(x, n):
        return x * n

    f(torch.ones(2), 1)
    f(torch.ones(2), 2)
    assert mon.events == []  # nothing recorded once stopped
