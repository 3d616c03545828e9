"""The small fast decoder: TAEHV's video decoder (madebyollin/taehv, `taew2_1.pth` for Wan2.1).

A 2-D conv net run over all frames of a block at once. Time enters only through
MemBlocks (a conv over concat(frame, previous frame's input to the block)) and TGrow
(a 1x1 conv to stride*C channels split into `stride` consecutive frames). Streaming keeps,
per MemBlock, the last frame it saw, so blocks decode exactly like one long sequence.

Layer order and names match TAEHV's `decoder` nn.Sequential (`decoder.{i}.…`), so its
decoder weights load with `lltrace.pipeline.vae.load_vae_weights`. Unlike the Wan VAE it
takes the normalised latents the DiT produces (TAEHV applies no latent mean/std).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lltrace.errors import LltraceError
from lltrace.pipeline.vae import (
    StreamingDecoder,
    init_conv_weights_,
    reusable,
    zeroed_or_none,
)

if TYPE_CHECKING:
    from lltrace.pipeline.config import ModelConfig


def conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the incoming latents to (-3, 3)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in * 2, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(),
                                  conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: Tensor, past: Tensor) -> Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """Temporal x`stride`: each frame's 1x1 conv output holds `stride` consecutive frames."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


class FastDecoder(StreamingDecoder):
    """TAEHV decoder behind the StreamingDecoder interface; input/output [B, C, T, H, W]."""

    def __init__(self, channels=(256, 128, 64, 64), latent_channels: int = 16,
                 time_upscale=(False, True, True), space_upscale=(True, True, True)):
        super().__init__()
        if len(channels) != 4:
            raise LltraceError(f"fast_vae.channels needs 4 numbers, got {list(channels)}")
        n = list(channels)
        self.latent_channels = latent_channels
        self.time_scale = 2 ** sum(bool(t) for t in time_upscale)
        self.spatial_scale = 2 ** sum(bool(s) for s in space_upscale)
        # TAEHV's raw output starts with time_scale-1 warm-up frames; dropping them on the first
        # block gives Wan's 1 + 4(n-1) rule
        self.frames_to_trim = self.time_scale - 1
        layers: list[nn.Module] = [Clamp(), conv(latent_channels, n[0]), nn.ReLU()]
        for i in range(3):
            layers += [MemBlock(n[i], n[i]), MemBlock(n[i], n[i]), MemBlock(n[i], n[i]),
                       nn.Upsample(scale_factor=2 if space_upscale[i] else 1),
                       TGrow(n[i], 2 if time_upscale[i] else 1),
                       conv(n[i], n[i + 1], bias=False)]
        layers += [nn.ReLU(), conv(n[3], 3)]
        self.decoder = nn.Sequential(*layers)
        # per MemBlock index: its input at the last frame decoded, [B, C, H, W]
        self.memory: dict[int, Tensor] = {}
        self._mem_blocks = sum(isinstance(m, MemBlock) for m in self.decoder)
        self._ready = False                 # every memory exists and fits input `_ready_for`
        self._ready_for: tuple | None = None

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> FastDecoder:
        v = cfg.fast_vae
        known = {"kind", "channels"}
        unknown = sorted(set(v) - known)
        if unknown:
            raise LltraceError(f"model {cfg.name!r}: unknown fast_vae keys {unknown}", f"valid: {sorted(known)}")
        return cls(channels=tuple(v.get("channels", (256, 128, 64, 64))), latent_channels=cfg.out_dim)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        out = self.decoder[-1]
        init_conv_weights_(self, seed, out_scale={out: 0.3})
        out.bias.add_(0.5)  # random-weight video around mid-grey, not half clipped at black

    def adapt_checkpoint(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """TAEHV checkpoints may store a stride-2 TGrow where this decoder has stride 1;
        TAEHV then keeps the last-timestep output channels (its patch_tgrow_layers)."""
        sd = dict(sd)
        for i, layer in enumerate(self.decoder):
            key = f"decoder.{i}.conv.weight"
            if isinstance(layer, TGrow) and key in sd and sd[key].shape[0] > layer.conv.weight.shape[0]:
                sd[key] = sd[key][-layer.conv.weight.shape[0]:]
        return sd

    def _reset_state(self) -> None:
        self.memory = {i: m for i, m in self.memory.items() if zeroed_or_none(m) is not None}
        self._ready = self._ready and len(self.memory) == self._mem_blocks

    def state_tensors(self) -> list[Tensor]:
        return list(self.memory.values())

    def state_ready(self) -> bool:
        return self._ready

    def compile_steady(self, backend: str) -> None:
        # The whole block: this decoder runs all of a block's frames at once (2-D convs).
        self._steady = torch.compile(self._decode_frames, dynamic=False, backend=backend)

    def to_channels_last(self) -> None:
        super().to_channels_last()
        self.memory_format = torch.channels_last
        self.memory = {i: m.contiguous(memory_format=torch.channels_last) for i, m in self.memory.items()}

    def _decode(self, latents: Tensor, first: bool) -> Tensor:
        # Once per block, outside any compiled code: keep `_ready` only if every memory still fits
        # (shape, dtype, device, inference mode); `_past` skips its own check while it holds.
        b, _, _, h, w = latents.shape
        key = (b, h, w, next(self.parameters()).dtype, latents.device)
        self._ready = self._ready and self._ready_for == key and len(self.memory) == self._mem_blocks \
            and not any(m.is_inference() and not torch.is_inference_mode_enabled() for m in self.memory.values())
        steady = self._steady is not None and not first and self._ready
        # (contiguous: a compiled decode is specialised on its input's strides, and a block may
        # come as a slice of a longer latent tensor)
        video = (self._steady if steady else self._decode_frames)(latents.contiguous(), first)
        self._ready, self._ready_for = len(self.memory) == self._mem_blocks, key
        return video

    def _decode_frames(self, latents: Tensor, first: bool) -> Tensor:
        b, c, f, h, w = latents.shape
        x = latents.to(next(self.parameters()).dtype).permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        for i, layer in enumerate(self.decoder):
            if isinstance(layer, MemBlock):
                x = layer(x, self._past(i, x, b))
            else:
                x = layer(x)
        _, c_out, h_out, w_out = x.shape
        video = x.reshape(b, -1, c_out, h_out, w_out)
        if first:
            video = video[:, self.frames_to_trim:]
        # TAEHV's images are in [0, 1]; the pipeline's are in [-1, 1]
        return video.clamp(0.0, 1.0).mul(2.0).sub(1.0).permute(0, 2, 1, 3, 4)

    def _past(self, i: int, x: Tensor, b: int) -> Tensor:
        """Each frame's previous frame (the memory for the block's first), and remember the last."""
        bt, c, h, w = x.shape
        frames = x.reshape(b, bt // b, c, h, w)
        mem = self.memory.get(i)
        if not self._ready and not reusable(mem, (b, c, h, w), x):
            mem = x.new_zeros(b, c, h, w).contiguous(memory_format=self.memory_format or torch.contiguous_format)
            # (an empty past: TAEHV pads with zeros)
            self.memory[i] = mem
        past = torch.cat([mem.unsqueeze(1), frames[:, :-1]], dim=1).reshape(bt, c, h, w)
        mem.copy_(frames[:, -1])
        return past
