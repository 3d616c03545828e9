"""Roofline column of the budget: model FLOPs of each lltrace region and the achieved TFLOP/s.

FLOPs are those of the Wan2.1 generator's forward, from meta.json's model config and preset
knobs (forward only, matmul FLOPs = 2*M*N*K; norms, RoPE, KV writes and other memory-bound
work count as 0). Per forward of Lq query tokens attending to Lk cached tokens:
  self_attn   q,k,v,o projections 8*Lq*d^2  + QK^T and PV 4*Lq*Lk*d
  cross_attn  q,o projections 4*Lq*d^2      + 4*Lq*text_len*d (text k/v are cached per prompt)
  ffn         4*Lq*d*ffn
  embed       patch conv + text MLP + time MLP;  head: 2*Lq*d*(out_dim*patch volume)
With dim 1536, ffn 8960, 30 layers, Lq 4680 and a 15-frame window this is 32.3 TFLOP, the
floor quoted in docs/DESIGN.md §3. The ceiling is a bf16 matmul rate measured on the device
(`measure_matmul_tflops`, stored by the capture in meta.json `ceilings.bf16_tflops`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lltrace.errors import NeedsCudaError

ZERO_FLOP_REGIONS = {"norm", "kv_update", "noise"}   # memory-bound: no matmul FLOPs counted


@dataclass(frozen=True)
class WanShapes:
    dim: int
    ffn_dim: int
    num_layers: int
    text_len: int
    text_dim: int
    freq_dim: int
    in_dim: int
    out_dim: int
    patch_volume: int
    frame_seqlen: int
    frames_per_block: int
    local_attn_size: int

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> "WanShapes | None":
        """From meta.json's `model` (ModelConfig.to_dict()) and `knobs`; None if they are missing."""
        if not isinstance(meta, dict):
            return None
        model, knobs = meta.get("model"), meta.get("knobs")
        if not isinstance(model, dict) or not isinstance(knobs, dict):
            return None
        try:
            patch = [int(p) for p in model.get("patch_size", (1, 2, 2))]
            seqlen = (int(model["latent_height"]) // patch[1]) * (int(model["latent_width"]) // patch[2])
            return cls(dim=int(model["dim"]), ffn_dim=int(model["ffn_dim"]), num_layers=int(model["num_layers"]),
                       text_len=int(model.get("text_len", 512)), text_dim=int(model.get("text_dim", 4096)),
                       freq_dim=int(model.get("freq_dim", 256)), in_dim=int(model.get("in_dim", 16)),
                       out_dim=int(model.get("out_dim", 16)), patch_volume=math.prod(patch), frame_seqlen=seqlen,
                       frames_per_block=int(knobs.get("frames_per_block", 3)),
                       local_attn_size=int(knobs.get("local_attn_size", 12)))
        except (KeyError, TypeError, ValueError):
            return None

    # -- tokens --
    def step_tokens(self, block_index: int) -> tuple[int, int]:
        """(Lq, Lk) of a denoising or context forward of block `block_index`: the block's
        frames attend to the cache window, which includes the block itself."""
        q_frames = self.frames_per_block
        k_frames = min((block_index + 1) * self.frames_per_block, self.local_attn_size)
        return q_frames * self.frame_seqlen, k_frames * self.frame_seqlen

    def recache_tokens(self, frames_so_far: int) -> tuple[int, int]:
        """(Lq, Lk) of the KV re-cache after a prompt switch: the last min(window, frames so
        far) frames through the generator (counted as full attention among them)."""
        frames = max(1, min(self.local_attn_size, frames_so_far))
        return frames * self.frame_seqlen, frames * self.frame_seqlen

    # -- FLOPs --
    def parts(self, lq: int, lk: int) -> dict[str, float]:
        d = self.dim
        self_attn = 8 * lq * d * d + 4 * lq * lk * d
        cross_attn = 4 * lq * d * d + 4 * lq * self.text_len * d
        ffn = 4 * lq * d * self.ffn_dim
        frames = max(1, lq // max(1, self.frame_seqlen))
        embed = (2 * lq * self.in_dim * self.patch_volume * d
                 + 2 * self.text_len * self.text_dim * d + 2 * self.text_len * d * d
                 + frames * (2 * self.freq_dim * d + 2 * d * d + 2 * d * 6 * d))
        head = 2 * lq * d * self.out_dim * self.patch_volume
        layer = self_attn + cross_attn + ffn
        return {"self_attn": float(self_attn), "cross_attn": float(cross_attn), "ffn": float(ffn),
                "layer": float(layer), "embed": float(embed), "head": float(head),
                "forward": float(embed + self.num_layers * layer + head)}


def region_flops(shapes: WanShapes, path: list[tuple[str, int | None]], frames_so_far: int | None) -> float | None:
    """Model FLOPs of one region instance, given its path of (name, index) from the top
    (e.g. [("block", 3), ("step", 1), ("layer", 7), ("ffn", None)]). None when the region
    is not a part of the generator forward (decode, text encode...) or the shapes are unknown.

    `frames_so_far` is the number of latent frames generated before a recache (None if unknown).
    """
    leaf = path[-1][0]
    if leaf in ZERO_FLOP_REGIONS:
        return 0.0
    names = [p[0] for p in path]
    fwd_at = next((i for i, n in enumerate(names) if n in ("step", "context", "recache")), None)
    if fwd_at is None:
        return None
    if names[fwd_at] == "recache":
        if frames_so_far is None:
            return None
        lq, lk = shapes.recache_tokens(frames_so_far)
    else:
        block = next((p[1] for p in path[:fwd_at] if p[0] == "block"), None)
        if block is None:
            return None
        lq, lk = shapes.step_tokens(block)
    parts = shapes.parts(lq, lk)
    if fwd_at == len(path) - 1:
        return parts["forward"]
    return parts.get(leaf)


def ceiling_tflops(meta: dict[str, Any] | None) -> float | None:
    """The measured bf16 matmul ceiling stored in meta.json, if any."""
    try:
        value = meta["ceilings"]["bf16_tflops"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def measure_matmul_tflops(n: int = 8192, dtype: str = "bfloat16", iters: int = 30) -> float:
    """Best achieved dense matmul TFLOP/s on the current CUDA device (the roofline ceiling)."""
    import torch

    if not torch.cuda.is_available():
        raise NeedsCudaError("measuring the matmul ceiling")
    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device="cuda", dtype=dt)
    b = torch.randn(n, n, device="cuda", dtype=dt)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(iters):
        start.record()
        a @ b
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / 1e3)
    return 2 * n ** 3 / best / 1e12
