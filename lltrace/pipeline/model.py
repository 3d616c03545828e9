"""The causal Wan2.1 DiT (Wan2.1-T2V-1.3B as made causal by Self-Forcing / LongLive).

One readable file; module and parameter names are those of the real checkpoints
(`patch_embedding`, `blocks.{i}.self_attn.q`, `head.head`, ...), so a Wan / LongLive
generator state dict loads key for key (weights.py). Inference only: every forward goes
through a KV cache (kv_cache.py) and a cross-attention cache.

Shapes: x [B, in_dim, F, H, W] latents -> patches (1, 2, 2) -> L = F * frame_seqlen tokens
of `dim`. The timestep is per latent frame (t [B, F]); its adaLN modulation e0
[B, F, 6, dim] applies to that frame's tokens. 3-D RoPE splits head_dim into
(frame, height, width) parts; frame positions count from the stream's start, so the
block at `current_start` gets frames current_start // frame_seqlen + 0..F-1. The start may
be a Python int or a 0-dim device tensor (index ops, no .item()), which keeps a forward
capturable in a CUDA graph with the static KV cache.

Build the full-size model fast with `torch.device("meta")` + `to_empty(device=...)`, then
`weights.init_random_weights` or `weights.load_generator_weights`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lltrace.pipeline.attention import attention, resolve_backend
from lltrace.pipeline.config import ModelConfig
from lltrace.pipeline.kv_cache import CrossAttnCache, KVCache
from lltrace.pipeline.presets import ELEMENTWISE

ROPE_THETA = 10000.0
# Wan builds RoPE tables for 1024 positions per axis; a stream runs longer than 1024 latent
# frames (~2.7 min of video), so the frame axis gets a longer table (same frequencies).
ROPE_MAX_FRAMES = 16384
ROPE_MAX_HW = 1024


# ----------------------------------------------------------------------------- norms
# elementwise: "fused" (a preset knob, see CausalWanModel.set_elementwise) runs the norms on
# the model-dtype tensor itself instead of an explicit float32 copy. That keeps Wan's float32
# statistics: PyTorch's layer_norm / rms_norm kernels (CUDA and CPU) accumulate bf16/fp16
# inputs in float32 (their "opmath" type) and round the result once, which is what the
# reference's `.float() ... .type_as(x)` does, minus two full-size cast kernels and a
# float32 tensor in memory per norm. The RMSNorm's weight is applied inside the kernel
# (before the rounding, not after it): one rounding fewer than Wan, one kernel instead of four.
class FP32LayerNorm(nn.LayerNorm):
    """Wan's LayerNorm: computed in float32, cast back (bf16 statistics drift)."""

    fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class FP32RMSNorm(nn.RMSNorm):
    """Wan's RMSNorm over the full dim: normalised in float32, cast back, then scaled."""

    fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)
        return F.rms_norm(x.float(), self.normalized_shape, None, self.eps).type_as(x) * self.weight


# ----------------------------------------------------------------------------- embeddings
def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding: [cos, sin] of t * 10000^(-i/half), in float64 as Wan does."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float64) / half)
    angles = torch.outer(t.to(torch.float64), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """head_dim channels for (frame, height, width): Wan's [d - 4(d//6), 2(d//6), 2(d//6)]."""
    d6 = head_dim // 6
    return head_dim - 4 * d6, 2 * d6, 2 * d6


def _rope_angles(max_pos: int, dim: int) -> torch.Tensor:
    """[max_pos, dim/2] angles pos * theta^(-2i/dim), built on the CPU in float64."""
    inv = 1.0 / ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim)
    return torch.outer(torch.arange(max_pos, dtype=torch.float64, device="cpu"), inv)


