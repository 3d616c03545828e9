"""Presets: every shipped preset loads; mistakes are clear errors that list the valid choices."""
import pytest

from lltrace.errors import LltraceError
from lltrace.pipeline.presets import (KNOBS, ORDER, available_presets, cpu_fallback, load_preset,
                                      parse_overrides)


def test_all_documented_presets_ship_and_load():
    assert available_presets()[:5] == list(ORDER)
    for name in ORDER:
        p = load_preset(name)
        assert p.name == name and p.steps == len(p.denoising_steps)


def test_preset_knobs_follow_design():
    base, ultra = load_preset("baseline"), load_preset("ultra")
    assert base.denoising_steps == (1000, 750, 500, 250)
    assert (base.local_attn_size, base.sink_size, base.frames_per_block) == (12, 3, 3)
    assert not (base.fp8 or base.compile or base.cuda_graphs)
    assert ultra.denoising_steps == (1000, 500)
    assert (ultra.local_attn_size, ultra.sink_size) == (6, 2)
    assert ultra.fp8 and ultra.compile and ultra.cuda_graphs and ultra.decoder == "fast"
    assert load_preset("turbo").steps == 3 and load_preset("turbo-fp8").fp8


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(LltraceError) as e:
        load_preset("ultraa")
    assert "ultraa" in str(e.value) and "baseline" in str(e.value) and "ultra" in str(e.value)


def test_unknown_knob_lists_valid_knobs():
    with pytest.raises(LltraceError) as e:
        load_preset("baseline", {"stepz": 2})
    assert "stepz" in str(e.value) and "denoising_steps" in str(e.value)


@pytest.mark.parametrize("knob,value,needle", [
    ("dtype", "int8", "bfloat16"),
    ("decoder", "vqgan", "fast"),
    ("sink_size", "two", "int"),
    ("denoising_steps", "250,500", "decrease"),
    ("local_attn_size", "3", "sink_size"),
    ("fp8", "maybe", "bool"),
    ("decoder_graph", "maybe", "bool"),
    ("decode_async", "2x", "bool"),
    ("decoder_compile", "fast", "bool"),
    ("decoder_layout", "nhwc", "channels_last"),
])
def test_bad_knob_values_are_explained(knob, value, needle):
    with pytest.raises(LltraceError) as e:
        load_preset("baseline", {knob: value})
    assert knob in str(e.value) and needle in str(e.value)


def test_cuda_graphs_require_the_static_cache():
    with pytest.raises(LltraceError, match="static"):
        load_preset("ultra", {"kv_cache": "dynamic"})


def test_overrides_from_the_command_line():
    p = load_preset("baseline", parse_overrides(["denoising_steps=1000,500", "fp8=true", "sink_size=2"]))
    assert p.denoising_steps == (1000, 500) and p.fp8 and p.sink_size == 2
    with pytest.raises(LltraceError, match="KNOB=VALUE"):
        parse_overrides(["fp8"])


def test_cpu_fallback_turns_off_gpu_only_knobs_and_says_so():
    p, notes = cpu_fallback(load_preset("ultra"))
    assert not (p.fp8 or p.cuda_graphs or p.compile or p.decoder_graph or p.decoder_compile)
    assert p.denoising_steps == (1000, 500) and p.kv_cache == "static"
    assert p.decoder_layout == "channels_last"   # runs on a CPU too: kept
    assert all("needs CUDA" in n for n in notes)
    assert {n.split()[0] for n in notes} == {"fp8", "cuda_graphs", "compile", "decoder_graph", "decoder_compile"}
    assert "fp8" in KNOBS


def test_fp8_needs_cuda_on_a_cpu_and_leaves_inductor_settings_alone(monkeypatch):
    """On the CPU, fp8 is a clear "needs CUDA" error. Where it runs, torchao must not switch on
    inductor's coordinate-descent tuning for the whole process (its default): that kept the
    H100's first fp8 forward compiling for minutes (BENCHMARKS.md)."""
    import torch
    import torchao.quantization as tq
    from torch import nn

    from lltrace.errors import NeedsCudaError
    from lltrace.pipeline import optimize

    model = nn.Module()
    model.blocks = nn.ModuleList([nn.Linear(32, 32)])
    with pytest.raises(NeedsCudaError, match="fp8"):
        optimize.apply_fp8(model, torch.device("cpu"))

    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(tq, "quantize_", lambda m, config, filter_fn=None: seen.append(config))
    assert optimize.apply_fp8(model, torch.device("cuda")) == 1   # the one block linear
    assert seen and seen[0].set_inductor_config is False
