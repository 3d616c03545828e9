"""The static (CUDA-graph capturable) KV cache gives the dynamic cache's numbers.

A stream of blocks (denoising steps + the clean KV write) with prompt switches before and
after the window rolled over: each switch resets the cross-attention cache, takes a new
context and re-runs the last min(window, frames so far) clean frames at their positions
(LongLive's recache), which with a rolled window rewrites the sink slots too.
"""
from __future__ import annotations

import pytest
import torch

from lltrace.errors import LltraceError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.kv_cache import CrossAttnCache, make_kv_cache
from lltrace.pipeline.model import CausalWanModel
from lltrace.pipeline.weights import init_random_weights

CFG = load_model_config("tiny")
FS = CFG.frame_seqlen


def tiny_model() -> CausalWanModel:
    return init_random_weights(CausalWanModel(CFG).eval(), 0, std=0.05)


def stream(model, kind, *, fpb, window, sink, blocks, switch_after, steps=(900.0, 500.0), tensor_start=False,
           seed=0):
    """Every forward's output of a scripted stream; `switch_after`: block indices followed by a switch."""
    g = torch.Generator().manual_seed(seed)
    kv = make_kv_cache(kind, CFG, 1, window, sink, torch.float32, "cpu")
    xattn = CrossAttnCache(CFG, 1, torch.float32, "cpu")
    context = torch.randn(1, CFG.text_len, CFG.text_dim, generator=g)
    history, outs = [], []

    def fwd(x, t, start_frame):
        start = start_frame * FS
        if tensor_start:
            start = torch.tensor(start)
        out = model(x, torch.full((1, x.shape[2]), t), context, kv, xattn, start)
        outs.append(out)
        return out

    for b in range(blocks):
        shape = (1, CFG.in_dim, fpb, CFG.latent_height, CFG.latent_width)
        x = torch.randn(shape, generator=g)
        for t in steps:
            x = x - 0.3 * fwd(x, t, b * fpb)
        fwd(x, 0.0, b * fpb)          # clean forward: writes the KV cache
        history.append(x)
        if b in switch_after:
            context = torch.randn(1, CFG.text_len - 3, CFG.text_dim, generator=g)
            xattn.reset()
            so_far = (b + 1) * fpb
            n = min(window, so_far)
            fwd(torch.cat(history, dim=2)[:, :, -n:], 0.0, so_far - n)
            xattn.reset()
    return outs


CASES = [  # fpb, window, sink, blocks, switch_after
    (2, 5, 2, 9, {1, 5}),     # a recache before the roll-over (4 frames < window) and one after
    (1, 4, 1, 10, {2, 6, 7}),
    (3, 6, 0, 6, {3}),
    (2, 7, 3, 8, {4}),        # recache of 7 frames starting mid-block
]


@pytest.mark.parametrize("fpb,window,sink,blocks,switch_after", CASES)
@pytest.mark.parametrize("tensor_start", [False, True])
@torch.no_grad()
def test_static_cache_equals_dynamic(fpb, window, sink, blocks, switch_after, tensor_start):
    model = tiny_model()
    kw = dict(fpb=fpb, window=window, sink=sink, blocks=blocks, switch_after=switch_after)
    dynamic = stream(model, "dynamic", **kw)
    static = stream(model, "static", tensor_start=tensor_start, **kw)
    assert len(static) == len(dynamic) > 3 * blocks
    assert blocks * fpb > window + fpb          # rolled over
    for i, (s, d) in enumerate(zip(static, dynamic)):
        torch.testing.assert_close(s, d, rtol=1e-4, atol=1e-5, msg=f"forward {i}")
    # The recache matters: a stream without switches gives different later outputs.
    no_switch = stream(model, "static", **{**kw, "switch_after": set()})
    assert not torch.allclose(no_switch[-1], static[-1], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("elementwise, std, blocks, atol", [("reference", 0.05, 7, 1e-6), ("fused", 0.1, 5, 1e-5)])
@torch.no_grad()
def test_static_forward_traces_as_one_graph_without_recompiles(elementwise, std, blocks, atol):
    """No host sync, .item() or branch on a device value: dynamo traces the whole forward
    (fullgraph) and new start positions in a device tensor reuse the graph. The fused
    elementwise path keeps the guarantee (its RoPE tables have no data-dependent size), so a
    CUDA graph can capture it too."""
    torch._dynamo.reset()
    model = init_random_weights(CausalWanModel(CFG, elementwise=elementwise).eval(), 0, std=std)
    graphs = []

    def count_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=count_backend, fullgraph=True)
    caches = {name: (make_kv_cache("static", CFG, 1, 4, 1, torch.float32, "cpu"),
                     CrossAttnCache(CFG, 1, torch.float32, "cpu")) for name in ("compiled", "eager")}
    context = torch.randn(1, CFG.text_len, CFG.text_dim)
    start = torch.zeros((), dtype=torch.long)
    for b in range(blocks):
        x = torch.randn(1, CFG.in_dim, 2, CFG.latent_height, CFG.latent_width)
        t = torch.full((1, 2), 400.0)
        start.fill_(b * 2 * FS)
        got = compiled(x, t, context, *caches["compiled"], start)
        want = model(x, t, context, *caches["eager"], start)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=atol)
    # One graph fills the cross-attention cache (first forward), one reads it: none per position.
    assert len(graphs) == 2
    torch._dynamo.reset()


