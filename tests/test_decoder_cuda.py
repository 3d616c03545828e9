"""The decoder knobs' CUDA paths (issue #17): a CUDA graph of the per-block decode replays the
eager decode block after block (state included, across a reset), alone and over the compiled
decode; decode_async gives the same frames, overlaps the next block's denoising, and the frame
clock still counts a frame when its pixels are written. Runs only where CUDA is (the CPU
behaviour is in tests/test_decoder_optimized.py); scripts/device/perf_decoder.sh runs it."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lltrace.capture.frame_clock import FrameClock
from lltrace.capture.observer import CaptureObserver
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.decoders import GraphedDecode, build_decoder
from lltrace.pipeline.generator import StreamingPipeline
from lltrace.pipeline.presets import load_preset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="the decoder's CUDA paths need CUDA")

H, W, BLOCK = 4, 6, 3
BF16_MAX_ABS, BF16_MEAN_ABS = 0.05, 0.005   # as in test_decoder_optimized.py


def latents(frames: int, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(1, 16, frames, H, W, generator=g, device="cuda")


def two_videos(dec) -> list[torch.Tensor]:
    out = []
    for seed, blocks in ((0, 4), (1, 3)):
        z = latents(BLOCK * blocks, seed)
        dec.reset()
        out += [dec.decode_block(z[:, :, i:i + BLOCK]).float() for i in range(0, z.shape[2], BLOCK)]
    return out


def fresh(kind: str, dtype=torch.float32):
    return build_decoder(kind, load_model_config("tiny"), dtype, "cuda", seed=0)


@pytest.mark.parametrize("kind", ["wan", "fast"])
def test_graphed_decode_replays_the_eager_decode(kind):
    want = two_videos(fresh(kind))
    dec = fresh(kind)
    dec.graphed = GraphedDecode(dec)
    got = two_videos(dec)
    assert dec.graphed.eager_calls == 2          # each video's first block
    assert dec.graphed.replays == len(want) - 2 and len(dec.graphed.graphs) == 1
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m, i=i: f"block {i}: {m}")


@pytest.mark.parametrize("kind", ["wan", "fast"])
def test_decode_block_captures_on_a_stream_of_its_own(kind):
    """What a user's torch.cuda.graph (or the doctor) does: decode_block, last used on a side
    stream, captured on another. Its stream ordering must not wait on the uncaptured stream
    inside the capture (the H200 doctor's decode capture failed so, 2026-12-02)."""
    dec = fresh(kind)
    z = latents(BLOCK * 3, 0)
    dec.decode_block(z[:, :, :BLOCK])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        dec.decode_block(z[:, :, BLOCK:2 * BLOCK])   # warm-up on a side stream, as torch.cuda.graph asks
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        dec.decode_block(z[:, :, 2 * BLOCK:])
    graph.replay()
    torch.cuda.synchronize()
    assert torch.ones(3, device="cuda").sum().item() == 3.0   # CUDA still usable


def test_a_reallocated_state_is_captured_again_not_replayed_stale():
    """State made under torch.inference_mode cannot be reused outside it: a reset there drops
    it and the next decode allocates new tensors. The graph must not replay into the old ones."""
    z = latents(2 * BLOCK, seed=3)
    dec = fresh("wan")
    dec.graphed = GraphedDecode(dec)
    with torch.inference_mode():
        dec.reset()
        dec.decode_block(z[:, :, :BLOCK])
        dec.decode_block(z[:, :, BLOCK:])         # captured and replayed
    dec.reset()                                   # outside inference mode: the state is dropped
    dec.decode_block(z[:, :, :BLOCK])
    got = dec.decode_block(z[:, :, BLOCK:])
    ref = fresh("wan")
    ref.reset()
    ref.decode_block(z[:, :, :BLOCK])
    torch.testing.assert_close(got, ref.decode_block(z[:, :, BLOCK:]), rtol=1e-4, atol=1e-4)


def test_graph_over_compiled_channels_last_bf16_decode_within_tolerance():
    want = two_videos(fresh("wan"))
    torch._dynamo.reset()
    dec = fresh("wan")
    dec.to(torch.bfloat16)           # the same weights as `want`, rounded
    dec.to_channels_last()
    dec.compile_steady("inductor")
    dec.graphed = GraphedDecode(dec)
    got = two_videos(dec)
    assert dec.graphed.replays > 0
    for a, b in zip(got, want):
        assert (a - b).abs().max() <= BF16_MAX_ABS and (a - b).abs().mean() <= BF16_MEAN_ABS


def _pipeline(**knobs) -> StreamingPipeline:
    p = dataclasses.replace(load_preset("baseline"), local_attn_size=6, sink_size=2, **knobs)
    return StreamingPipeline(p, model="tiny", device="cuda")


def test_decode_async_gives_the_same_frames_and_latents():
    want = [(b.latents.clone(), b.video.clone()) for b in _pipeline().stream("a cat", 5, {3: "a dog"})]
    pipe = _pipeline(decode_async=True)
    assert "decode_async" in pipe.optimizations
    got = []
    for b in pipe.stream("a cat", 5, {3: "a dog"}):
        assert b.ready is not None
        got.append((b.latents.clone(), b.video.clone()))   # .video orders this stream after the decode
    for (la, va), (lb, vb) in zip(got, want):
        torch.testing.assert_close(la, lb)
        torch.testing.assert_close(va, vb)


def _sleep_cycles(ms: float) -> int:
    """torch.cuda._sleep cycles that take about `ms` on this GPU, at the clock it runs at under
    load: an idle GPU measured first runs its clock low, and the sleeps in the run then took a
    third less than asked (the H200, 2026-12-03: a serial block of 124.5 ms for 180 ms asked)."""
    n = 10_000_000
    torch.cuda._sleep(20 * n)   # about 100 ms of load first: the clock is up when measured
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(n)
    end.record()
    end.synchronize()
    return int(n * ms / start.elapsed_time(end))


def _steady_block_ms(decode_async: bool, forward_ms: float, decode_ms: float) -> tuple[float, float]:
    """(steady block ms, first-frame ms) from the frame clock, with the forwards and the decode
    made slow on the device (sleep kernels: they leave the SMs free, so they can overlap)."""
    pipe = _pipeline(decode_async=decode_async)
    fwd, dec = _sleep_cycles(forward_ms), _sleep_cycles(decode_ms)
    decode = pipe.decoder.decode_block
    pipe.decoder.decode_block = lambda z: (torch.cuda._sleep(dec), decode(z))[1]
    clock = FrameClock("cuda")
    pipe.observer = CaptureObserver(clock, level="off")
    with pipe.hooked(forward=lambda default, *a: (torch.cuda._sleep(fwd), default(*a))[1]):
        blocks = list(pipe.stream("a cat", 6))
    assert clock.close(30)
    stats = clock.stats()
    assert stats.frames == sum(b.num_frames for b in blocks) and stats.blocks == 6
    return stats.block_ms["p50"], stats.first_frame_ms


def test_decode_async_overlaps_the_next_block_and_the_clock_waits_for_the_pixels():
    steps = len(load_preset("baseline").denoising_steps) + 1     # forwards per block
    fwd_ms, dec_ms = 20.0, 80.0      # far above the tiny model's own few ms per forward
    sync_block, sync_first = _steady_block_ms(False, fwd_ms, dec_ms)
    async_block, async_first = _steady_block_ms(True, fwd_ms, dec_ms)
    assert sync_block >= steps * fwd_ms + dec_ms * 0.9          # serial: forwards + decode
    # overlapped: the slower of the two, not their sum; and never less than the decode, or the
    # clock would be counting frames before their pixels exist
    assert dec_ms * 0.95 <= async_block <= max(steps * fwd_ms, dec_ms) * 1.3, (async_block, sync_block)
    # a video's first block waits for its own decode: first-frame latency is not hidden
    assert async_first >= steps * fwd_ms + dec_ms * 0.9
    assert sync_first >= steps * fwd_ms + dec_ms * 0.9
