"""Wan2.1 VAE decoder, streamed one latent frame at a time through a causal feature cache.

Architecture and parameter names follow Wan2.1's `wan/modules/vae.py` (`WanVAE_.conv2` +
`Decoder3d`), so the decoder half of a real `Wan2.1_VAE.pth` loads with `load_vae_weights`.
Also home of the `StreamingDecoder` interface that the small fast decoder shares
(`lltrace.pipeline.fast_decoder`); `lltrace.pipeline.decoders.build_decoder` builds either.

Frame rule (Wan's causal VAE), `video_frames()`: the first latent frame after `reset()` decodes
to 1 video frame, every later one to 4, so a block of n latent frames gives 1 + 4(n-1) frames
first, then 4n.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lltrace.errors import LltraceError

if TYPE_CHECKING:
    from lltrace.pipeline.config import ModelConfig

CACHE_T = 2  # frames of past input each causal conv keeps (its time kernel is 3)

# Wan2.1's per-channel latent statistics (wan/modules/vae.py, WanVAE.__init__): the DiT works in
# normalised latents, z_norm = (z - mean) / std; the decoder needs z back.
WAN_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                   0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                  3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

DECODER_KINDS = ("wan", "fast")
TIME_SCALE = 4  # video frames per latent frame, after the first


def video_frames(latent_frames: int, first_block: bool, time_scale: int = TIME_SCALE) -> int:
    """Video frames that a block of `latent_frames` latent frames decodes to: 1 + 4(n-1) for the
    first block of a video (its first latent frame gives one frame), 4n for every later one."""
    if latent_frames < 0:
        raise ValueError(f"latent_frames must be >= 0, got {latent_frames}")
    if latent_frames == 0:
        return 0
    return 1 + time_scale * (latent_frames - 1) if first_block else time_scale * latent_frames


# --------------------------------------------------------------------------- interface

class StreamingDecoder(nn.Module):
    """Latent blocks in, video frames out, with state carried from block to block."""

    latent_channels: int = 16
    spatial_scale: int = 8
    time_scale: int = TIME_SCALE

    def __init__(self) -> None:
        super().__init__()
        self._first = True
        # set by lltrace.pipeline.decoders.optimize_decoder (the preset's decoder_* knobs)
        self.memory_format: torch.memory_format | None = None   # channels-last, when asked for
        self.graphed: Callable[[Tensor, bool], Tensor] | None = None   # per-block CUDA graphs
        # compile_steady's compiled code (what it compiles is the subclass's: a block, a frame)
        self._steady: Callable[..., Tensor] | None = None
        self._last_stream: torch.cuda.Stream | None = None   # the CUDA stream that last used the state

    def reset(self) -> None:
        """Start a new video: forget every cached activation."""
        self._order_streams()
        self._first = True
        self._reset_state()

    def _order_streams(self, device: torch.device | None = None) -> None:
        """The streaming state is used by one CUDA stream at a time: a decode or reset on another
        stream than the last one (decode_async decodes on its own stream) first waits for it."""
        last = self._last_stream
        if device is None:
            if last is None:
                return
            device = last.device
        if device.type != "cuda":
            return
        if torch.cuda.is_current_stream_capturing():
            # Inside a CUDA-graph capture a wait on work outside it is an error ("dependency
            # created on uncaptured work in another stream", the H200 doctor's decode capture,
            # 2026-12-02); whoever captures has ordered the streams before capture_begin. The
            # capture stream is not kept as the last one: it ends with the capture.
            return
        current = torch.cuda.current_stream(device)
        if last is not None and last != current:
            current.wait_stream(last)
        self._last_stream = current

    @contextmanager
    def eager(self) -> Iterator[None]:
        """Decode without the decoder_graph replays and the decoder_compile code until the context
        closes (`lltrace doctor` captures and compiles the decode itself); both come back after."""
        graphed, steady = self.graphed, self._steady
        self.graphed = self._steady = None
        try:
            yield
        finally:
            self.graphed, self._steady = graphed, steady

    def frames_for(self, num_latent_frames: int, first: bool) -> int:
        """Video frames that `num_latent_frames` latent frames decode to (`video_frames`)."""
        return video_frames(num_latent_frames, first, self.time_scale)

    @torch.no_grad()
    def decode_block(self, latents: Tensor) -> Tensor:
        """[B, 16, F, h, w] normalised latents -> [B, 3, T, 8h, 8w] video in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents [B, {self.latent_channels}, F, h, w], got {tuple(latents.shape)}")
        self._order_streams(latents.device)
        first = self._first
        video = self._decode(latents, first) if self.graphed is None else self.graphed(latents, first)
        self._first = False
        b, _, f, h, w = latents.shape
        expected = (b, 3, self.frames_for(f, first), h * self.spatial_scale, w * self.spatial_scale)
        assert tuple(video.shape) == expected, f"decoder produced {tuple(video.shape)}, expected {expected}"
        return video

    # subclasses implement these
    def _decode(self, latents: Tensor, first: bool) -> Tensor:
        raise NotImplementedError

    def _reset_state(self) -> None:
        raise NotImplementedError

    def state_tensors(self) -> list[Tensor]:
        """The tensors that carry the stream from block to block (updated in place)."""
        raise NotImplementedError

    def state_ready(self) -> bool:
        """True once every state tensor exists: from here on a non-first block allocates no
        state and updates it in place, at fixed addresses (what a CUDA graph replay needs)."""
        raise NotImplementedError

    def compile_steady(self, backend: str) -> None:
        """torch.compile (static shapes) of the steady decode: non-first frames with the state
        allocated. The first frame of a video and the state's allocation stay eager."""
        raise NotImplementedError

    def to_channels_last(self) -> None:
        """Conv weights and activations in channels-last (NDHWC / NHWC) memory format: the same
        numbers, a layout cuDNN's fastest conv kernels want."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
            elif isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)

    def init_weights(self, seed: int = 0) -> None:
        raise NotImplementedError


@torch.no_grad()
def init_conv_weights_(module: nn.Module, seed: int, out_scale: dict[nn.Module, float] | None = None) -> None:
    """Seeded random init on the module's own device (no host round trip): conv weights
    N(0, 1/fan_in), biases small, norm gains one. Keeps random activations O(1)."""
    out_scale = out_scale or {}
    first = next(module.parameters())
    gen = torch.Generator(device=first.device).manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, out_scale.get(m, 1.0) / math.sqrt(fan_in), generator=gen)
            if m.bias is not None:
                m.bias.normal_(0.0, 0.02, generator=gen)
        elif isinstance(m, RMS_norm):
            m.gamma.fill_(1.0)


def load_vae_weights(decoder: StreamingDecoder, path: str | Path) -> list[str]:
    """Load a decoder's weights from a checkpoint (.pth/.pt or .safetensors).

    A full VAE checkpoint is fine: keys the decoder does not use (the encoder) are ignored,
    and a wrapper prefix such as `vae.` is stripped. Returns the ignored keys.
    """
    sd = _read_state_dict(Path(path))
    expected = decoder.state_dict()
    sd = _strip_prefix(sd, expected)
    if hasattr(decoder, "adapt_checkpoint"):
        sd = decoder.adapt_checkpoint(sd)
    missing = [k for k in expected if k not in sd]
    if missing:
        shown = ", ".join(missing[:6]) + (f", ... ({len(missing)} in all)" if len(missing) > 6 else "")
        raise LltraceError(f"{path}: not a {type(decoder).__name__} checkpoint, missing keys: {shown}")
    bad = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if bad:
        raise LltraceError(f"{path}: wrong tensor shapes for this model config: {'; '.join(bad[:4])}")
    decoder.load_state_dict({k: sd[k] for k in expected}, strict=True)
    return sorted(k for k in sd if k not in expected)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise LltraceError(f"VAE weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch/safetensors raise many types for a corrupt file
        raise LltraceError(f"cannot read VAE weights {path}: {type(e).__name__}: {e}") from None
    for wrapper in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise LltraceError(f"{path}: not a state dict of tensors")
    return sd


def _strip_prefix(sd: dict[str, Tensor], expected: dict[str, Tensor]) -> dict[str, Tensor]:
    probe = next(iter(expected))
    if probe in sd:
        return sd
    for k in sd:
        if k.endswith("." + probe):
            prefix = k[: -len(probe)]
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


# --------------------------------------------------------------------------- Wan2.1 blocks

def reusable(t: Tensor | None, shape: tuple[int, ...], like: Tensor) -> bool:
    """Can a state tensor be updated in place for input `like`? Not if its shape, dtype or device
    changed, nor if it was made under torch.inference_mode and that mode is now off."""
    return t is not None and t.shape == shape and t.dtype == like.dtype and t.device == like.device \
        and (not t.is_inference() or torch.is_inference_mode_enabled())


def zeroed_or_none(t: Tensor | None) -> Tensor | None:
    """Zero a state tensor in place (its address stays, for CUDA graph replays) where allowed."""
    if t is None or (t.is_inference() and not torch.is_inference_mode_enabled()):
        return None
    return t.zero_()


class FeatureCache:
    """Wan's `feat_cache` / `feat_idx`: the last CACHE_T input frames of every causal conv.

    Convs are numbered in call order within one latent frame (`begin_frame` restarts the
    count). Cached frames live in fixed tensors updated in place, so their addresses stay
    put from the second latent frame on (what a CUDA graph replay needs).
    """

    def __init__(self) -> None:
        self.frames: list[Tensor | None] = []
        self.idx = 0
        self.memory_format = torch.contiguous_format  # channels_last_3d with decoder_layout: channels_last
        self.ready = False  # every slot allocated for input `ready_for` (after a frame that runs every conv)
        self.ready_for: tuple | None = None

    def begin_frame(self) -> None:
        self.idx = 0

    def _take(self) -> int:
        i = self.idx
        self.idx += 1
        if i == len(self.frames):
            self.frames.append(None)
        return i

    def skip(self) -> None:
        """A conv that does not run this frame still owns its slot (keeps numbering stable)."""
        self._take()

    def prepend(self, x: Tensor) -> Tensor:
        """cat(cached frames, x) along time; the cache keeps the newest CACHE_T of them.
        A fresh cache is zeros: the same as the causal zero padding of the first frame."""
        i = self._take()
        b, c, _, h, w = x.shape
        cached = self.frames[i]
        # Once `ready`, every slot fits this input (WanDecoder._decode checks that once per block):
        # the per-conv check is skipped, which also keeps it out of a compiled frame (dynamo
        # cannot trace Tensor.is_inference).
        if not self.ready and not reusable(cached, (b, c, CACHE_T, h, w), x):
            cached = x.new_zeros(b, c, CACHE_T, h, w).contiguous(memory_format=self.memory_format)
            self.frames[i] = cached
        xx = torch.cat([cached, x], dim=2)
        cached.copy_(xx[:, :, -CACHE_T:])
        return xx

    def reset(self) -> None:
        self.frames = [zeroed_or_none(f) for f in self.frames]
        self.idx = 0
        self.ready = self.ready and all(f is not None for f in self.frames)


class CausalConv3d(nn.Conv3d):
    """Conv3d padded in time on the left only (2*pad_t frames), by the cache when streaming."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding=0, **kw):
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        p = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        # spatial padding stays in the conv (symmetric); time padding is done here
        super().__init__(in_channels, out_channels, k, padding=(0, p[1], p[2]), **kw)
        self.time_pad = 2 * p[0]
        assert self.time_pad in (0, CACHE_T), "the feature cache holds exactly CACHE_T frames"

    def forward(self, x: Tensor, cache: FeatureCache | None = None) -> Tensor:
        if self.time_pad:
            x = cache.prepend(x) if cache is not None else F.pad(x, (0, 0, 0, 0, self.time_pad, 0))
        return super().forward(x)


