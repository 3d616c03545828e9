"""The decoder knobs (issue #17): channels-last, compiled steady decode and bf16 give the eager
float32 decoder's video within stated tolerances, block after block (the streaming state
included, across a reset); the state stays at fixed addresses (what a CUDA graph of the decode
relies on); the GPU-only knobs say "needs CUDA" on a CPU. CPU, tiny config. The CUDA paths
themselves are in tests/test_decoder_cuda.py."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline import decoders
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.decoders import GraphedDecode, build_decoder
from lltrace.pipeline.generator import StreamingPipeline
from lltrace.pipeline.presets import (
    DECODER_KNOBS,
    KNOBS,
    available_presets,
    cpu_fallback,
    load_preset,
)

KINDS = ["wan", "fast"]
H, W = 4, 6          # latent size: non-square so a swapped h/w shows
BLOCK = 3            # latent frames per block, as in the presets
# bf16 against float32 on random weights, video in [-1, 1] (measured on the tiny config: max
# 0.021, mean 0.0023 for wan; max 0.016, mean 0.0027 for fast; no growth from block to block)
BF16_MAX_ABS, BF16_MEAN_ABS = 0.05, 0.005


@pytest.fixture(scope="module")
def tiny():
    return load_model_config("tiny")


def latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, H, W, generator=torch.Generator().manual_seed(seed))


def two_videos(dec) -> list[torch.Tensor]:
    """Three blocks, a reset, two more blocks of other latents: every block's video."""
    out = []
    for seed, blocks in ((0, 3), (1, 2)):
        z = latents(BLOCK * blocks, seed)
        dec.reset()
        out += [dec.decode_block(z[:, :, i:i + BLOCK]).float() for i in range(0, z.shape[2], BLOCK)]
    return out


@pytest.fixture(scope="module", params=KINDS)
def reference(request, tiny):
    """(kind, eager float32 decoder, its videos)."""
    dec = build_decoder(request.param, tiny, torch.float32, "cpu", seed=0)
    return request.param, dec, two_videos(copy.deepcopy(dec))


def test_channels_last_gives_the_same_video(reference):
    _, dec, want = reference
    cl = copy.deepcopy(dec)
    cl.to_channels_last()
    assert cl.memory_format in (torch.channels_last, torch.channels_last_3d)
    got = two_videos(cl)
    # conv weights really are in the new layout (else the knob would measure nothing)
    conv = next(m for m in cl.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last if conv.weight.ndim == 4
                                     else torch.channels_last_3d)
    assert len(got) == len(want) == 5
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bf16_decoder_within_tolerance_of_float32(reference):
    kind, dec, want = reference
    got = two_videos(copy.deepcopy(dec).to(torch.bfloat16))   # the same weights, rounded
    for i, (a, b) in enumerate(zip(got, want)):
        diff = (a - b).abs()
        assert diff.max() <= BF16_MAX_ABS, f"{kind} block {i}: max |bf16 - fp32| {diff.max():.4f}"
        assert diff.mean() <= BF16_MEAN_ABS, f"{kind} block {i}: mean |bf16 - fp32| {diff.mean():.5f}"


