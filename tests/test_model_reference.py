"""The KV-cached causal DiT equals full attention over the whole stream with LongLive's mask.

`reference_forward` runs the tiny model's modules over every frame so far at once, with no
cache: a query in block b may see key frame g iff g is before the end of block b and g is a
sink frame or one of the (window - sink) most recent frames at that point. The cached path
must give the same flow prediction block by block, across several window roll-overs.
"""
from __future__ import annotations

import math

import pytest
import torch

from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.kv_cache import CrossAttnCache, make_kv_cache
from lltrace.pipeline.model import CausalWanModel, apply_rope
from lltrace.pipeline.weights import init_random_weights

CFG = load_model_config("tiny")
NOISY_T, CLEAN_T = 700.0, 0.0


def naive_attention(q, k, v, allowed=None):
    """softmax(q k^T / sqrt(d)) v written out; q/k/v [B, L, H, D], allowed [Lq, Lk] bool."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


def frame_mask(block_end: list[int], window: int, sink: int) -> torch.Tensor:
    """[F, F]: query frame f may see key frame g (block_end[f] = end frame of f's block)."""
    n = len(block_end)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for f, end in enumerate(block_end):
        for g in range(end):
            allowed[f, g] = g < sink or g >= end - (window - sink)
    return allowed


def reference_forward(model: CausalWanModel, latents, t, context, block_end, window, sink):
    """Flow prediction of every frame in `latents` [B, C, F, H, W] with full masked attention."""
    B = latents.shape[0]
    x = model.patch_embedding(latents)
    f, h, w = x.shape[2:]
    S = h * w
    x = x.flatten(2).transpose(1, 2)
    e, e0 = model.embed_time(t, f)
    ctx = model.embed_text(context)
    cos, sin = model.rope.tables(0, f, h, w)
    allowed = frame_mask(block_end, window, sink).repeat_interleave(S, 0).repeat_interleave(S, 1)

    def per_frame(y, shift, scale):   # y [B, F*S, C], shift/scale [B, F, 1, C]
        return (y.view(B, f, S, -1) * (1 + scale) + shift).view(B, f * S, -1)

    def heads(y):
        return y.view(B, y.shape[1], CFG.num_heads, CFG.head_dim)

    for blk in model.blocks:
        sh, sc, g, sh2, sc2, g2 = (blk.modulation.unsqueeze(1) + e0).chunk(6, dim=2)
        a = blk.self_attn
        hid = per_frame(blk.norm1(x), sh, sc)
        q = apply_rope(heads(a.norm_q(a.q(hid))), cos, sin)
        k = apply_rope(heads(a.norm_k(a.k(hid))), cos, sin)
        y = a.o(naive_attention(q, k, heads(a.v(hid)), allowed).flatten(2))
        x = x + (y.view(B, f, S, -1) * g).view(B, f * S, -1)
        c = blk.cross_attn
        hid = blk.norm3(x)
        y = naive_attention(heads(c.norm_q(c.q(hid))), heads(c.norm_k(c.k(ctx))), heads(c.v(ctx)))
        x = x + c.o(y.flatten(2))
        y = blk.ffn(per_frame(blk.norm2(x), sh2, sc2))
        x = x + (y.view(B, f, S, -1) * g2).view(B, f * S, -1)
    sh, sc = (model.head.modulation.unsqueeze(1) + e).chunk(2, dim=2)
    out = model.head.head(per_frame(model.head.norm(x), sh, sc))
    return model.unpatchify(out, (f, h, w))


def tiny_model(seed: int = 0) -> CausalWanModel:
    model = CausalWanModel(CFG).eval()
    return init_random_weights(model, seed, std=0.05)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("frames_per_block,window,sink", [(1, 4, 2), (2, 5, 1), (2, 4, 0), (3, 6, 3)])
@torch.no_grad()
def test_cached_blocks_equal_full_masked_attention(kind, frames_per_block, window, sink):
    torch.manual_seed(1)
    model = tiny_model()
    kv = make_kv_cache(kind, CFG, 1, window, sink, torch.float32, "cpu")
    xattn = CrossAttnCache(CFG, 1, torch.float32, "cpu")
    context = torch.randn(1, 11, CFG.text_dim)   # shorter than text_len: padded like Wan
    clean_frames, block_end = [], []
    num_blocks = 8
    worst_wrong_window = 0.0
    for b in range(num_blocks):
        start = b * frames_per_block
        end = start + frames_per_block
        block_end += [end] * frames_per_block
        shape = (1, CFG.in_dim, frames_per_block, CFG.latent_height, CFG.latent_width)
        noisy, clean = torch.randn(shape), torch.randn(shape)
        for latents, t in ((noisy, NOISY_T), (clean, CLEAN_T)):   # a denoising step, then the KV write
            tt = torch.full((1, frames_per_block), t)
            out = model(latents, tt, context, kv, xattn, start * CFG.frame_seqlen)
            all_latents = torch.cat(clean_frames + [latents], dim=2)
            all_t = torch.cat([torch.full((1, start), CLEAN_T), tt], dim=1)
            ref = reference_forward(model, all_latents, all_t, context, block_end, window, sink)
            torch.testing.assert_close(out, ref[:, :, start:], rtol=1e-4, atol=1e-5,
                                       msg=f"block {b}, t={t}")
            # The check can fail: the same reference without the window differs clearly.
            unwindowed = reference_forward(model, all_latents, all_t, context, block_end, 10**6, 0)
            worst_wrong_window = max(worst_wrong_window, (unwindowed[:, :, start:] - out).abs().max().item())
        clean_frames.append(clean)
    assert num_blocks * frames_per_block > window + frames_per_block   # the window rolled over
    assert worst_wrong_window > 1e-3
