"""The flash-attn stand-in of run_longlive_v1.py against attention written out by hand.

Not under tests/ (the script is not part of lltrace); run it with
    .venv/bin/python -m pytest -q scripts/longlive_v1/test_flash_attn_standin.py
It needs no LongLive source.
"""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location(
    "run_longlive_v1", Path(__file__).with_name("run_longlive_v1.py"))
rl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rl)
fa = rl.make_flash_attn_module("sdpa")


def reference(q, k, v, causal=False, scale=None, window=(-1, -1)):
    """One sequence [L, H, D], flash-attn's documented semantics: causal and window aligned to
    the bottom right (query i sees key j iff j <= i + Lk - Lq, and within the window); a query
    that sees no key gives 0."""
    lq, lk, h = q.shape[0], k.shape[0], q.shape[1]
    k = k.repeat_interleave(h // k.shape[1], dim=1)
    v = v.repeat_interleave(h // v.shape[1], dim=1)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    i = torch.arange(lq)[:, None] + lk - lq
    j = torch.arange(lk)[None, :]
    ok = torch.ones(lq, lk, dtype=torch.bool)
    left, right = window
    if causal:
        right = 0
    if right >= 0:
        ok &= j <= i + right
    if left >= 0:
        ok &= j >= i - left
    s = s.masked_fill(~ok, float("-inf"))
    p = s.softmax(-1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", p, v)


def packed(lens, h, d, g):
    return torch.randn(sum(lens), h, d, generator=g, dtype=torch.float64)


def cu(lens):
    return torch.tensor([0, *lens]).cumsum(0).to(torch.int32)


@pytest.mark.parametrize("qlens,klens", [([7, 7], [12, 12]),    # equal: the reshape path
                                         ([3, 7, 5], [9, 4, 12])])  # unequal: per sequence
@pytest.mark.parametrize("causal,window", [(False, (-1, -1)), (True, (-1, -1)), (False, (2, 1))])
def test_varlen_matches_flash_attn_semantics(qlens, klens, causal, window):
    g = torch.Generator().manual_seed(0)
    h, hk, d = 4, 2, 16
    q, k, v = packed(qlens, h, d, g), packed(klens, hk, d, g), packed(klens, hk, d, g)
    out = fa.flash_attn_varlen_func(q, k, v, cu(qlens), cu(klens), max(qlens), max(klens),
                                    softmax_scale=0.3, causal=causal, window_size=window)
    assert out.shape == q.shape
    cq, ck = cu(qlens).tolist(), cu(klens).tolist()
    for s in range(len(qlens)):
        want = reference(q[cq[s]:cq[s + 1]], k[ck[s]:ck[s + 1]], v[ck[s]:ck[s + 1]],
                         causal=causal, scale=0.3, window=window)
        torch.testing.assert_close(out[cq[s]:cq[s + 1]], want)


def test_dense_func_is_the_batched_form():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 5, 3, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 9, 3, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 9, 3, 8, generator=g, dtype=torch.float64)
    out = fa.flash_attn_func(q, k, v, causal=True)
    for b in range(2):
        torch.testing.assert_close(out[b], reference(q[b], k[b], v[b], causal=True))


def test_cpu_flash_attention_packs_like_longlive(monkeypatch):
    """LongLive's flash_attention(q [B, L, H, D], k_lens=...) keeps each key sequence's first
    k_lens[b] rows; the CPU replacement must too."""
    monkeypatch.setitem(rl.sys.modules, "flash_attn", fa)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 2, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 6, 2, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 6, 2, 8, generator=g, dtype=torch.float64)
    out = rl.flash_attention_cpu(q, k, v, k_lens=torch.tensor([6, 3]))
    assert out.shape == q.shape
    torch.testing.assert_close(out[0], reference(q[0], k[0], v[0]))
    torch.testing.assert_close(out[1], reference(q[1], k[1, :3], v[1, :3]))
