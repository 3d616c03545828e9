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

    def recache_chunk_tokens(self, frames_so_far: int, chunk: int) -> tuple[int, int]:
        """(Lq, Lk) of chunk `chunk` of a recache: the re-cached frames (the last min(window,
        frames so far)) go through block by block; each chunk attends to the re-cached frames up
        to its own end (LongLive's blockwise causal recache)."""
        n = max(1, min(self.local_attn_size, frames_so_far))
        lo = min(chunk * self.frames_per_block, n - 1)
        hi = min(n, lo + self.frames_per_block)
        return (hi - lo) * self.frame_seqlen, hi * self.frame_seqlen

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


def region_flops(shapes: WanShapes, path: list[tuple[str, int | None]], frames_so_far: int | None,
                 recache_chunk: int | None = None) -> float | None:
    """Model FLOPs of one region instance, given its path of (name, index) from the top
    (e.g. [("block", 3), ("step", 1), ("layer", 7), ("ffn", None)]). None when the region
    is not a part of the generator forward (decode, text encode...) or the shapes are unknown.

    `frames_so_far` is the number of latent frames generated before a recache (None if unknown);
    `recache_chunk` which of the recache's forwards (it runs chunk by chunk) the region is in.
    The recache itself is not one forward: it counts the FLOPs of its chunks (None here).
    """
    leaf = path[-1][0]
    if leaf in ZERO_FLOP_REGIONS:
        return 0.0
    names = [p[0] for p in path]
    fwd_at = next((i for i, n in enumerate(names) if n in ("step", "context", "recache")), None)
    if fwd_at is None:
        return None
    if names[fwd_at] == "recache":
        if frames_so_far is None or recache_chunk is None or fwd_at == len(path) - 1:
            return None
        lq, lk = shapes.recache_chunk_tokens(frames_so_far, recache_chunk)
    else:
        block = next((p[1] for p in path[:fwd_at] if p[0] == "block"), None)
        if block is None:
            return None
        lq, lk = shapes.step_tokens(block)
    parts = shapes.parts(lq, lk)
    if fwd_at == len(path) - 1:
        return parts["forward"]
    return parts.get(leaf)


def ceiling(meta: dict[str, Any] | None) -> tuple[float | None, str]:
    """The matmul ceiling the roofline column uses, from meta.json `ceilings`, and its name:
    the fp8 one for runs with fp8 linears (their GEMMs run in fp8), else bf16."""
    c = meta.get("ceilings") if isinstance(meta, dict) else None
    knobs = meta.get("knobs") if isinstance(meta, dict) else None
    fp8 = isinstance(knobs, dict) and bool(knobs.get("fp8"))

    def value(key):
        v = c.get(key) if isinstance(c, dict) else None
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None
    if fp8 and value("fp8_tflops"):
        return value("fp8_tflops"), "fp8"
    return value("bf16_tflops"), "bf16"


def ceiling_tflops(meta: dict[str, Any] | None) -> float | None:
    """The measured matmul ceiling of meta.json that fits the run (see `ceiling`)."""
    return ceiling(meta)[0]


def measure_fp8_tflops(n: int = 8192, iters: int = 30) -> float:
    """Best achieved fp8 (e4m3, row-wise scaled, bf16 out) matmul TFLOP/s on the current CUDA
    device: the ceiling for runs whose linears are fp8 (torchao's per-row dynamic config)."""
    import torch

    if not torch.cuda.is_available():
        raise NeedsCudaError("measuring the fp8 matmul ceiling")
    a = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn).t()     # column-major, as _scaled_mm wants
    sa = torch.rand(n, 1, device="cuda") + 0.5
    sb = torch.rand(1, n, device="cuda") + 0.5

    def mm():
        return torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)
    return _best_tflops(mm, n, iters)


def measure_matmul_tflops(n: int = 8192, dtype: str = "bfloat16", iters: int = 30) -> float:
    """Best achieved dense matmul TFLOP/s on the current CUDA device (the roofline ceiling)."""
    import torch

    if not torch.cuda.is_available():
        raise NeedsCudaError("measuring the matmul ceiling")
    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device="cuda", dtype=dt)
    b = torch.randn(n, n, device="cuda", dtype=dt)
    return _best_tflops(lambda: a @ b, n, iters)


def _best_tflops(mm, n: int, iters: int) -> float:
    import torch

    for _ in range(3):
        mm()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(iters):
        start.record()
        mm()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / 1e3)
    return 2 * n ** 3 / best / 1e12