def test_cache_arguments_are_checked():
    with pytest.raises(LltraceError, match="sink_size"):
        make_kv_cache("static", CFG, 1, 3, 3, torch.float32, "cpu")
    with pytest.raises(LltraceError, match="unknown kv_cache kind"):
        make_kv_cache("paged", CFG, 1, 3, 1, torch.float32, "cpu")
    kv = make_kv_cache("dynamic", CFG, 1, 2, 1, torch.float32, "cpu")
    k = torch.zeros(1, 3 * FS, CFG.num_heads, CFG.head_dim)
    with pytest.raises(LltraceError, match="do not fit"):
        kv.update(0, k, k, 0)


@torch.no_grad()
def test_reset_starts_a_new_video():
    model = tiny_model()
    kw = dict(fpb=2, window=4, sink=1, blocks=3, switch_after=set())
    for kind in ("dynamic", "static"):
        first = stream(model, kind, **kw)
        kv = make_kv_cache(kind, CFG, 1, 4, 1, torch.float32, "cpu")
        xattn = CrossAttnCache(CFG, 1, torch.float32, "cpu")
        g = torch.Generator().manual_seed(0)
        ctx = torch.randn(1, CFG.text_len, CFG.text_dim, generator=g)
        x = torch.randn(1, CFG.in_dim, 2, CFG.latent_height, CFG.latent_width, generator=g)
        for _ in range(2):   # some other video, then reset and the same first forward as `first`
            model(torch.randn_like(x), torch.full((1, 2), 900.0), ctx, kv, xattn, 0)
            model(torch.randn_like(x), torch.full((1, 2), 900.0), ctx, kv, xattn, 2 * FS)
        kv.reset()
        xattn.reset()
        out = model(x, torch.full((1, 2), 900.0), ctx, kv, xattn, 0)
        torch.testing.assert_close(out, first[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dynamic", "static"])
@torch.no_grad()
def test_regionally_compiled_blocks_do_not_recompile_per_layer(kind):
    """One torch.compile per block (the KV update left eager, as the compile preset does) must
    cost the same graphs for 2 or 10 layers: nothing in a block specialises on its layer index
    (dynamo stops compiling a frame after 8 recompiles and the rest would run eagerly)."""
    import dataclasses

    def graphs_for(num_layers: int) -> int:
        torch._dynamo.reset()
        cfg = dataclasses.replace(CFG, num_layers=num_layers)
        model = init_random_weights(CausalWanModel(cfg).eval(), 0)
        graphs = []

        def count_backend(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        kv = make_kv_cache(kind, cfg, 1, 4, 1, torch.float32, "cpu")
        kv.update = torch.compiler.disable(kv.update, recursive=True)
        for block in model.blocks:
            block.compile(backend=count_backend)
        xattn = CrossAttnCache(cfg, 1, torch.float32, "cpu")
        ctx = torch.randn(1, cfg.text_len, cfg.text_dim)
        for b in range(3):
            for t in (900.0, 0.0):
                x = torch.randn(1, cfg.in_dim, 2, cfg.latent_height, cfg.latent_width)
                model(x, torch.full((1, 2), t), ctx, kv, xattn, b * 2 * FS)
        torch._dynamo.reset()
        return len(graphs)

    assert graphs_for(10) == graphs_for(2)


def _unmasked_per_forward(kv, plan, position):
    """Drive layer 0 of `kv` through `plan` ([(start_frame, frames)]): per forward, whether it
    attends without a mask. `position(start_tokens, n)` gives what update() receives."""
    out = []
    for start_frame, frames in plan:
        n = frames * FS
        k = torch.randn(1, n, CFG.num_heads, CFG.head_dim)
        out.append(kv.update(0, k, k, position(start_frame * FS, n))[2] is None)
    return out


# Blocks of 2 frames with a window of 5 and a sink of 1, a 4-frame recache before the window
# filled (after block 1) and a block-causal 5-frame recache after it rolled (after block 5).
PLAN = [(0, 2), (2, 2), (0, 2), (2, 2), (4, 2), (6, 2), (8, 2), (10, 2), (7, 2), (9, 2), (11, 1), (12, 2)]


def test_static_cache_attends_without_a_mask_exactly_when_every_slot_is_valid():
    """The flash kernel runs only unmasked: once the window is full the static cache passes no
    mask. It must never drop it while a slot is unwritten (the first blocks, a recache chunk)."""
    dyn = make_kv_cache("dynamic", CFG, 1, 5, 1, torch.float32, "cpu")
    want = []
    for start_frame, frames in PLAN:
        k = torch.zeros(1, frames * FS, CFG.num_heads, CFG.head_dim)
        dyn.update(0, k, k, start_frame * FS)
        want.append(dyn.local_end == dyn.capacity)
    assert want.count(True) >= 4 and want.count(False) >= 4   # the plan exercises both
    static = lambda: make_kv_cache("static", CFG, 1, 5, 1, torch.float32, "cpu")  # noqa: E731

    assert _unmasked_per_forward(static(), PLAN, lambda s, n: s) == want

    # A device-tensor position announced with expect() (as GraphedForward does): the same.
    kv = static()

    def announced(s, n):
        kv.expect(s, n)
        kv.expect(s, n)   # re-announcing (graph warm-up, capture) changes nothing
        return torch.tensor(s)
    assert _unmasked_per_forward(kv, PLAN, announced) == want

    # Unannounced device positions: the host cannot know, so always masked, until reset().
    kv = static()
    assert _unmasked_per_forward(kv, PLAN[:6], lambda s, n: s)[-1] is True
    assert _unmasked_per_forward(kv, PLAN[6:7], lambda s, n: torch.tensor(s)) == [False]
    assert _unmasked_per_forward(kv, PLAN[7:], lambda s, n: s) == [False] * len(PLAN[7:])
    kv.reset()
    assert _unmasked_per_forward(kv, PLAN, lambda s, n: s) == want
