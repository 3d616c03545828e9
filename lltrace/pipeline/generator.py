"""The streaming LongLive pipeline: text encode -> blocks of latent frames -> streaming decode.

One block = `steps` denoising forwards + one clean forward at `context_noise` that writes the
KV cache (so steps + 1 forwards), then the block's latents are decoded to video frames. A
prompt switch resets the cross-attention cache and re-runs the last min(window, frames so far)
clean latent frames with the new prompt, block-causally ("recache"), as LongLive's
`SwitchCausalInferencePipeline._recache_after_switch` does. (LongLive's shipped configs also set
`global_sink`, which keeps the sink slots during a recache; here the re-run frames overwrite
their slots, sink included, as with `global_sink: false`.)

Decode and frame readiness. `generate_block()` returns block N's output, and the observer's
`block_done` marks where on the device its frames are ready (the frame clock records a CUDA
event there). Normally the decode runs on the current stream at the end of the block. With
`decode_async` it runs on its own stream, enqueued as soon as x0 exists, so it overlaps the
block's KV-update forward and the next block's denoising; then
- `block_done` is called on the decode stream, right after the decode: the frame clock's
  event completes when the pixels are written, not when the call returns;
- the current stream goes on once the previous block's decode is done (one decode in
  flight), so a timed `generate_block()` on it (lltrace bench) measures the steady period;
- a video's first block and the first block after a switch wait for their own decode before
  the call returns: first-frame and switch latency are not hidden by the overlap;
- `BlockOutput.video` makes the reading stream wait for the decode (device-side, no sync);
  `BlockOutput.decoded` is the raw tensor, `ready` its event.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from lltrace import names
from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline.config import ModelConfig, load_model_config
from lltrace.pipeline.observer import NULL_OBSERVER, PipelineObserver
from lltrace.pipeline.presets import Preset
from lltrace.pipeline.scheduler import FlowMatchScheduler

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class BlockOutput:
    index: int
    num_frames: int          # video frames this block produced (0 with decoder "none")
    prompt_index: int
    after_switch: bool       # first block after a prompt switch
    latents: torch.Tensor    # [B, C, F, h, w] clean latents
    decoded: torch.Tensor | None  # [B, 3, T, H, W] in [-1, 1], as the decode wrote it: read `video`
    ready: torch.cuda.Event | None = None   # decode_async: recorded on the decode stream after it

    @property
    def video(self) -> torch.Tensor | None:
        """The block's frames, [B, 3, T, H, W] in [-1, 1]. With decode_async they are written on
        the decode stream, possibly still being written when generate_block returns: reading
        them here makes the current CUDA stream wait for them (on the device: no host sync)."""
        if self.ready is not None and self.decoded is not None:
            torch.cuda.current_stream(self.decoded.device).wait_event(self.ready)
        return self.decoded


@dataclass
class StageHooks:
    """Stand-ins for the stream's stages while `StreamingPipeline.hooked(...)` is open. Each is
    called as `hook(default, *args)`, `default` being the call it stands in for, so a tool that
    examines a stage in place (lltrace doctor) can run it its own way or pass it through."""
    forward: Callable[..., Any] | None = None   # (default, x, t, start_frame): every generator forward
    decode: Callable[..., Any] | None = None    # (default, latents): the block's decode
    encode: Callable[..., Any] | None = None    # (default, texts): a prompt's text encode


def _through(hook: Callable[..., Any] | None, default: Callable[..., Any], *args: Any) -> Any:
    return default(*args) if hook is None else hook(default, *args)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LltraceError("--device cuda was asked for, but no CUDA device is available")
    return dev


def for_this_machine(preset: Preset, device=None, model: str | None = None
                     ) -> tuple[Preset, torch.device, str | None, list[str]]:
    """Where it runs: without CUDA, the preset's CPU fallback (GPU-only knobs off) and the
    tiny model unless one was named; with a note for each change."""
    from lltrace.pipeline.presets import cpu_fallback

    dev = resolve_device(device)
    notes: list[str] = []
    if dev.type != "cuda":
        preset, notes = cpu_fallback(preset)
        if model is None:
            model = "tiny"
            notes.insert(0, "no CUDA device: the tiny model runs on the CPU (same code paths, not GPU numbers)")
    return preset, dev, model, notes


class StreamingPipeline:
    """Architecture-faithful LongLive inference; see the module docstring."""

    def __init__(self, preset: Preset, *, device=None, model: str | None = None, weights: str | None = None,
                 lora: str | None = None, lora_alpha: float | None = None, vae_weights: str | None = None,
                 tokenizer: str | None = None, batch: int = 1, seed: int = 0,
                 observer: PipelineObserver = NULL_OBSERVER, sequence_parallel=None):
        from lltrace.pipeline import optimize
        from lltrace.pipeline.attention import resolve_backend
        from lltrace.pipeline.decoders import build_decoder, optimize_decoder
        from lltrace.pipeline.kv_cache import CrossAttnCache, make_kv_cache
        from lltrace.pipeline.model import CausalWanModel
        from lltrace.pipeline.text_encoder import TextEncoder
        from lltrace.pipeline.weights import init_random_weights, load_generator_weights

        self.preset = preset
        self.device = resolve_device(device)
        self.model_config: ModelConfig = load_model_config(model or preset.model)
        # Half precision on a CPU is slow and numerically different; CPU runs are for logic, not speed.
        self.dtype = DTYPES[preset.dtype] if self.device.type == "cuda" else torch.float32
        self.batch = batch
        self.seed = seed
        # Block / step / decode regions come from here; layer and op regions are put on the
        # model by the capture layer's module hooks (they work on anyone's model object).
        self.observer = observer
        self.scheduler = FlowMatchScheduler()
        self.timesteps = self.scheduler.warp(preset.denoising_steps)
        cfg = self.model_config

        self.attention_backend = resolve_backend(preset.attention, self.device)
        torch.manual_seed(seed)
        with torch.device("meta"):
            generator = CausalWanModel(cfg, attention_backend=self.attention_backend)
        generator = generator.to_empty(device=self.device)
        init_random_weights(generator, seed)
        self.weights_report = None
        if weights:
            self.weights_report = load_generator_weights(generator, weights, lora_path=lora, lora_alpha=lora_alpha)
        elif lora:
            raise LltraceError("--lora needs --weights (a LoRA merges into a base checkpoint)")
        self.generator = generator.to(self.dtype).eval().requires_grad_(False)
        # pipeline.parallel.SequenceParallel: Ulysses over its group; the KV cache holds this rank's heads
        self.sequence_parallel = sequence_parallel
        if sequence_parallel is not None:
            from lltrace.pipeline.parallel import local_config
            sequence_parallel.attach(self.generator)

        self.text_encoder = TextEncoder(cfg, dtype=self.dtype, device=self.device, tokenizer_path=tokenizer,
                                        seed=seed)
        self.decoder = None
        decoder_done: dict = {}
        self._decode_stream = None   # decode_async: the decode's own CUDA stream
        self._decoding = None        # decode_async: the event of the last block's decode
        if preset.decoder != "none":
            self.decoder = build_decoder(preset.decoder, cfg, self.dtype, self.device)
            if vae_weights:
                from lltrace.pipeline.vae import load_vae_weights
                load_vae_weights(self.decoder, vae_weights)
            decoder_done = optimize_decoder(self.decoder, preset, self.device)
            if preset.decode_async:
                if self.device.type != "cuda":
                    raise NeedsCudaError("decode_async (the decode on a second CUDA stream)")
                self._decode_stream = torch.cuda.Stream(self.device)
                decoder_done["decode_async"] = "decode on a second stream, overlapping the next block"

        self.ceiling_tflops: float | None = None  # measured matmul ceiling, for the roofline
        self.ceiling_fp8_tflops: float | None = None  # the same for fp8 GEMMs (presets with fp8 linears)
        self.graphed_forward = None  # set by optimize.apply when the preset asks for CUDA graphs
        kv_cfg = cfg if sequence_parallel is None else local_config(cfg, sequence_parallel.world)
        self.kv_cache = make_kv_cache(preset.kv_cache, kv_cfg, batch, preset.local_attn_size, preset.sink_size,
                                      self.dtype, self.device)
        self.crossattn_cache = CrossAttnCache(cfg, batch, self.dtype, self.device)
        self.optimizations = optimize.apply(self)  # fp8, regional compile, CUDA graphs (per preset)
        self.optimizations.update(decoder_done)    # the decoder_* knobs (decoders.optimize_decoder)

        self._hooks = StageHooks()
        self._noise_gen = torch.Generator(device=self.device)
        self._context: torch.Tensor | None = None
        self._history: list[torch.Tensor] = []  # clean latent frames kept for the recache, newest last
        self.block_index = 0
        self.prompt_index = -1
        self._after_switch = False

    # -- describe ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """What meta.json and reports need to know about this pipeline."""
        dev = {"type": self.device.type, "torch": torch.__version__}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            dev.update(name=props.name, capability=f"{props.major}.{props.minor}",
                       memory_bytes=props.total_memory, cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
        else:
            import platform
            dev.update(name=platform.processor() or platform.machine())
        knobs = {**self.preset.to_dict(), "model": self.model_config.name}  # the model that ran
        return {"preset": self.preset.name, "knobs": knobs, "model": self.model_config.to_dict(),
                "ceilings": {"bf16_tflops": self.ceiling_tflops, "fp8_tflops": self.ceiling_fp8_tflops},
                "device": dev, "dtype": str(self.dtype).removeprefix("torch."),
                "attention_backend": self.attention_backend, "timesteps": self.timesteps,
                "optimizations": self.optimizations, "batch": self.batch, "seed": self.seed,
                **({} if self.sequence_parallel is None else {"sequence_parallel": {
                    "ranks": self.sequence_parallel.world, "rank": self.sequence_parallel.rank,
                    "kind": "ulysses"}}),
                "weights": "random" if self.weights_report is None else str(self.weights_report)}

    # -- the stream ---------------------------------------------------------------------------
    @property
    def frames_per_block(self) -> int:
        return self.preset.frames_per_block

    def _latent_shape(self, frames: int) -> tuple[int, ...]:
        c = self.model_config
        return (self.batch, c.in_dim, frames, c.latent_height, c.latent_width)

    @property
    def context(self) -> torch.Tensor | None:
        """The current prompt's text embeddings (None before `start`); a new tensor per prompt."""
        return self._context

    def timestep(self, t: float, frames: int) -> torch.Tensor:
        """The generator's timestep input for `frames` latent frames at time `t`: [batch, frames]."""
        return torch.full((self.batch, frames), t, device=self.device, dtype=torch.float32)

    @contextmanager
    def hooked(self, *, forward: Callable[..., Any] | None = None, decode: Callable[..., Any] | None = None,
               encode: Callable[..., Any] | None = None) -> Iterator[None]:
        """Route the stream's generator forwards / decodes / text encodes through hooks (see
        StageHooks) until the context closes."""
        before, self._hooks = self._hooks, StageHooks(forward, decode, encode)
        try:
            yield
        finally:
            self._hooks = before

    @contextmanager
    def eager(self) -> Iterator[None]:
        """Run the generator and the decoder without the preset's CUDA graphs and compiled code
        until the context closes; the same graphs and compiled code come back after (nothing
        compiles again)."""
        from lltrace.pipeline.optimize import uncompiled_blocks

        graphed, self.graphed_forward = self.graphed_forward, None
        try:
            with uncompiled_blocks(self.generator), \
                    (self.decoder.eager() if self.decoder is not None else nullcontext()):
                yield
        finally:
            self.graphed_forward = graphed

    @torch.no_grad()   # also when called directly (bench): grad mode is a compile guard
    def forward(self, x: torch.Tensor, t: float, start_frame: int) -> torch.Tensor:
        """One generator forward over latent frames x starting at `start_frame` in the stream."""
        tt = self.timestep(t, x.shape[2])
        if self.graphed_forward is not None:
            return self.graphed_forward(x, tt, start_frame)
        return self.generator(x, tt, self._context, self.kv_cache, self.crossattn_cache,
                              start_frame * self.model_config.frame_seqlen)

    @torch.no_grad()
    def encode(self, prompt: str) -> torch.Tensor:
        with self.observer.region(names.name(names.TEXT_ENCODE)):
            return _through(self._hooks.encode, self.text_encoder.encode, [prompt] * self.batch).to(self.dtype)

    @torch.no_grad()
    def start(self, prompt: str) -> None:
        """Begin a new video: reset caches, encode the prompt."""
        self.observer.run_started()
        self.kv_cache.reset()
        self.crossattn_cache.reset()
        if self.decoder is not None:
            self.decoder.reset()
        self._noise_gen.manual_seed(self.seed)
        self._history.clear()
        self.block_index = 0
        self.prompt_index = 0
        self._after_switch = False
        self._context = self.encode(prompt)
        self.observer.text_encoded(0)

    @torch.no_grad()
    def generate_block(self) -> BlockOutput:
        if self._context is None:
            raise RuntimeError("call start(prompt) before generate_block()")
        i, F, obs = self.block_index, self.frames_per_block, self.observer
        start_frame = i * F
        with obs.region(names.name(names.BLOCK, i)):
            with obs.region(names.name(names.NOISE)):
                noise = torch.randn(self._latent_shape(F), generator=self._noise_gen, device=self.device,
                                    dtype=self.dtype)
            x = noise
            for j, t in enumerate(self.timesteps):
                with obs.region(names.name(names.STEP, j)):
                    flow = _through(self._hooks.forward, self.forward, x, t, start_frame)
                    x0 = self.scheduler.to_x0(x, flow, t)
                    if j + 1 < len(self.timesteps):
                        renoise = torch.randn(x0.shape, generator=self._noise_gen, device=self.device,
                                              dtype=self.dtype)
                        x = self.scheduler.add_noise(x0, renoise, self.timesteps[j + 1])
            video = decode_done = None
            # decode_async (not while a tool examines the decode in place: it gets it on this stream)
            side = self._decode_stream if self._hooks.decode is None else None
            if self.decoder is not None and side is not None:
                # The decode needs only x0, like the KV-update forward below: it is enqueued
                # first, on its own stream, and overlaps that forward and the next block's
                # denoising.
                with obs.region(names.name(names.DECODE)):
                    video, decode_done = self._decode_on_side_stream(x0, side)
            with obs.region(names.name(names.CONTEXT)):
                # The clean forward at context_noise writes this block's K/V into the cache.
                _through(self._hooks.forward, self.forward, x0, float(self.preset.context_noise), start_frame)
            if decode_done is not None:
                # The current stream goes on once the *previous* block is decode_done: one decode in
                # flight, overlapping this block's tail and the next block. A video's first block
                # and the first after a switch wait for their own decode instead: those are the
                # latencies a user waits through, and an overlap would only slow them down.
                latency = i == 0 or self._after_switch
                wait = decode_done if latency else self._decoding
                if wait is not None:
                    torch.cuda.current_stream(self.device).wait_event(wait)
                self._decoding = decode_done
            elif self.decoder is not None:
                with obs.region(names.name(names.DECODE)):
                    video = _through(self._hooks.decode, self.decoder.decode_block, x0)
        self._remember(x0)
        num_frames = 0 if video is None else video.shape[2]
        out = BlockOutput(i, num_frames, self.prompt_index, self._after_switch, x0, video, decode_done)
        if decode_done is not None:
            # The frame clock records its event on the current stream: here the decode stream,
            # right after this block's decode, so a frame counts when its pixels are written.
            with torch.cuda.stream(side):
                obs.block_done(i, num_frames, self.prompt_index, self._after_switch)
        else:
            obs.block_done(i, num_frames, self.prompt_index, self._after_switch)
        self.block_index += 1
        self._after_switch = False
        return out

    def _decode_on_side_stream(self, x0: torch.Tensor, side: torch.cuda.Stream
                               ) -> tuple[torch.Tensor, torch.cuda.Event]:
        """decode_async: enqueue the block's decode on the decode stream, after the current
        stream's work so far (x0); returns the video and the event that marks it decoded."""
        main = torch.cuda.current_stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            video = self.decoder.decode_block(x0)
            decode_done = torch.cuda.Event()
            decode_done.record(side)
        # The caching allocator ties a block to the stream that allocated it: x0 (made on the
        # current stream) is read on the decode stream, video (made there) is used on the
        # current one; neither may be reused before the other stream is done with it.
        x0.record_stream(side)
        video.record_stream(main)
        return video, decode_done

    def _remember(self, x0: torch.Tensor) -> None:
        self._history.append(x0)
        # Keep just enough clean frames for a recache of the whole window.
        while sum(h.shape[2] for h in self._history) - self._history[0].shape[2] >= self.preset.local_attn_size:
            self._history.pop(0)

    @torch.no_grad()
    def switch_prompt(self, prompt: str) -> None:
        """Switch prompts mid-stream: new text embeddings, cross-attn reset, KV recache."""
        if self._context is None:
            raise RuntimeError("call start(prompt) before switch_prompt()")
        self.prompt_index += 1
        self.observer.switch_requested(self.prompt_index, prompt)
        self._context = self.encode(prompt)
        self.observer.text_encoded(self.prompt_index)
        with self.observer.region(names.name(names.RECACHE)):
            self.crossattn_cache.reset()
            frames_so_far = self.block_index * self.frames_per_block
            n = min(self.preset.local_attn_size, frames_so_far)
            if n:
                clean = torch.cat(self._history, dim=2)[:, :, -n:]
                # Block by block, as LongLive's recache attends (its blockwise causal mask): each
                # chunk sees the cache up to itself. Same shapes as a denoising forward, so a
                # compiled block does not recompile and a captured graph can replay it.
                first = frames_so_far - n
                for lo in range(0, n, self.frames_per_block):
                    hi = min(n, lo + self.frames_per_block)
                    _through(self._hooks.forward, self.forward, clean[:, :, lo:hi], float(self.preset.context_noise),
                             first + lo)
            # LongLive resets the cross-attention cache again after the recache forward.
            self.crossattn_cache.reset()
        self._after_switch = True

    def stream(self, prompt: str, num_blocks: int, switches: dict[int, str] | None = None) -> Iterator[BlockOutput]:
        """Generate `num_blocks` blocks; `switches` maps a block index to the prompt it starts with."""
        switches = switches or {}
        self.start(prompt)
        try:
            for b in range(num_blocks):
                if b in switches and b > 0:
                    self.switch_prompt(switches[b])
                yield self.generate_block()
        finally:
            self.observer.run_finished()