class RMS_norm(nn.Module):  # Wan's class name, kept for recognisability
    """Channel RMS norm: F.normalize over channels * sqrt(dim) * gamma (Wan's, no bias)."""

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def _frames_to_images(x: Tensor) -> Tensor:
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _images_to_frames(x: Tensor, b: int) -> Tensor:
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMS_norm(in_dim, images=False), nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMS_norm(out_dim, images=False), nn.SiLU(),
            nn.Identity(),  # Wan's Dropout(0.0): kept so the checkpoint indices match
            CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: FeatureCache | None = None) -> Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMS_norm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, cache: FeatureCache | None = None) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(_frames_to_images(x))
        q, k, v = self.to_qkv(y).reshape(b * t, 1, c * 3, h * w).permute(0, 1, 3, 2).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        return _images_to_frames(self.proj(y), b) + x


class Resample(nn.Module):
    """x2 nearest upsampling in space (channels halved); 'upsample3d' also doubles time with a
    causal conv to 2*dim channels, except on the first latent frame of a video (Wan's 'Rep')."""

    def __init__(self, dim: int, mode: str):
        super().__init__()
        assert mode in ("upsample2d", "upsample3d"), mode
        self.mode = mode
        self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                      nn.Conv2d(dim, dim // 2, 3, padding=1))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: Tensor, cache: FeatureCache, first: bool) -> Tensor:
        if self.mode == "upsample3d":
            if first:
                cache.skip()
            else:
                b, c, t, h, w = x.shape
                x = self.time_conv(x, cache).reshape(b, 2, c, t, h, w)
                x = torch.stack((x[:, 0], x[:, 1]), dim=3).reshape(b, c, t * 2, h, w)  # interleave in time
        return _images_to_frames(self.resample(_frames_to_images(x)), x.shape[0])


class Decoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: list[int], num_res_blocks: int,
                 temporal_upsample: list[bool]):
        super().__init__()
        dims = [dim * u for u in [dim_mult[-1]] + list(dim_mult[::-1])]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        ups: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            if i > 0:
                in_dim //= 2  # the previous Resample halved the channels
            for _ in range(num_res_blocks + 1):
                ups.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                ups.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*ups)
        self.head = nn.Sequential(RMS_norm(dims[-1], images=False), nn.SiLU(),
                                  CausalConv3d(dims[-1], 3, 3, padding=1))

    def forward(self, x: Tensor, cache: FeatureCache, first: bool) -> Tensor:
        x = self.conv1(x, cache)
        for layer in self.middle:
            x = layer(x, cache)
        for layer in self.upsamples:
            x = layer(x, cache, first) if isinstance(layer, Resample) else layer(x, cache)
        for layer in self.head:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x