def _counting_backend(graphs: list):
    """A torch.compile backend that runs the captured graph as is and counts compiles."""
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    return backend


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_steady_decode_matches_eager_and_compiles_once(reference, backend):
    # aot_eager: dynamo's capture and AOT autograd's functionalization of the in-place
    # feature-cache updates (what could go wrong), without inductor's C++ build.
    kind, dec, want = reference
    torch._dynamo.reset()
    graphs: list = []
    compiled = copy.deepcopy(dec)
    compiled.compile_steady(_counting_backend(graphs))
    got = two_videos(compiled)
    assert len(graphs) == 1, f"{kind}: the steady decode compiled {len(graphs)} times (want 1: no recompile " \
                             "per block, frame, or after a reset)"
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    full = copy.deepcopy(dec)
    full.compile_steady(backend)
    for a, b in zip(two_videos(full), want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(900)   # inductor's C++ build: about 4 minutes on a busy 2-core machine
def test_inductor_compiled_channels_last_bf16_decode_within_tolerance(tiny):
    """The combination the presets would turn on, with inductor's real (CPU) codegen."""
    torch._dynamo.reset()
    dec = build_decoder("wan", tiny, torch.float32, "cpu", seed=0)
    want = two_videos(copy.deepcopy(dec))
    fast = copy.deepcopy(dec).to(torch.bfloat16)
    fast.to_channels_last()
    fast.compile_steady("inductor")
    for a, b in zip(two_videos(fast), want):
        assert (a - b).abs().max() <= BF16_MAX_ABS and (a - b).abs().mean() <= BF16_MEAN_ABS


def test_streaming_state_is_ready_after_the_first_steady_frame_and_keeps_its_addresses(reference):
    kind, dec, _ = reference
    dec = copy.deepcopy(dec)
    dec.reset()
    z = latents(4 * BLOCK)
    dec.decode_block(z[:, :, :1])        # the video's first latent frame alone: not every conv ran
    if kind == "wan":
        assert not dec.state_ready()     # the temporal upsamples skip their first frame
    dec.decode_block(z[:, :, 1:BLOCK])
    assert dec.state_ready()
    ptrs = [t.data_ptr() for t in dec.state_tensors()]
    dec.decode_block(z[:, :, BLOCK:2 * BLOCK])
    dec.reset()                          # a new video zeroes the state in place
    assert all((t == 0).all() for t in dec.state_tensors())
    dec.decode_block(z[:, :, 2 * BLOCK:3 * BLOCK])
    assert [t.data_ptr() for t in dec.state_tensors()] == ptrs


def test_wan_cache_readiness_follows_the_input_shape(tiny):
    dec = build_decoder("wan", tiny, torch.float32, "cpu")
    dec.reset()
    dec.decode_block(latents(BLOCK))
    assert dec.state_ready()
    dec.reset()
    bigger = torch.randn(1, 16, BLOCK, H + 2, W)   # another latent size: the cache must be remade
    video = dec.decode_block(bigger)
    assert video.shape[-2:] == (8 * (H + 2), 8 * W)
    assert {tuple(t.shape[-2:]) for t in dec.state_tensors()} >= {(H + 2, W)}


# --------------------------------------------------------------------------- knobs


def test_decoder_knobs_are_preset_knobs_and_on_where_the_h200_run_chose_them():
    """The presets that compile ship the knobs (perf_decoder.sh's winners for the Wan decoder,
    knob_ab.sh's pairs for ultra's fast decoder: BENCHMARKS.md); baseline is LongLive as
    published, and decode_async is off everywhere (its overlap is unproven on the H200)."""
    assert set(DECODER_KNOBS) <= set(KNOBS)
    for name in available_presets():
        p = load_preset(name)
        on = name in ("balanced", "turbo", "turbo-fp8", "ultra")
        assert p.decoder_layout == ("channels_last" if on else "contiguous"), name
        assert (p.cudnn_benchmark, p.decoder_compile, p.decoder_graph) == (on, on, on), name
        assert not p.decode_async, name


def test_decoder_knobs_need_a_decoder():
    with pytest.raises(LltraceError, match="decoder_compile.*decoder: none"):
        load_preset("baseline", {"decoder": "none", "decoder_compile": "on"})


def test_set_turns_decoder_knobs_on():
    p = load_preset("baseline", {"decoder_layout": "channels_last", "decoder_graph": "true", "decode_async": "1"})
    assert p.decoder_layout == "channels_last" and p.decoder_graph and p.decode_async and not p.decoder_compile


def test_cpu_fallback_turns_the_gpu_only_decoder_knobs_off_with_a_note():
    p = load_preset("balanced", {**{k: "on" for k in DECODER_KNOBS}, "decoder_layout": "channels_last"})
    cpu, notes = cpu_fallback(p)
    assert not (cpu.decoder_graph or cpu.decode_async or cpu.decoder_compile)
    assert cpu.decoder_layout == "channels_last" and cpu.cudnn_benchmark   # these run on a CPU
    for knob in ("decoder_graph", "decode_async", "decoder_compile"):
        assert f"{knob} needs CUDA: off on this CPU run" in notes


@pytest.mark.parametrize("knob,needle", [("decoder_graph", "CUDA graph of the per-block decode"),
                                          ("decode_async", "second CUDA stream")])
def test_gpu_only_decoder_knobs_on_a_cpu_pipeline_say_needs_cuda(knob, needle):
    p = dataclasses.replace(load_preset("baseline"), **{knob: True})
    with pytest.raises(NeedsCudaError) as e:
        StreamingPipeline(p, model="tiny", device="cpu")
    assert needle in str(e.value) and "needs CUDA" in str(e.value)


def test_a_graphed_decode_of_cpu_tensors_says_needs_cuda(tiny):
    dec = build_decoder("wan", tiny, torch.float32, "cpu")
    dec.graphed = GraphedDecode(dec)
    dec.reset()
    z = latents(2 * BLOCK)
    first = dec.decode_block(z[:, :, :BLOCK])     # a video's first block runs eagerly
    assert first.shape[2] == 1 + 4 * (BLOCK - 1) and dec.graphed.eager_calls == 1
    with pytest.raises(NeedsCudaError, match="decoder_graph"):
        dec.decode_block(z[:, :, BLOCK:])


def test_pipeline_with_the_cpu_decoder_knobs_decodes_the_same_video(monkeypatch):
    """Through generate_block: channels-last + compiled steady decode (dynamo, aot_eager)
    record what ran in `optimizations` and give the plain pipeline's frames."""
    monkeypatch.setattr(decoders, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    base = dataclasses.replace(load_preset("baseline"), local_attn_size=6, sink_size=2)
    plain = StreamingPipeline(base, model="tiny", device="cpu")
    knobs = dataclasses.replace(base, decoder_layout="channels_last", decoder_compile=True,
                                cudnn_benchmark=True)
    tuned = StreamingPipeline(knobs, model="tiny", device="cpu")
    assert tuned.optimizations["decoder_layout"] == "channels_last_3d"
    assert tuned.optimizations["decoder_compile"]
    assert "cudnn_benchmark" not in tuned.optimizations   # a cuDNN setting: no-op on a CPU
    assert tuned.describe()["knobs"]["decoder_compile"] is True
    want = [b.video for b in plain.stream("a cat", 3)]
    got = [b.video for b in tuned.stream("a cat", 3)]
    assert [v.shape[2] for v in got] == [1 + 4 * (BLOCK - 1), 4 * BLOCK, 4 * BLOCK]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- command line


def test_a_bad_decoder_knob_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    from lltrace.commands.cli import main

    rc = main(["bench", "-p", "balanced", "--set", "decoder_graph=maybe", "--out", str(tmp_path / "b.json")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lltrace: error:")]
    assert rc == 2 and len(errors) == 1
    assert "decoder_graph" in errors[0] and "bool" in errors[0] and "Traceback" not in errors[0]
    assert not (tmp_path / "b.json").exists()     # validated before anything runs


def test_presets_at_80_columns_tells_the_decoder_knobs_apart(capsys):
    """`lltrace presets` at 80 columns (not a terminal): each decoder knob's row names it whole."""
    from lltrace.commands.cli import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    firsts = [line.split()[0] for line in out.splitlines() if line.strip()]
    tables = firsts.count("knob")   # presets that do not fit side by side fold into more tables
    assert tables >= 1
    for knob in DECODER_KNOBS:
        assert firsts.count(knob) == tables, knob
