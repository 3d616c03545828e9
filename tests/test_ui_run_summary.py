"""The headless `lltrace run` summary: one budget verdict with the TUI (p99 of steady frames),
cold start reported apart from the warm first frame, counted nouns."""
from __future__ import annotations

from pathlib import Path

from helpers.recorded_run import plain

from lltrace.capture.events import RunEvent
from lltrace.capture.frame_clock import FrameRecord, clock_stats
from lltrace.capture.rundir import summary_from_stats
from lltrace.capture.session import RunResult
from lltrace.ui.run_summary import run_summary
from lltrace.ui.widgets import StatsPanel

DESCRIBE = {"preset": "ultra", "model": {"name": "tiny"}, "device": {"type": "cpu"}, "dtype": "float32",
            "attention_backend": "sdpa"}


def frames_of(blocks) -> list[FrameRecord]:
    """blocks: (kind, block_ms, compile_ms, capture_ms) per block, 12 frames each (9 for block 0)."""
    out, ready = [], 0.0
    for b, (kind, ms, comp, cap) in enumerate(blocks):
        n = 9 if b == 0 else 12
        ready += ms / 1e3
        out += [FrameRecord(len(out) + i, b, 0, kind, ready, ms / n, ms, n, "cuda", comp, cap) for i in range(n)]
    return out


def result_of(frames, events=()) -> RunResult:
    stats = clock_stats(frames, [], "cuda")
    summary = summary_from_stats(stats, status="completed", peak_mem_bytes=None)
    return RunResult(run_dir=Path("/runs/r1"), status="completed", reason="finished", message="", stats=stats,
                     summary=summary, events=list(events))


def test_the_headless_summary_and_the_tui_give_one_verdict_p99_of_steady_frames():
    # p50 well within the 40 ms budget, p99 over it (one slow steady block): the verdict is "over"
    # in both views; the quick start once printed "mean 46.47 ... within" from a p50 test.
    slow = [("steady", 12 * 30.0, 0, 0)] * 60 + [("steady", 12 * 90.0, 0, 0)] * 2
    res = result_of(frames_of([("first", 900.0, 0, 0), *slow]))
    assert res.stats.p50_ms < 40 < res.stats.p99_ms
    text = " ".join(plain(run_summary(res, DESCRIBE, []), width=200).split())
    assert "p99 over 40 ms" in text and "within" not in text
    panel = StatsPanel()
    panel.stats = res.stats
    assert "p99 over 40 ms" in plain(panel._grid(compact=False)) and "p99 over 40 ms" in plain(panel._grid(True))
    # and within when p99 is
    ok = result_of(frames_of([("first", 900.0, 0, 0), *[("steady", 12 * 30.0, 0, 0)] * 5]))
    assert "p99 within 40 ms" in " ".join(plain(run_summary(ok, DESCRIBE, []), width=200).split())


def test_cold_start_is_named_apart_from_the_warm_first_frame():
    frames = frames_of([("first", 30_419.0, 28_000.0, 2_200.0), ("cold", 1_100.0, 0.0, 980.0),
                        ("steady", 130.0, 0, 0), ("steady", 131.0, 0, 0)])
    compile_event = RunEvent("compile", "compiled forward", {
        "entire_frame_compile_time_s": 28.0, "backend_compile_time_s": 26.5, "inductor_compile_time_s": 25.0,
        "compile_time_autotune_time_us": 12_000_000})
    res = result_of(frames, [compile_event])
    text = " ".join(plain(run_summary(res, DESCRIBE, []), width=200).split())
    assert "first frame 219.00 ms warm; 30419.00 ms with the cold start" in text
    assert ("cold start 31.2 s in blocks 0, 1: compile 28.0 s (dynamo 1.5 s, AOT autograd 1.5 s, "
            "inductor 13.0 s, autotune 12.0 s), graph capture 3.2 s") in text
    assert "left out: 12 of blocks that compiled or captured a CUDA graph" in text
    assert "events 1 compile" in text
    # the TUI says the same, warm first
    panel = StatsPanel()
    panel.stats = res.stats
    full = " ".join(plain(panel._grid(compact=False), width=80).split())
    assert "first frame 219.0 ms warm (cold 30.4 s)" in full
    assert "cold start 31.2 s: compile 28.0 s, graph capture 3.2 s" in full


def test_counts_are_singular_for_one():
    res = result_of(frames_of([("first", 900.0, 0, 0)]),
                    [RunEvent("prompt_switch", "switch", {}), RunEvent("profile_window", "w", {})])
    text = " ".join(plain(run_summary(res, DESCRIBE, []), width=200).split())
    assert "9 video frames in 1 block " in text and "1 blocks" not in text
    assert "1 profiler-window event, 1 prompt-switch event" in text
    assert "no steady frame" in text


def test_counted_nouns():
    from lltrace.words import count, plural

    assert count(1, "block") == "1 block" and count(0, "block") == "0 blocks"
    assert count(3, "switch") == "3 switches" and plural("prompt switch", 1) == "prompt switch"
    assert count(1234, "frame") == "1,234 frames" and count(2, "graph break") == "2 graph breaks"
