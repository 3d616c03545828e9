"""The streaming pipeline on the tiny model: forwards per block, frames per block, recache."""
import dataclasses

import pytest
import torch

from lltrace.errors import NeedsCudaError
from lltrace.pipeline.generator import StreamingPipeline
from lltrace.pipeline.kv_cache import CrossAttnCache, make_kv_cache
from lltrace.pipeline.presets import cpu_fallback, load_preset


def tiny_pipeline(preset="baseline", **knobs):
    p, _ = cpu_fallback(load_preset(preset, knobs))
    return StreamingPipeline(p, model="tiny", device="cpu")


@pytest.mark.parametrize("preset,steps", [("baseline", 4), ("turbo", 3), ("ultra", 2)])
def test_forwards_per_block_is_steps_plus_one(preset, steps):
    pipe = tiny_pipeline(preset)
    calls = []
    pipe.generator.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[2]))
    pipe.start("a cat")
    for _ in range(3):
        calls.clear()
        pipe.generate_block()
        assert len(calls) == steps + 1
        assert set(calls) == {pipe.frames_per_block}


@pytest.mark.parametrize("decoder", ["wan", "fast"])
@pytest.mark.parametrize("fpb", [1, 3])
def test_video_frames_per_block_follow_the_vae_rule(decoder, fpb):
    pipe = tiny_pipeline("baseline", decoder=decoder, frames_per_block=fpb)
    blocks = list(pipe.stream("a cat", 3))
    assert [b.num_frames for b in blocks] == [1 + 4 * (fpb - 1), 4 * fpb, 4 * fpb]
    h, w = pipe.model_config.video_height, pipe.model_config.video_width
    assert blocks[1].video.shape == (1, 3, 4 * fpb, h, w)


def test_prompt_switch_marks_the_next_block_and_counts_prompts():
    pipe = tiny_pipeline()
    blocks = list(pipe.stream("a cat", 4, {2: "a dog"}))
    assert [b.prompt_index for b in blocks] == [0, 0, 1, 1]
    assert [b.after_switch for b in blocks] == [False, False, True, False]


def _kv(cache, tokens):
    return [t[:, :tokens].clone() for t in cache.k + cache.v]


@pytest.mark.slow
def test_recache_equals_recomputing_the_window_from_scratch():
    torch.manual_seed(0)
    pipe = tiny_pipeline()  # window 12, sink 3, 3 frames per block
    pipe.start("a cat walking")
    for _ in range(5):      # 15 frames: the window has rolled
        pipe.generate_block()
    fs, window = pipe.model_config.frame_seqlen, pipe.preset.local_attn_size
    before = _kv(pipe.kv_cache, window * fs)
    clean = torch.cat(pipe._history, dim=2)[:, :, -window:].clone()

    pipe.switch_prompt("a dog swimming")
    after = _kv(pipe.kv_cache, window * fs)

    # From scratch: empty caches positioned at the window's first frame, the new prompt,
    # clean forwards of the window's frames block by block (LongLive's block-causal recache).
    cfg = pipe.model_config
    kv = make_kv_cache("dynamic", cfg, 1, window, pipe.preset.sink_size, pipe.dtype, pipe.device)
    first = 15 - window
    kv.global_end, kv.local_end = first * fs, 0
    xattn = CrossAttnCache(cfg, 1, pipe.dtype, pipe.device)
    ctx = pipe.text_encoder.encode(["a dog swimming"]).to(pipe.dtype)
    fpb = pipe.frames_per_block
    with torch.no_grad():
        for lo in range(0, window, fpb):
            pipe.generator(clean[:, :, lo:lo + fpb], torch.zeros(1, fpb), ctx, kv, xattn, (first + lo) * fs)
    expected = _kv(kv, window * fs)

    for a, e, b in zip(after, expected, before):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(a, b, atol=1e-3)  # the switch really rebuilt the cache
    # ... and the cross-attention cache is reset, to be refilled with the new prompt.
    assert not pipe.crossattn_cache.ready


