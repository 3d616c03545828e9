"""Frame clock on CPU (host timers): its numbers agree with wall time measured around the work."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lltrace.capture.frame_clock import FrameClock

TOL_MS = 8.0  # the clock stamps at the callbacks, the test a few lines away: allow for preemption on a busy CI box


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def test_cpu_clock_agrees_with_wall_time():
    frames, switches, starts = [], [], []
    clock = FrameClock("cpu", on_frame=[frames.append], on_switch=[switches.append], on_start=[starts.append])
    assert clock.clock == "host" and not clock.cuda

    t0 = time.perf_counter()
    clock.run_started()
    assert starts == [clock.origin] and clock.origin.perf_counter_ns / 1e9 == pytest.approx(t0, abs=TOL_MS / 1e3)
    busy(20)                                   # text encode
    clock.boundary()
    t_text = time.perf_counter()
    block_ends, block_starts = [], [t_text]
    plan = [(0, 9, False, 30), (1, 12, False, 25), (2, 12, False, 25), (3, 12, True, 25), (4, 12, False, 40)]
    for block, n, after_switch, ms in plan:
        if block == 3:
            t_switch = time.perf_counter()
            clock.switch_requested(1)
            busy(15)                           # text encode + recache of the new prompt
            clock.boundary()
            block_starts[-1] = time.perf_counter()
        busy(ms)
        clock.block_done(block, n, 1 if block >= 3 else 0, after_switch)
        block_ends.append(time.perf_counter())
        block_starts.append(block_ends[-1])
    assert clock.flush()

    assert [f.frame for f in frames] == list(range(9 + 4 * 12))
    assert {f.kind for f in frames if f.block == 0} == {"first"}
    assert {f.kind for f in frames if f.block == 3} == {"switch"}
    assert {f.kind for f in frames if f.block in (1, 2, 4)} == {"steady"}
    for block, (n, end, start) in enumerate(zip([p[1] for p in plan], block_ends, block_starts)):
        recs = [f for f in frames if f.block == block]
        assert len(recs) == n and all(f.frames_in_block == n and f.clock == "host" for f in recs)
        wall_ready_ms = (end - t0) * 1e3
        wall_block_ms = (end - start) * 1e3
        assert recs[0].ready_s * 1e3 == pytest.approx(wall_ready_ms, abs=TOL_MS)
        assert recs[0].block_ms == pytest.approx(wall_block_ms, abs=TOL_MS)
        assert recs[0].latency_ms == pytest.approx(recs[0].block_ms / n)
    # block 3's time starts after the recache, not at the end of block 2
    assert frames[-13].block_ms == pytest.approx(25, abs=TOL_MS)  # with the recache it would be ~40

    stats = clock.stats()
    assert stats.frames == len(frames) and stats.blocks == 5 and stats.steady_frames == 36
    assert stats.first_frame_ms == pytest.approx((block_ends[0] - t0) * 1e3, abs=TOL_MS)
    assert stats.switch_ms == [pytest.approx((block_ends[3] - t_switch) * 1e3, abs=TOL_MS)]
    assert len(switches) == 1 and switches[0].prompt == 1 and switches[0].block == 3
    steady = [f.latency_ms for f in frames if f.kind == "steady"]
    assert stats.mean_ms == pytest.approx(np.mean(steady))
    assert stats.p50_ms == pytest.approx(np.percentile(steady, 50))
    assert stats.p99_ms == pytest.approx(np.percentile(steady, 99))
    steady_blocks = [frames[i].block_ms for i in (9, 21, 45)]
    assert stats.fps == pytest.approx(36 / sum(steady_blocks) * 1e3)
    assert stats.block_ms["mean"] == pytest.approx(np.mean(steady_blocks))
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
