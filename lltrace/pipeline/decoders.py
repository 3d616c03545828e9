"""`build_decoder(kind, cfg)`: the streaming decoder a preset names ("wan" or "fast"), and
`optimize_decoder(decoder, preset, device)`: the preset's decoder knobs applied to it.

It sits above both decoder modules so that neither imports the other.

Decoder knobs (presets.py, "decoder knobs" group); none changes the decoder's architecture:
- decoder_layout: channels_last puts conv weights and activations in channels-last (NDHWC for the Wan VAE's
  Conv3d, NHWC for its 2-D convs and the fast decoder). The same arithmetic in another layout.
- cudnn_benchmark: `torch.backends.cudnn.benchmark = True` (process-wide: cuDNN times
  its conv algorithms once per shape and keeps the fastest).
- decoder_compile: torch.compile (static shapes) of the steady decode, the part that repeats:
  per latent frame for the Wan VAE, per block for the fast decoder. The first frame of a video
  (another graph: no temporal upsample) and the allocation of the streaming state run eagerly.
- decoder_graph: a CUDA graph of a steady block's whole decode (`GraphedDecode`), one per
  latent shape; the first block of a video runs eagerly (it has another output length and
  allocates the state). Possible because the state (the Wan VAE's causal-conv feature cache,
  the fast decoder's MemBlock memories) is updated in place at fixed addresses.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline.config import ModelConfig
from lltrace.pipeline.fast_decoder import FastDecoder
from lltrace.pipeline.vae import DECODER_KINDS, StreamingDecoder, WanDecoder


def build_decoder(kind: str, cfg: ModelConfig, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu", seed: int = 0) -> StreamingDecoder:
    """A decoder with seeded random weights: built on meta, materialised once on `device`."""
    if kind == "wan":
        cls: type[StreamingDecoder] = WanDecoder
    elif kind == "fast":
        cls = FastDecoder
    else:
        raise LltraceError(f"unknown decoder {kind!r}", f"valid: {', '.join(DECODER_KINDS)}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NeedsCudaError(f"the {kind} decoder on {device}")
    with torch.device("meta"):
        dec = cls.from_config(cfg)  # type: ignore[attr-defined]
    dec = dec.to(dtype=dtype).to_empty(device=device)
    dec.init_weights(seed)
    return dec.eval().requires_grad_(False)


# Tests swap in "eager" / "aot_eager" (dynamo's capture without inductor's C++/Triton build).
COMPILE_BACKEND = "inductor"


def optimize_decoder(decoder: StreamingDecoder, preset, device: torch.device) -> dict:
    """Apply the preset's decoder_* knobs (module docstring) to `decoder`; returns what was
    done, for meta.json's `optimizations`. GPU-only knobs raise NeedsCudaError off CUDA."""
    done: dict = {}
    if preset.decoder_graph and device.type != "cuda":
        raise NeedsCudaError("decoder_graph (a CUDA graph of the per-block decode)")
    if preset.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        done["cudnn_benchmark"] = "process-wide"
    if preset.decoder_layout == "channels_last":
        decoder.to_channels_last()
        done["decoder_layout"] = str(decoder.memory_format).removeprefix("torch.")
    if preset.decoder_compile:
        decoder.compile_steady(COMPILE_BACKEND)
        done["decoder_compile"] = "steady decode, static shapes"
    if preset.decoder_graph:
        decoder.graphed = GraphedDecode(decoder)
        done["decoder_graph"] = "per steady block shape"
    return done


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    latents: Tensor   # static input, copied into before each replay
    video: Tensor     # static output, overwritten by each replay
    state: list[int]  # the addresses of the state tensors it reads and writes


class GraphedDecode:
    """A decoder's steady per-block decode as CUDA-graph replays (`decoder.graphed`).

    A block decodes eagerly while it is a video's first or while the decoder's state is not yet
    allocated; after that, the first block of each latent shape is captured and every later one
    replayed. Replays write the state tensors in place, exactly as the eager decode does, so a
    `reset()` (which zeroes them in place) needs no new capture. The caller gets a copy of the
    static output: a later replay would overwrite it.
    """

    def __init__(self, decoder: StreamingDecoder, warmup: int = 2):
        self.decoder = decoder
        self.warmup = warmup
        self.graphs: dict[tuple, _Graph] = {}
        self.replays = 0
        self.eager_calls = 0
        self.pool = None  # one memory pool shared by this decoder's graphs

    def __call__(self, latents: Tensor, first: bool) -> Tensor:
        dec = self.decoder
        if first or not dec.state_ready():
            self.eager_calls += 1
            return dec._decode(latents, first)
        if latents.device.type != "cuda":
            raise NeedsCudaError("decoder_graph (a CUDA graph of the per-block decode)")
        key = (tuple(latents.shape), latents.dtype)
        g = self.graphs.get(key)
        if g is not None and g.state != [t.data_ptr() for t in dec.state_tensors()]:
            g = None   # the state was reallocated (e.g. a reset outside the inference mode it was made in)
        if g is None:
            g = self.graphs[key] = self._capture(latents)
        g.latents.copy_(latents)
        g.graph.replay()
        self.replays += 1
        return g.video.clone()

    def _capture(self, latents: Tensor) -> _Graph:
        dec = self.decoder
        state = dec.state_tensors()
        saved = [t.clone() for t in state]
        static_in = latents.clone()

        def restore() -> None:
            for t, s in zip(state, saved):
                t.copy_(s)

        # Warm-up runs (lazy inits, cuDNN's algorithm search, a compiled decode's first call) on a
        # side stream, as torch.cuda.graph asks; each advances the stream's state, so it is put
        # back after each. A capture only records: the state is unchanged by it.
        side = torch.cuda.Stream(device=latents.device)
        side.wait_stream(torch.cuda.current_stream(latents.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                dec._decode(static_in, False)
                restore()
        torch.cuda.current_stream(latents.device).wait_stream(side)
        moved = [i for i, (a, b) in enumerate(zip(state, dec.state_tensors())) if a is not b]
        if moved or len(dec.state_tensors()) != len(state):
            raise LltraceError(f"decoder_graph: {type(dec).__name__}'s streaming state was reallocated "
                               "during the warm-up; a graph would replay into stale tensors")
        graph = torch.cuda.CUDAGraph()
        # thread_local: the frame clock's poller thread queries CUDA events during a run; in the
        # default "global" mode those queries would be errors (and its marks dropped) while
        # this thread captures. Nothing else runs on that thread, so they cannot touch the capture.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            video = dec._decode(static_in, False)
        self.pool = graph.pool()
        return _Graph(graph, static_in, video, [t.data_ptr() for t in state])
