"""Recompile monitor: real torch.compile recompiles and graph breaks, captured in-process."""
from __future__ import annotations

import logging

import torch

from lltrace.capture.events import RunEvent
from lltrace.capture.recompiles import (TRACE_LOGGER, RecompileMonitor, compile_parts, guard_summary,
                                        recompile_reasons)


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
    # the message summarizes dynamo's guard; events.jsonl keeps the raw text in data
    assert "window changed (was 12)" in ev.message and "scale_by_window" in ev.message
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


# dynamo's guard failures as torch 2.13 words them (seen with backend="eager")
RAW_GUARDS = [
    ("0/0: tensor 'x' size mismatch at index 0. expected 4, actual 8", "x.size()[0] changed 4 → 8"),
    ("0/1: tensor 'x' dtype mismatch. expected Float, actual Double", "x dtype changed Float → Double"),
    ("tensor 'L['x']' stride mismatch at index 1. expected 8, actual 1", "L['x'].stride()[1] changed 8 → 1"),
    ("0/2: k == 2                                       #   # <stdin>:7 in f\nUser stack trace:\n  File ...",
     "k changed (was 2)"),
    ("start == 4680  # kv_cache.local_end_index", "start changed (was 4680)"),
    ("0/3: not ___dict_contains('n', G['m'].__dict__)          #   # <stdin>:7 in f",
     "guard failed: not ___dict_contains('n', G['m'].__dict__)"),
    ("", "unknown reason"),
]


def test_guard_failures_are_summarized_in_one_line():
    for raw, want in RAW_GUARDS:
        assert guard_summary(raw) == want, raw
    long = "0/0: " + "___check_obj_id(L['self'].blocks[0], 140)" * 5
    assert len(guard_summary(long)) == 80 and guard_summary(long).endswith("…")
    # one recompile lists each distinct failure once, most recent cache entry first
    reasons = [RAW_GUARDS[1][0], "0/0: tensor 'x' dtype mismatch. expected Float, actual Double"]
    assert recompile_reasons(reasons) == ["x dtype changed Float → Double"]


def test_compile_parts_split_the_compile_events_time():
    def compile_event(total, backend, inductor, autotune_us=None, runtime_us=None):
        data = {"entire_frame_compile_time_s": total, "backend_compile_time_s": backend,
                "inductor_compile_time_s": inductor}
        if autotune_us is not None:
            data["compile_time_autotune_time_us"] = autotune_us
        if runtime_us is not None:
            data["runtime_triton_autotune_time_us"] = runtime_us
        return RunEvent("compile", "compiled forward", data)

    events = [compile_event(20.0, 18.0, 15.0, autotune_us=9_000_000),
              compile_event(2.0, 1.5, 1.0, runtime_us=500_000),
              RunEvent("recompile", "recompiling forward", {}),
              RunEvent("compile", "compile of forward failed", {"fail_type": "x"})]
    p = compile_parts(events)
    assert p["compiles"] == 3
    assert p["dynamo_s"] == 2.0 + 0.5 and p["aot_autograd_s"] == 3.0 + 0.5
    assert p["inductor_s"] == 6.0 + 1.0 and p["autotune_s"] == 9.0 + 0.5
    assert p["total_s"] == 22.5
    assert compile_parts([]) == {"compiles": 0, "total_s": 0.0, "dynamo_s": 0.0, "aot_autograd_s": 0.0,
                                 "inductor_s": 0.0, "autotune_s": 0.0}
