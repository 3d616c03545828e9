"""Frame clock on CPU (host timers): its numbers agree with wall time measured around the work."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lltrace.capture.frame_clock import FrameClock

US = 1e-3  # ms: the clock's own rounding


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def timed(fn, *args) -> tuple[float, float]:
    """(perf_counter before, after) a call: the clock's stamp lies between, however loaded the box."""
    before = time.perf_counter()
    fn(*args)
    return before, time.perf_counter()


def test_cpu_clock_agrees_with_wall_time():
    """Every number the clock gives lies inside the interval measured around the calls that made
    it: bounds, not a tolerance, so a preempted test cannot fail it."""
    frames, switches, starts = [], [], []
    clock = FrameClock("cpu", on_frame=[frames.append], on_switch=[switches.append], on_start=[starts.append])
    assert clock.clock == "host" and not clock.cuda

    t0 = timed(clock.run_started)
    assert starts == [clock.origin] and t0[0] <= clock.origin.perf_counter_ns / 1e9 <= t0[1]
    busy(20)                                   # text encode
    block_starts = [timed(clock.boundary)]     # block 0's time starts at the end of the text encode
    block_ends = []
    plan = [(0, 9, False, 30), (1, 12, False, 25), (2, 12, False, 25), (3, 12, True, 25), (4, 12, False, 40)]
    for block, n, after_switch, ms in plan:
        if block == 3:
            t_switch = timed(clock.switch_requested, 1)
            busy(15)                           # text encode + recache of the new prompt
            block_starts[-1] = timed(clock.boundary)
        busy(ms)
        block_ends.append(timed(clock.block_done, block, n, 1 if block >= 3 else 0, after_switch))
        block_starts.append(block_ends[-1])
    assert clock.flush()

    def between(value_ms, lo_ms, hi_ms):
        assert lo_ms - US <= value_ms <= hi_ms + US, (lo_ms, value_ms, hi_ms)

    assert [f.frame for f in frames] == list(range(9 + 4 * 12))
    assert {f.kind for f in frames if f.block == 0} == {"first"}
    assert {f.kind for f in frames if f.block == 3} == {"switch"}
    assert {f.kind for f in frames if f.block in (1, 2, 4)} == {"steady"}
    for block, (n, end, start) in enumerate(zip([p[1] for p in plan], block_ends, block_starts)):
        recs = [f for f in frames if f.block == block]
        assert len(recs) == n and all(f.frames_in_block == n and f.clock == "host" for f in recs)
        between(recs[0].ready_s * 1e3, (end[0] - t0[1]) * 1e3, (end[1] - t0[0]) * 1e3)
        between(recs[0].block_ms, (end[0] - start[1]) * 1e3, (end[1] - start[0]) * 1e3)
        assert recs[0].block_ms >= plan[block][3] - US      # at least the work busy-waited for
        assert recs[0].latency_ms == pytest.approx(recs[0].block_ms / n)
    # block 3's time starts after the recache, not at the end of block 2: the bounds above
    # exclude the 15 ms recache, which the end of block 2 would include
    assert frames[-13].block_ms < (block_ends[3][1] - block_ends[2][0]) * 1e3 - 15 + US

    stats = clock.stats()
    assert stats.frames == len(frames) and stats.blocks == 5 and stats.steady_frames == 36
    between(stats.first_frame_ms, (block_ends[0][0] - t0[1]) * 1e3, (block_ends[0][1] - t0[0]) * 1e3)
    assert len(stats.switch_ms) == 1
    between(stats.switch_ms[0], (block_ends[3][0] - t_switch[1]) * 1e3, (block_ends[3][1] - t_switch[0]) * 1e3)
    assert len(switches) == 1 and switches[0].prompt == 1 and switches[0].block == 3
    steady = [f.latency_ms for f in frames if f.kind == "steady"]
    assert stats.mean_ms == pytest.approx(np.mean(steady))
    assert stats.p50_ms == pytest.approx(np.percentile(steady, 50))
    assert stats.p99_ms == pytest.approx(np.percentile(steady, 99))
    steady_blocks = [frames[i].block_ms for i in (9, 21, 45)]
    assert stats.fps == pytest.approx(36 / sum(steady_blocks) * 1e3)
    assert stats.block_ms["mean"] == pytest.approx(np.mean(steady_blocks))
    clock.close()


def test_cpu_clock_times_from_boundaries_exactly(monkeypatch):
    """On a host clock that only the test moves, the numbers are exact: a block's time runs from
    the previous block's end or the last boundary (text encode, recache), whichever is later."""
    now = [10_000_000_000]
    monkeypatch.setattr(time, "perf_counter_ns", lambda: now[0])

    def wait(ms: float) -> None:
        now[0] += int(ms * 1e6)

    frames = []
    clock = FrameClock("cpu", on_frame=[frames.append])
    clock.run_started()
    wait(20)
    clock.boundary()
    for block, ms in enumerate((30, 25, 25)):
        if block == 2:
            clock.switch_requested(1)
            wait(15)
            clock.boundary()
        wait(ms)
        clock.block_done(block, 12, 1 if block == 2 else 0, block == 2)
    assert [f.block_ms for f in frames[::12]] == [30, 25, 25]          # not 40: the recache is left out
    assert [f.ready_s for f in frames[::12]] == [0.05, 0.075, 0.115]
    assert clock.stats().switch_ms == [40]                              # request to the block's frames
    clock.close()


def test_stats_before_steady_frames_use_what_there_is():
    clock = FrameClock("cpu")
    assert clock.stats().frames == 0 and clock.stats().fps is None and clock.stats().mean_ms is None
    clock.run_started()
    busy(5)
    clock.block_done(0, 9, 0, False)
    s = clock.stats()
    assert s.frames == 9 and s.steady_frames == 0
    assert s.mean_ms == pytest.approx(s.first_frame_ms / 9, rel=0.01)


def test_cuda_clock_falls_back_to_host_timers_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    clock = FrameClock("cuda")
    assert clock.clock == "host" and not clock.cuda
    clock.run_started()
    clock.block_done(0, 1, 0, False)
    assert clock.stats().frames == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_clock_times_device_work_without_sync():
    frames = []
    clock = FrameClock("cuda", on_frame=[frames.append])
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    clock.run_started()
    for block in range(3):
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        clock.block_done(block, 4, 0, False)
    enqueued = time.perf_counter()
    assert clock.flush(timeout=60)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    assert [f.clock for f in frames] == ["cuda"] * 12
    assert frames[-1].ready_s == pytest.approx(wall, abs=0.05)
    assert enqueued - t0 < frames[-1].ready_s  # the host did not wait for the device
    clock.close()
