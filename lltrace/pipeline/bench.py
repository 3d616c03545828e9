"""`lltrace bench`: steady-state timings of presets, measured with CUDA events.

Unlike a profiled run, bench installs no regions and no profiler: it measures the bare
pipeline. It synchronizes once per timed block (a bench may; the frame clock of `run` does not).
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from lltrace.pipeline.presets import Preset


@dataclass
class BenchResult:
    preset: str
    model: str
    device: str
    knobs: dict
    ms_per_forward: float
    ms_per_forward_spread: tuple[float, float]   # min, max over repeats
    ms_per_block: float                          # steady state, decode included
    ms_per_block_p95: float
    ms_decode: float | None
    frames_per_block: int
    ms_per_frame: float                          # ms_per_block / frames_per_block
    fps: float
    first_frame_ms: float                        # start(prompt) -> first block decoded (warm process)
    prompt_switch_ms: float                      # switch_prompt -> next block decoded
    setup_s: float                               # build + weights + fp8 + compile warm-up
    peak_mem_bytes: int | None
    attention_backend: str
    optimizations: dict = field(default_factory=dict)
    blocks_timed: int = 0
    graph_replays: int | None = None             # CUDA-graph replays / eager forwards (cuda_graphs only)
    graph_eager_calls: int | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Timer:
    """Wall time of a region, via CUDA events on GPU or perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def bench_preset(preset: Preset, *, device=None, model: str | None = None, warmup_blocks: int = 3,
                 blocks: int = 8, forward_repeats: int = 10, prompt: str = "a red fox running through snow",
                 progress: Callable[[str], None] = lambda s: None, **pipeline_kwargs) -> BenchResult:
    from lltrace.pipeline.generator import StreamingPipeline

    t_setup = time.perf_counter()
    progress(f"{preset.name}: building")
    pipe = StreamingPipeline(preset, device=device, model=model, **pipeline_kwargs)
    dev = pipe.device
    timer = _Timer(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    pipe.start(prompt)
    for k in range(warmup_blocks):
        # Compile and autotune happen here and can take minutes (fp8): say where it is.
        progress(f"{preset.name}: warm-up block {k + 1}/{warmup_blocks} "
                 f"({time.perf_counter() - t_setup:.0f} s since the build started)")
        pipe.generate_block()
    # The window is full once (sink + local) frames exist; make sure steady blocks roll the cache.
    setup_s = time.perf_counter() - t_setup

    progress(f"{preset.name}: timing {blocks} blocks")
    block_ms, frames = [], 0
    for _ in range(blocks):
        out = {}
        block_ms.append(timer(lambda: out.setdefault("b", pipe.generate_block())))
        frames = out["b"].num_frames

    # One forward at the last block's position (re-running a position overwrites the same
    # cache slots, so repeats measure the steady-state forward without changing the state).
    x = torch.randn(pipe._latent_shape(pipe.frames_per_block), device=dev, dtype=pipe.dtype)
    start_frame = (pipe.block_index - 1) * pipe.frames_per_block
    fwd = [timer(lambda: pipe.forward(x, pipe.timesteps[0], start_frame)) for _ in range(forward_repeats)]

    decode_ms = None
    if pipe.decoder is not None:
        lat = out["b"].latents
        decode_ms = statistics.median(timer(lambda: pipe.decoder.decode_block(lat)) for _ in range(3))

    progress(f"{preset.name}: first frame and prompt switch")
    first = timer(lambda: (pipe.start(prompt), pipe.generate_block()))
    for _ in range(max(2, preset.local_attn_size // preset.frames_per_block)):
        pipe.generate_block()  # fill the window so the recache re-runs a full window
    switch = timer(lambda: (pipe.switch_prompt(prompt + ", at night"), pipe.generate_block()))

    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    graphed = pipe.graphed_forward
    ms_block = statistics.median(block_ms)
    result = BenchResult(
        preset=preset.name, model=pipe.model_config.name, device=pipe.describe()["device"].get("name", dev.type),
        knobs=preset.to_dict(), ms_per_forward=statistics.median(fwd), ms_per_forward_spread=(min(fwd), max(fwd)),
        ms_per_block=ms_block, ms_per_block_p95=_p(block_ms, 95), ms_decode=decode_ms, frames_per_block=frames,
        ms_per_frame=ms_block / frames if frames else float("nan"), fps=1e3 * frames / ms_block if frames else 0.0,
        first_frame_ms=first, prompt_switch_ms=switch, setup_s=setup_s, peak_mem_bytes=peak,
        attention_backend=pipe.attention_backend, optimizations=pipe.optimizations, blocks_timed=blocks,
        graph_replays=None if graphed is None else graphed.replays,
        graph_eager_calls=None if graphed is None else graphed.eager_calls)
    pipe = None  # free the model before the next preset is built
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]
