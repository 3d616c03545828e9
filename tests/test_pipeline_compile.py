"""Regional compile: the block's tensor-only halves compile once and never recompile per
layer, per block position or across a prompt switch, and give the eager numbers."""
import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from lltrace.pipeline import optimize
from lltrace.pipeline.generator import StreamingPipeline
from lltrace.pipeline.presets import load_preset

# balanced ships a compiled, CUDA-graphed decoder and CUDA graphs over the static cache: off
# here (graphs need CUDA; the decoder compile is tests/test_decoder_optimized.py's), so these
# tests keep the compiled forward over the dynamic cache.
CPU_DECODER = {"decoder_compile": "off", "decoder_graph": "off", "cuda_graphs": "off", "kv_cache": "dynamic"}


@pytest.mark.slow
def test_compiled_blocks_do_not_recompile_and_match_eager(monkeypatch):
    # dynamo's graph capture and guards are what matter here; inductor's CPU build would add
    # minutes on a 2-core CI machine without changing what is asserted.
    monkeypatch.setattr(optimize, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    counters.clear()
    p = dataclasses.replace(load_preset("balanced", CPU_DECODER), local_attn_size=6, sink_size=2)
    compiled = StreamingPipeline(p, model="tiny", device="cpu")
    assert compiled.optimizations["compiled_blocks"] == compiled.model_config.num_layers
    got = [b.latents for b in compiled.stream("a cat", 6, {4: "a dog"})]
    # pre_attn once; post_attn with and without a new prompt to embed: 3 graphs for every
    # layer, block position (the window rolls) and the switch.
    assert counters["stats"]["unique_graphs"] == 3
    assert sum(counters["recompiles"].values()) == 0

    eager = StreamingPipeline(dataclasses.replace(p, compile=False), model="tiny", device="cpu")
    want = [b.latents for b in eager.stream("a cat", 6, {4: "a dog"})]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_op_regions_leave_the_compiled_halves_alone(monkeypatch):
    """`lltrace run` instruments a compiled preset: a hook inside a compiled half would be
    guarded on per layer (its hook id) and recompile for every block until dynamo's limit, then
    run eagerly (seen on the H100: 16 recompiles, frames 5x slower). Compiled blocks get their
    layer region and nothing inside."""
    from lltrace.capture.hooks import instrument_module, wrap_method

    monkeypatch.setattr(optimize, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    counters.clear()
    pipe = StreamingPipeline(load_preset("balanced", CPU_DECODER), model="tiny", device="cpu")
    handle = instrument_module(pipe.generator, "op")
    handle.add(wrap_method(pipe.kv_cache, "update", "ll/kv_update", "op"))
    installed = dict(handle.installed)
    layers = pipe.model_config.num_layers
    assert [installed[f"blocks.{i}"] for i in range(layers)] == [f"ll/layer[{i}]" for i in range(layers)]
    assert not any(name.startswith("blocks.") and name.count(".") > 1 for name in installed)
    assert installed["head"] == "ll/head" and "DynamicKVCache.update" in installed
    assert "blocks.0.ffn" in dict(handle.skipped)
    for _ in pipe.stream("a cat", 4, {3: "a dog"}):
        pass
    handle.remove()
    assert counters["stats"]["unique_graphs"] == 3
    assert sum(counters["recompiles"].values()) == 0


@pytest.mark.slow
def test_bench_times_the_compiled_forward_without_recompiling(monkeypatch):
    """`lltrace bench` times pipe.forward on its own, outside generate_block's no_grad: grad
    mode is part of dynamo's guards, so that once cost a recompile inside the timed repeats
    (seen on the H100: one of 10 forwards took 1.1-2.0 s)."""
    from lltrace.pipeline.bench import bench_preset

    monkeypatch.setattr(optimize, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    counters.clear()
    bench_preset(load_preset("turbo", {"decoder": "fast", **CPU_DECODER}), device="cpu", model="tiny", warmup_blocks=2, blocks=2)
    assert counters["stats"]["unique_graphs"] == 3   # as in generate_block alone: nothing recompiled
