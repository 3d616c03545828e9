"""Cold start apart from the first frame: blocks that compile or capture a CUDA graph are `cold`
(never steady), the warm first-frame latency leaves block 0's compile and capture out, and
summary.json / frames.jsonl carry both (FORMATS.md §2)."""
from __future__ import annotations

import json
import time

import pytest

from lltrace.capture import schema
from lltrace.capture.frame_clock import (
    FrameClock,
    FrameRecord,
    clock_stats,
    steady_blocks,
)
from lltrace.capture.observer import CaptureObserver
from lltrace.capture.rundir import stats_from_summary, summary_from_stats


def block(b: int, kind: str, block_ms: float, ready_s: float, n: int = 12, compile_ms: float = 0.0,
          capture_ms: float = 0.0, first_frame: int = 0) -> list[FrameRecord]:
    return [FrameRecord(first_frame + i, b, 0, kind, ready_s, block_ms / n, block_ms, n, "cuda", compile_ms, capture_ms)
            for i in range(n)]


def ultra_like_run() -> list[FrameRecord]:
    """What the H200 showed: block 0 is 30.4 s, nearly all torch.compile (autotuning included) and
    graph capture; block 1 captures the second graph shape; 2..3 are profiled; 4.. are steady."""
    frames, ready, n = [], 0.0, 0
    spec = [(0, "first", 30_419.0, 28_000.0, 2_200.0), (1, "cold", 1_100.0, 0.0, 980.0),
            (2, "profiled", 200.0, 0.0, 0.0), (3, "profiled", 190.0, 0.0, 0.0),
            (4, "steady", 130.0, 0.0, 0.0), (5, "steady", 132.0, 0.0, 0.0), (6, "steady", 134.0, 0.0, 0.0)]
    for b, kind, ms, comp, cap in spec:
        ready += ms / 1e3
        k = 9 if b == 0 else 12
        frames += block(b, kind, ms, ready, k, comp, cap, n)
        n += k
    return frames


def test_cold_blocks_are_left_out_of_the_steady_statistics_and_block_0_warm_is_reported():
    frames = ultra_like_run()
    s = clock_stats(frames, [], "cuda")
    assert [r["block"] for r in steady_blocks(frames)] == [4, 5, 6]
    assert s.steady_frames == 36 and s.cold_frames == 12 and s.profiled_frames == 24
    assert s.p99_ms == pytest.approx(134.0 / 12, rel=1e-3)    # the capture block (1,100 ms) is not in it
    assert s.block_ms["mean"] == pytest.approx(132.0)
    assert s.first_frame_ms == pytest.approx(30_419.0)        # what the user waited: stays
    assert s.warm_first_frame_ms == pytest.approx(30_419.0 - 28_000.0 - 2_200.0)
    assert s.cold_start == {"blocks": [0, 1], "compile_ms": 28_000.0, "graph_capture_ms": 3_180.0}


def test_a_short_run_whose_only_steady_candidate_captured_a_graph_has_no_92_ms_headline():
    # 69 frames of ultra: block 0, profiled 1..4, block 5 captures a graph. None is steady; the
    # fallback is the profiled blocks, never block 0 or the capture block.
    frames = [f for f in ultra_like_run() if f.block <= 3]
    frames += block(4, "profiled", 180.0, 32.2, first_frame=len(frames))
    frames += block(5, "cold", 1_104.0, 33.3, capture_ms=950.0, first_frame=len(frames))
    s = clock_stats(frames, [], "cuda")
    assert s.steady_frames == 0
    assert [r["block"] for r in steady_blocks(frames)] == [2, 3, 4]
    assert s.p99_ms == pytest.approx(200.0 / 12, rel=1e-3)


def test_summary_json_and_frames_jsonl_carry_cold_start_and_read_back():
    frames = ultra_like_run()
    s = clock_stats(frames, [], "cuda")
    summary = json.loads(json.dumps(summary_from_stats(s, status="completed", peak_mem_bytes=None)))
    assert summary["warm_first_frame_ms"] == pytest.approx(219.0) and summary["cold_frames"] == 12
    assert summary["cold_start"]["blocks"] == [0, 1]
    warnings: list[str] = []
    assert schema.check_summary(summary, warnings) is not None and warnings == []
    back = stats_from_summary(summary, frames)
    assert back.warm_first_frame_ms == s.warm_first_frame_ms and back.cold_start == s.cold_start
    assert back.cold_frames == 12
    # frames.jsonl: only cold blocks carry the two fields; every kind passes the reader's check
    lines = [json.loads(json.dumps(f.to_json())) for f in frames]
    assert lines[0]["compile_ms"] == 28_000.0 and "compile_ms" not in lines[-1]
    back_frames = [FrameRecord.from_json(d) for d in lines]
    assert [(f.kind, f.compile_ms, f.graph_capture_ms) for f in back_frames] == \
        [(f.kind, f.compile_ms, f.graph_capture_ms) for f in frames]
    checked = schema.check_frames(lines, warnings)
    assert len(checked) == len(lines) and warnings == []


@pytest.mark.slow   # imports dynamo and compiles: several seconds on 2 cores
def test_the_clock_times_graph_capture_through_the_observer_and_compiles_through_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    clock = FrameClock("cpu")
    obs = CaptureObserver(clock, level="block")
    fn = torch.compile(lambda x: x * 2 + 1, backend="eager")   # dynamo only: fast, still a compile
    x = torch.ones(4)
    obs.run_started()
    obs.text_encoded(0)
    with obs.graph_capture(0):                                  # block 0 captures a graph
        time.sleep(0.05)
    obs.block_done(0, 9, 0, False)
    fn(x)                                                       # block 1 compiles
    obs.block_done(1, 12, 0, False)
    fn(x)                                                       # block 2 runs the compiled code
    obs.block_done(2, 12, 0, False)
    clock.close()
    kinds = {r["block"]: r["kind"] for r in steady_blocks(clock._records)}
    assert kinds == {2: "steady"}
    b0, b1 = clock._records[0], clock._records[9]
    assert b0.kind == "first" and b0.graph_capture_ms >= 50 and b0.compile_ms == 0
    assert b1.kind == "cold" and b1.compile_ms > 0 and b1.graph_capture_ms == 0
    s = clock.stats()
    assert s.warm_first_frame_ms == pytest.approx(s.first_frame_ms - b0.graph_capture_ms)
    assert s.cold_start["blocks"] == [0, 1]
    # closed: a compile after the run is not timed into a finished clock
    torch.compile(lambda x: x - 1, backend="eager")(x)
    assert clock._cold["compile"] == 0.0


def test_a_switch_block_that_recompiles_stays_a_switch_and_unknown_cold_work_is_refused():
    clock = FrameClock("cpu")
    clock.run_started()
    clock.block_done(0, 9, 0, False)
    clock.switch_requested(1)
    with clock.cold_work("compile"):
        pass
    clock.block_done(1, 12, 1, True)
    assert clock._records[-1].kind == "switch" and clock._records[-1].compile_ms >= 0
    with pytest.raises(ValueError, match="cold work"), clock.cold_work("warmup"):
        pass