@pytest.mark.parametrize("preset,feature", [("turbo-fp8", "fp8"), ("ultra", "cuda_graphs")])
def test_gpu_only_knobs_say_they_need_cuda_on_cpu(preset, feature):
    p = load_preset(preset)
    if feature == "cuda_graphs":
        p = dataclasses.replace(p, fp8=False, compile=False)
    with pytest.raises(NeedsCudaError, match="needs CUDA"):
        StreamingPipeline(p, model="tiny", device="cpu")


def test_describe_reports_what_ran():
    d = tiny_pipeline("ultra").describe()
    assert d["attention_backend"] == "sdpa" and d["device"]["type"] == "cpu"
    assert d["knobs"]["kv_cache"] == "static" and d["model"]["name"] == "tiny"
    assert len(d["timesteps"]) == 2 and d["weights"] == "random"


@pytest.mark.slow
def test_static_cache_pipeline_matches_dynamic_across_switch_and_rollover():
    outs = {}
    for kind in ("dynamic", "static"):
        pipe = tiny_pipeline("baseline", kv_cache=kind, local_attn_size=6, sink_size=2)
        outs[kind] = [b.latents for b in pipe.stream("a cat", 6, {3: "a dog"})]
    for a, b in zip(outs["dynamic"], outs["static"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_hooks_see_every_stage_and_pass_through_unchanged():
    torch.manual_seed(0)
    plain = [b.video for b in tiny_pipeline("ultra").stream("a cat", 2)]
    pipe = tiny_pipeline("ultra")     # 2 steps and the fast decoder: the cheapest stream
    seen = []

    def forward(default, x, t, start_frame):
        seen.append(("forward", x.shape[2], t, start_frame))
        return default(x, t, start_frame)

    def decode(default, latents):
        seen.append(("decode", latents.shape[2]))
        return default(latents)

    def encode(default, texts):
        seen.append(("encode", tuple(texts)))
        return default(texts)

    torch.manual_seed(0)
    with pipe.hooked(forward=forward, decode=decode, encode=encode):
        hooked = [b.video for b in pipe.stream("a cat", 2)]
    steps, fpb = len(pipe.timesteps), pipe.frames_per_block
    assert seen[0] == ("encode", ("a cat",))
    assert [s[3] for s in seen if s[0] == "forward"] == [0] * (steps + 1) + [fpb] * (steps + 1)
    assert [s for s in seen if s[0] == "decode"] == [("decode", fpb)] * 2
    for a, b in zip(plain, hooked):
        torch.testing.assert_close(a, b)
    seen.clear()
    pipe.start("a dog")
    pipe.generate_block()
    assert not seen                          # the hooks are gone with the context
    assert pipe.context is not None and pipe.timestep(0.5, 3).shape == (1, 3)


def test_eager_takes_graphs_and_compiled_blocks_off_and_puts_the_same_ones_back():
    from lltrace.pipeline.optimize import COMPILED_BLOCK_ATTRS, compile_blocks

    pipe = tiny_pipeline()
    compile_blocks(pipe.generator, pipe.kv_cache)      # nothing compiles until called
    block = pipe.generator.blocks[0]
    compiled = {a: block.__dict__[a] for a in COMPILED_BLOCK_ATTRS}
    graphed = pipe.graphed_forward = object()
    # the decoder's decoder_compile code and decoder_graph replays too (the H200 doctor once
    # tried to capture ultra's graph replays inside its own capture)
    dec = pipe.decoder
    dec_graphed, dec_steady = dec.graphed, dec._steady = object(), object()
    with pipe.eager():
        assert pipe.graphed_forward is None and dec.graphed is None and dec._steady is None
        assert not any(a in b.__dict__ for b in pipe.generator.blocks for a in COMPILED_BLOCK_ATTRS)
        assert block.forward.__func__ is type(block).forward
    assert pipe.graphed_forward is graphed and dec.graphed is dec_graphed and dec._steady is dec_steady
    assert all(block.__dict__[a] is compiled[a] for a in COMPILED_BLOCK_ATTRS)