class Rope3D:
    """cos/sin tables of the three RoPE axes; `tables(start_frame, f, h, w)` -> [L, 1, head_dim/2].

    Plain tensors, not buffers: `model.to(bfloat16)` must not round them. They follow the
    model's device lazily (the first forward on a device moves them, outside any capture).
    """

    def __init__(self, head_dim: int):
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        df, dh, dw = rope_split(head_dim)
        self._tables = {}
        for name, max_pos, dim in (("f", ROPE_MAX_FRAMES, df), ("h", ROPE_MAX_HW, dh), ("w", ROPE_MAX_HW, dw)):
            ang = _rope_angles(max_pos, dim)
            self._tables[name] = (torch.cos(ang).float(), torch.sin(ang).float())
        self._device = torch.device("cpu")

    def to(self, device: torch.device) -> Rope3D:
        if device != self._device:
            self._tables = {k: (c.to(device), s.to(device)) for k, (c, s) in self._tables.items()}
            self._device = device
        return self

    def tables(self, start_frame, f: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames = torch.arange(f, device=self._device) + start_frame   # int or 0-dim tensor start
        out = []
        for i in range(2):   # cos, sin
            tf = self._tables["f"][i].index_select(0, frames)
            th, tw = self._tables["h"][i][:h], self._tables["w"][i][:w]
            grid = torch.cat([tf[:, None, None].expand(f, h, w, -1),
                              th[None, :, None].expand(f, h, w, -1),
                              tw[None, None, :].expand(f, h, w, -1)], dim=-1)
            out.append(grid.reshape(f * h * w, 1, -1))
        return out[0], out[1]

    def fused_tables(self, start_frame, f: int, h: int, w: int, dtype: torch.dtype
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """`tables` widened to [L, 1, head_dim] for apply_rope_fused, in `dtype`: cos repeated
        per channel pair, sin as (-sin, +sin) per pair. Built once per forward, shared by the
        30 layers' q and k."""
        cos, sin = self.tables(start_frame, f, h, w)
        pair = (*cos.shape, 2)   # expand + flatten: no data-dependent size, capturable
        return (cos.unsqueeze(-1).expand(pair).flatten(-2).to(dtype),
                torch.stack([-sin, sin], dim=-1).flatten(-2).to(dtype))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (Wan's complex view) of x [B, L, heads, D] in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


def apply_rope_fused(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """apply_rope in x's own dtype with Rope3D.fused_tables: x * cos + swap_pairs(x) * (-sin, sin).

    Three kernels in bf16 eagerly (pair swap, mul, addcmul) where the float32 reference takes
    about seven over twice the bytes; under torch.compile it is one pointwise kernel either way.
    Precision: the reference rounds its result to bf16 too; here the tables (|cos|, |sin| <= 1,
    angles computed in float64) and the two products are rounded to bf16 as well, which adds
    at most a few bf16 ulps (relative 2^-8) to q and k. Attention then runs on bf16 q/k anyway.
    tests/test_model_fused.py holds the whole forward to the float32 reference.
    """
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos2, swapped, sin2)


# ----------------------------------------------------------------------------- attention
class _Attention(nn.Module):
    """q/k/v/o projections and q/k RMSNorms, named as in Wan's checkpoints."""

    def __init__(self, dim: int, num_heads: int, eps: float, backend: str, qk_norm: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = FP32RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = FP32RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()


class CausalSelfAttention(_Attention):
    fused = False   # rope: (cos, sin) of Rope3D.tables, or Rope3D.fused_tables when fused
    sp = None       # pipeline.parallel.SequenceParallel: x is this rank's tokens (Ulysses)

    def project(self, x, rope):
        """RoPE'd q, k and v of x, [B, L, heads, head_dim]."""
        b, n, d = x.shape[0], self.num_heads, self.head_dim
        rotate = apply_rope_fused if self.fused else apply_rope
        q = rotate(self.norm_q(self.q(x)).view(b, -1, n, d), *rope)
        k = rotate(self.norm_k(self.k(x)).view(b, -1, n, d), *rope)
        return q, k, self.v(x).view(b, -1, n, d)

    def attend(self, q, k, v, mask):
        """Attention over the (cached) keys; its own method so that a regionally compiled block,
        which calls it between its compiled halves, can still put it in ll/self_attn."""
        return attention(q, k, v, self.backend, mask)

    def forward(self, x, rope, kv_cache: KVCache, layer_idx: int, current_start):
        q, k, v = self.project(x, rope)
        if self.sp is not None:   # -> all tokens, this rank's heads (the KV cache holds those)
            q, k, v = self.sp.heads_from_tokens(q, k, v)
        k_att, v_att, mask = kv_cache.update(layer_idx, k, v, current_start)
        out = self.attend(q, k_att, v_att, mask)
        if self.sp is not None:
            out = self.sp.tokens_from_heads(out)
        return self.o(out.flatten(2))


class CrossAttention(_Attention):
    """Attention from video tokens to the prompt's tokens.

    `cache_k`/`cache_v` are this layer's CrossAttnCache buffers; with `context` (the embedded
    prompt) given they are refilled in place first, else read as they are. They arrive as
    tensors, not as (cache, layer index): a regionally compiled block would otherwise
    specialise on the index and recompile for every layer.
    """

    def forward(self, x, context, cache_k: torch.Tensor, cache_v: torch.Tensor):
        b, n, d = x.shape[0], self.num_heads, self.head_dim
        q = self.norm_q(self.q(x)).view(b, -1, n, d)
        if context is not None:
            cache_k.copy_(self.norm_k(self.k(context)).view(b, -1, n, d))
            cache_v.copy_(self.v(context).view(b, -1, n, d))
        return self.o(attention(q, cache_k, cache_v, self.backend).flatten(2))


# ----------------------------------------------------------------------------- blocks
def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """x [B, F*S, C] with per-frame shift/scale [B, F, 1, C]."""
    f = shift.shape[1]
    if fused:   # one full-size kernel (addcmul) instead of two; same operations, same dtype
        return torch.addcmul(shift, x.unflatten(1, (f, -1)), 1 + scale).flatten(1, 2)
    return (x.unflatten(1, (f, -1)) * (1 + scale) + shift).flatten(1, 2)


def _gate(y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return (y.unflatten(1, (gate.shape[1], -1)) * gate).flatten(1, 2)


def _add_gated(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, fused: bool) -> torch.Tensor:
    """x + _gate(y, gate): the residual add of a gated branch (one addcmul kernel when fused)."""
    if fused:
        f = gate.shape[1]
        return torch.addcmul(x.unflatten(1, (f, -1)), y.unflatten(1, (f, -1)), gate).flatten(1, 2)
    return x + _gate(y, gate)


class CausalWanBlock(nn.Module):
    fused = False   # adaLN modulation and gating as addcmul (CausalWanModel.set_elementwise)

    def __init__(self, cfg: ModelConfig, backend: str):
        super().__init__()
        dim, eps = cfg.dim, cfg.eps
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = CausalSelfAttention(dim, cfg.num_heads, eps, backend, cfg.qk_norm)
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, cfg.num_heads, eps, backend, cfg.qk_norm)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)

    def forward(self, x, e0, context, rope, kv_cache, cross_kv, layer_idx, current_start):
        shift, scale, gate, shift2, scale2, gate2 = (self.modulation.unsqueeze(1) + e0).chunk(6, dim=2)
        fused = self.fused
        y = self.self_attn(_modulate(self.norm1(x), shift, scale, fused), rope, kv_cache, layer_idx, current_start)
        x = _add_gated(x, y, gate, fused)
        x = x + self.cross_attn(self.norm3(x), context, *cross_kv)
        y = self.ffn(_modulate(self.norm2(x), shift2, scale2, fused))
        return _add_gated(x, y, gate2, fused)

    # -- the same block in two tensor-only halves, for regional torch.compile ------------------
    # The KV-cache update (Python ints, per-layer lists) and the attention over the cache
    # (a length that grows until the window is full) stay eager between the halves, so the
    # compiled code sees no int that changes per layer or per block and never recompiles.
    def pre_attn(self, x, e0, rope):
        mods = (self.modulation.unsqueeze(1) + e0).chunk(6, dim=2)
        q, k, v = self.self_attn.project(_modulate(self.norm1(x), mods[0], mods[1], self.fused), rope)
        return q, k, v, mods

    def post_attn(self, x, attn, mods, context, cache_k, cache_v):
        fused = self.fused
        x = _add_gated(x, self.self_attn.o(attn.flatten(2)), mods[2], fused)
        x = x + self.cross_attn(self.norm3(x), context, cache_k, cache_v)
        y = self.ffn(_modulate(self.norm2(x), mods[3], mods[4], fused))
        return _add_gated(x, y, mods[5], fused)

    def forward_split(self, x, e0, context, rope, kv_cache, cross_kv, layer_idx, current_start):
        q, k, v, mods = self.pre_attn(x, e0, rope)
        sp = self.self_attn.sp
        if sp is not None:   # the all-to-alls stay eager, between the compiled halves
            q, k, v = sp.heads_from_tokens(q, k, v)
        k_att, v_att, mask = kv_cache.update(layer_idx, k, v, current_start)
        attn = self.self_attn.attend(q, k_att, v_att, mask)
        if sp is not None:
            attn = sp.tokens_from_heads(attn)
        return self.post_attn(x, attn, mods, context, *cross_kv)


class Head(nn.Module):
    fused = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim ** 0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """e [B, F, 1, C]: the per-frame time embedding (before time_projection)."""
        shift, scale = (self.modulation.unsqueeze(1) + e).chunk(2, dim=2)
        return self.head(_modulate(self.norm(x), shift, scale, self.fused))


# ----------------------------------------------------------------------------- model
class CausalWanModel(nn.Module):
    """Wan2.1 DiT run block-causally through a KV cache (see the module docstring).

    `attention_backend` is "sdpa" | "flash" | "auto" ("auto"/"flash" look at this machine:
    pass the result of `resolve_backend(name, device)` to pin it); `self.attention_backend`
    is the one that runs (masked attention of the static KV cache always runs SDPA).
    `elementwise` is "reference" (Wan's float32 RoPE and norm casts) or "fused"
    (set_elementwise: the same steps in the model's dtype, fewer kernels).
    No instrumentation inside: lltrace.capture.hooks puts the ll/layer[k], ll/self_attn, ...
    regions (docs/FORMATS.md §1) on these module names, and ll/kv_update on `kv_cache.update`.
    `sp` (pipeline.parallel.SequenceParallel.attach): the forward runs sequence-parallel.
    """

    sp = None

    def __init__(self, cfg: ModelConfig, attention_backend: str = "sdpa", elementwise: str = "reference"):
        super().__init__()
        if attention_backend != "sdpa":
            attention_backend = resolve_backend(attention_backend,
                                                "cuda" if torch.cuda.is_available() else "cpu")
        self.cfg = cfg
        self.attention_backend = attention_backend
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(CausalWanBlock(cfg, attention_backend) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.rope = Rope3D(cfg.head_dim)
        self.set_elementwise(elementwise)

    def set_elementwise(self, mode: str) -> None:
        """"reference": RoPE in float32 and the norms through explicit float32 copies, as Wan
        and LongLive compute them. "fused": RoPE in the model's dtype with full-width tables
        built once per forward (apply_rope_fused), the norms on the model-dtype tensor (float32
        statistics inside the kernel, see FP32LayerNorm), and the adaLN modulation and gated
        residual adds as single addcmul kernels. Set before torch.compile: compiled code
        specialises on it (no guard ever changes after)."""
        if mode not in ELEMENTWISE:
            raise ValueError(f"elementwise must be one of {ELEMENTWISE}, got {mode!r}")
        self.elementwise = mode
        for m in self.modules():
            if isinstance(m, (FP32LayerNorm, FP32RMSNorm, CausalSelfAttention, CausalWanBlock, Head)):
                m.fused = mode == "fused"

    # -- pieces, also used by tests' reference implementations ---------------------------------
    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """[B, <=text_len, text_dim] -> [B, text_len, dim]; zero-padded to text_len as Wan does."""
        pad = self.cfg.text_len - context.shape[1]
        if pad < 0:
            raise ValueError(f"context has {context.shape[1]} tokens, more than text_len {self.cfg.text_len}")
        if pad:
            context = F.pad(context, (0, 0, 0, pad))
        return self.text_embedding(context.to(self.patch_embedding.weight.dtype))

    def embed_time(self, t: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B, F] (or [B]) -> e [B, F, 1, dim] (for the head), e0 [B, F, 6, dim] (for the blocks)."""
        if t.dim() == 1:
            t = t[:, None].expand(-1, num_frames)
        dtype = self.patch_embedding.weight.dtype
        e = self.time_embedding(sinusoidal_embedding(self.cfg.freq_dim, t.flatten()).to(dtype))
        e0 = self.time_projection(e).unflatten(1, (6, self.cfg.dim)).unflatten(0, t.shape)
        return e.unflatten(0, t.shape).unsqueeze(2), e0

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, L, out_dim * prod(patch)] -> [B, out_dim, F*pt, H*ph, W*pw] (Wan's channel order)."""
        (f, h, w), (pt, ph, pw), c = grid, self.cfg.patch_size, self.cfg.out_dim
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, c)
        return torch.einsum("bfhwpqrc->bcfphqwr", x).reshape(x.shape[0], c, f * pt, h * ph, w * pw)

    def start_frame(self, current_start):
        fs = self.cfg.frame_seqlen
        if isinstance(current_start, torch.Tensor):
            return torch.div(current_start, fs, rounding_mode="floor")
        return current_start // fs

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, kv_cache: KVCache,
                crossattn_cache: CrossAttnCache, current_start) -> torch.Tensor:
        """Flow prediction for latents x [B, in_dim, F, H, W] at per-frame timesteps t [B, F].

        `context` [B, text_len, text_dim] is the raw text-encoder output; it is embedded only
        while `crossattn_cache` is not filled for this prompt (then the cache's k/v are used).
        `current_start`: stream token index of x's first token (int or 0-dim long tensor).
        """
        dtype = self.patch_embedding.weight.dtype
        self.rope.to(self.patch_embedding.weight.device)
        x = self.patch_embedding(x.to(dtype))
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        if self.elementwise == "fused":
            # addcmul's output takes its inputs' layout: from the transposed view above, layer 0
            # would hand layer 1 other strides than it got, and the compiled halves (guarded on
            # strides) would compile twice. A contiguous stream keeps every layer's the same.
            x = x.contiguous()
        e, e0 = self.embed_time(t, grid[0])
        ctx = None if crossattn_cache.ready else self.embed_text(context)
        if self.elementwise == "fused":
            rope = self.rope.fused_tables(self.start_frame(current_start), *grid, x.dtype)
        else:
            rope = self.rope.tables(self.start_frame(current_start), *grid)
        if self.sp is not None:   # this rank's slice of every frame's tokens, and their RoPE rows
            x = self.sp.split_tokens(x, 1, grid[0])
            rope = tuple(self.sp.split_tokens(r, 0, grid[0]) for r in rope)
        for i, block in enumerate(self.blocks):
            cross_kv = (crossattn_cache.k[i], crossattn_cache.v[i])
            x = block(x, e0, ctx, rope, kv_cache, cross_kv, i, current_start)
        crossattn_cache.ready = True
        x = self.head(x, e)
        if self.sp is not None:   # every rank ends with the whole prediction
            x = self.sp.gather_tokens(x, grid[0])
        return self.unpatchify(x, grid)


def count_parameters(cfg: ModelConfig) -> int:
    """Parameters of the generator for `cfg`, counted on the meta device (no memory)."""
    with torch.device("meta"):
        model = CausalWanModel(cfg)
    return sum(p.numel() for p in model.parameters())