class WanDecoder(StreamingDecoder):
    """`conv2` + `Decoder3d` of Wan2.1's VAE, decoding one latent frame at a time (as Wan does)."""

    def __init__(self, z_dim: int = 16, base_dim: int = 96, dim_mult=(1, 2, 4, 4), num_res_blocks: int = 2,
                 temporal_upsample=(True, True, False)):
        super().__init__()
        if len(temporal_upsample) != len(dim_mult) - 1:
            raise LltraceError(f"vae.temporal_upsample needs {len(dim_mult) - 1} flags, got {list(temporal_upsample)}")
        if z_dim != len(WAN_LATENT_MEAN):
            raise LltraceError(f"vae.z_dim must be {len(WAN_LATENT_MEAN)} (Wan2.1's latent), got {z_dim}")
        self.latent_channels = z_dim
        self.time_scale = 2 ** sum(bool(t) for t in temporal_upsample)
        self.spatial_scale = 2 ** (len(dim_mult) - 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d(base_dim, z_dim, list(dim_mult), num_res_blocks, list(temporal_upsample))
        # constants, not checkpoint entries; filled by init_weights (meta construction leaves them empty)
        self.register_buffer("latent_mean", torch.empty(z_dim), persistent=False)
        self.register_buffer("latent_std", torch.empty(z_dim), persistent=False)
        self.cache = FeatureCache()

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> WanDecoder:
        """cfg.vae; `temporal_upsample` is in the decoder's order (Wan's temperal_downsample reversed)."""
        v = cfg.vae
        known = {"kind", "z_dim", "base_dim", "dim_mult", "num_res_blocks", "temporal_upsample"}
        unknown = sorted(set(v) - known)
        if unknown:
            raise LltraceError(f"model {cfg.name!r}: unknown vae keys {unknown}", f"valid: {sorted(known)}")
        return cls(z_dim=v.get("z_dim", 16), base_dim=v.get("base_dim", 96), dim_mult=v.get("dim_mult", (1, 2, 4, 4)),
                   num_res_blocks=v.get("num_res_blocks", 2),
                   temporal_upsample=v.get("temporal_upsample", (True, True, False)))

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        # a small output conv keeps random-weight video mostly inside [-1, 1] instead of clipped
        init_conv_weights_(self, seed, out_scale={self.decoder.head[2]: 0.3})
        self.latent_mean.copy_(torch.tensor(WAN_LATENT_MEAN))
        self.latent_std.copy_(torch.tensor(WAN_LATENT_STD))

    def _reset_state(self) -> None:
        self.cache.reset()

    def state_tensors(self) -> list[Tensor]:
        return [f for f in self.cache.frames if f is not None]

    def state_ready(self) -> bool:
        return self.cache.ready

    def compile_steady(self, backend: str) -> None:
        # Per latent frame, not per block: one frame's graph is what repeats (a block unrolled
        # would compile F copies of it). Only frames with every cache slot allocated take it, so
        # the compiled code sees one cache layout: in-place updates of fixed tensors.
        # (the bound forward, not the module: an OptimizedModule attribute would be a submodule,
        # and its keys would leak into state_dict)
        self._steady = torch.compile(self.decoder.forward, dynamic=False, backend=backend)

    def to_channels_last(self) -> None:
        super().to_channels_last()
        self.memory_format = torch.channels_last_3d
        self.cache.memory_format = torch.channels_last_3d
        self.cache.frames = [None if f is None else f.contiguous(memory_format=torch.channels_last_3d)
                             for f in self.cache.frames]

    def _check_ready(self, z: Tensor) -> None:
        """Keep `cache.ready` only if every slot still fits this block's input (shape, dtype,
        device, inference mode): the per-conv checks it stands for are skipped while it holds."""
        c = self.cache
        key = (tuple(z.shape[:2]) + tuple(z.shape[3:]), z.dtype, z.device)
        if c.ready and (c.ready_for != key or any(
                f is None or (f.is_inference() and not torch.is_inference_mode_enabled()) for f in c.frames)):
            c.ready = False
        c.ready_for = key

    def _decode(self, latents: Tensor, first: bool) -> Tensor:
        z = latents.to(self.latent_std.dtype)
        self._check_ready(z)
        if self.memory_format is not None:
            z = z.contiguous(memory_format=self.memory_format)
        z = z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)
        x = self.conv2(z)
        out = []
        for i in range(x.shape[2]):
            self.cache.begin_frame()
            first_frame = first and i == 0
            steady = self._steady is not None and not first_frame and self.cache.ready
            out.append((self._steady if steady else self.decoder)(x[:, :, i:i + 1], self.cache,
                                                                        first=first_frame))
            # a non-first frame runs every causal conv: each slot exists from here on
            self.cache.ready = self.cache.ready or not first_frame
        return torch.cat(out, dim=2).clamp_(-1.0, 1.0)
