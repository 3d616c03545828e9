"""Profiler windows: which blocks get recorded, on-demand windows, clock sync, cut-short windows."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

from lltrace.capture.profiler import CLOCK_SYNC, ProfilerWindow, check_blocks
from lltrace.capture.regions import region
from lltrace.errors import LltraceError


def load(path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return json.load(f)["traceEvents"]


def blocks_in(path) -> list[int]:
    names = [e["name"] for e in load(path) if e.get("cat") == "user_annotation"]
    return sorted(int(n[len("ll/block["):-1]) for n in names if n.startswith("ll/block["))


def run_blocks(window: ProfilerWindow, n: int, during=None) -> None:
    for i in range(n):
        if during:
            during(i)
        with region(f"ll/block[{i}]"):
            torch.randn(16, 16).matmul(torch.randn(16, 16))
        window.step()


def test_check_blocks():
    # parsing "3:6" is the command line's (tests/test_params.py); the library checks the range
    assert check_blocks((3, 6)) == (3, 6) and check_blocks([0, 1]) == (0, 1)
    assert check_blocks(None) is None
    for bad in ((3,), (6, 3), (3, 3), (-1, 2), ("a", "b"), (1, 2, 3)):
        with pytest.raises(LltraceError, match="profiler window"):
            check_blocks(bad)
    with pytest.raises(LltraceError, match="last block"):
        check_blocks((3, 9), num_blocks=8)


@pytest.mark.parametrize("blocks", [(2, 4), (0, 2)])
def test_scheduled_window_records_exactly_its_blocks(tmp_path, blocks):
    events = []
    w = ProfilerWindow(tmp_path, blocks=blocks, sinks=[events.append])
    w.start()
    run_blocks(w, 6)
    w.close()
    assert [p.name for p in w.traces] == ["trace.json.gz"]
    assert blocks_in(w.traces[0]) == list(range(*blocks))
    assert w.windows == [{"blocks": list(blocks), "file": "trace.json.gz", "partial": False}]
    assert [e.data["phase"] for e in events if e.kind == "profile_window"] == ["start", "saved"]
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_clock_sync_marker_aligns_kineto_with_wall_time(tmp_path):
    w = ProfilerWindow(tmp_path, blocks=(1, 2))
    w.start()
    run_blocks(w, 3)
    w.close()
    with gzip.open(w.traces[0], "rt") as f:
        trace = json.load(f)
    marker = [e for e in trace["traceEvents"] if e.get("name") == CLOCK_SYNC]
    assert len(marker) == 1 and marker[0]["cat"] == "user_annotation"
    block1 = next(e for e in trace["traceEvents"] if e.get("name") == "ll/block[1]")
    assert marker[0]["ts"] <= block1["ts"]  # at the start of the window
    # Kineto ts (+ baseTimeNanoseconds) is wall-clock µs: the marker sits at the saved time_ns.
    wall_us = marker[0]["ts"] + trace.get("baseTimeNanoseconds", 0) / 1e3
    assert wall_us == pytest.approx(w.clock_sync.time_ns / 1e3, abs=50_000)


def test_on_demand_window_from_another_thread(tmp_path):
    w = ProfilerWindow(tmp_path)          # no scheduled window
    w.start()

    def during(i):
        if i == 1:
            w.request(2)                   # e.g. the TUI's key press; starts at the next block
    run_blocks(w, 6, during)
    assert blocks_in(w.traces[0]) == [2, 3]
    w.request(10)
    run_blocks(w, 1)                      # the window opens at the end of this block ...
    w.stop_request()
    run_blocks(w, 1)                      # ... records this one, then stops early
    w.close()
    assert [p.name for p in w.traces] == ["trace.json.gz", "trace-2.json.gz"]
    assert w.windows[1]["blocks"] == [7, 8] and blocks_in(w.traces[1]) == [0]


def test_window_cut_short_is_still_written(tmp_path):
    w = ProfilerWindow(tmp_path, blocks=(1, 100))
    w.start()
    run_blocks(w, 4)
    w.close(mid_block=False)
    assert blocks_in(w.traces[0]) == [1, 2, 3]
    assert w.windows == [{"blocks": [1, 4], "file": "trace.json.gz", "partial": True}]


def test_closing_before_the_window_writes_nothing(tmp_path):
    w = ProfilerWindow(tmp_path, blocks=(5, 6))
    w.start()
    run_blocks(w, 2)
    w.close()
    assert w.traces == [] and list(tmp_path.iterdir()) == []
