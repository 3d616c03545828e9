"""elementwise: fused (RoPE, norms, adaLN modulation and gating in the model's dtype) stays within
bf16 tolerance of Wan's float32 reference, on the tiny config, through the KV cache.

Tolerances, stated: in float32 the fused path is the same arithmetic (within 1e-5); in bf16 the
whole forward's error against the float32 model (max and mean absolute) is at most 1.25x the
error of the reference path run in bf16, i.e. fusing adds no error beyond what bf16 itself
costs. (Weights at std 0.1: large enough that RoPE moves the attention, so a wrong rotation
fails the bf16 check too, by 5x.)
"""
from __future__ import annotations

import pytest
import torch

from lltrace.errors import LltraceError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.kv_cache import CrossAttnCache, make_kv_cache
from lltrace.pipeline.model import (
    CausalWanModel,
    FP32LayerNorm,
    FP32RMSNorm,
    Rope3D,
    apply_rope,
    apply_rope_fused,
)
from lltrace.pipeline.presets import load_preset
from lltrace.pipeline.weights import init_random_weights

CFG = load_model_config("tiny")


def test_fused_rope_is_the_reference_rotation():
    rope = Rope3D(CFG.head_dim)
    torch.manual_seed(0)
    f, h, w = 3, 4, 4
    x = torch.randn(2, f * h * w, CFG.num_heads, CFG.head_dim)
    for start in (0, 7, torch.tensor(5000)):   # the frame table far into a stream too
        ref = apply_rope(x, *rope.tables(start, f, h, w))
        got = apply_rope_fused(x, *rope.fused_tables(start, f, h, w, torch.float32))
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
        # The rotation really rotates: it is not the identity at these positions.
        assert (ref - x).abs().max() > 0.1
    # In bf16 it stays within bf16 rounding of the float32 rotation.
    xb = x.bfloat16()
    want = apply_rope(xb.float(), *rope.tables(7, f, h, w))
    got = apply_rope_fused(xb, *rope.fused_tables(7, f, h, w, torch.bfloat16)).float()
    assert (got - want).abs().max() <= 4 * 2 ** -8 * want.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_norms_keep_float32_statistics(dtype):
    torch.manual_seed(0)
    # A large common offset: statistics computed in bf16 would lose the small variations.
    x = (torch.randn(2, 50, CFG.dim) + 30.0).to(dtype)
    for norm in (FP32LayerNorm(CFG.dim, 1e-6, elementwise_affine=True), FP32RMSNorm(CFG.dim, eps=1e-6)):
        with torch.no_grad():
            norm.weight.normal_(1.0, 0.2)
            if getattr(norm, "bias", None) is not None:
                norm.bias.normal_(0.0, 0.2)
        norm = norm.to(dtype)
        ref = norm(x)
        norm.fused = True
        got = norm(x)
        assert got.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 2 ** -7   # one bf16 rounding of O(1) values
        torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)


def _stream(model, dtype, blocks=5, fpb=2, window=4, sink=1):
    """Flow predictions of a few blocks (a denoising forward and the KV write each) of the
    static-shape cache path, with the window rolling."""
    torch.manual_seed(3)
    kv = make_kv_cache("dynamic", CFG, 1, window, sink, dtype, "cpu")
    xattn = CrossAttnCache(CFG, 1, dtype, "cpu")
    context = torch.randn(1, 11, CFG.text_dim)
    outs = []
    for b in range(blocks):
        shape = (1, CFG.in_dim, fpb, CFG.latent_height, CFG.latent_width)
        for t in (700.0, 0.0):
            x = torch.randn(shape)
            outs.append(model(x.to(dtype), torch.full((1, fpb), t), context.to(dtype), kv, xattn,
                              b * fpb * CFG.frame_seqlen).float())
    return torch.cat(outs, dim=2)


def _model(elementwise: str, dtype: torch.dtype) -> CausalWanModel:
    model = CausalWanModel(CFG, elementwise=elementwise).eval()
    init_random_weights(model, 0, std=0.1)
    return model.to(dtype)


@torch.no_grad()
def test_fused_forward_within_bf16_tolerance_of_the_float32_reference():
    ref32 = _stream(_model("reference", torch.float32), torch.float32)
    fused32 = _stream(_model("fused", torch.float32), torch.float32)
    torch.testing.assert_close(fused32, ref32, rtol=1e-5, atol=1e-5)

    err_ref = (_stream(_model("reference", torch.bfloat16), torch.bfloat16) - ref32).abs()
    err_fused = (_stream(_model("fused", torch.bfloat16), torch.bfloat16) - ref32).abs()
    assert err_ref.max() > 0   # bf16 does cost something: the comparison can tell the paths apart
    for stat in (torch.amax, torch.mean):
        assert stat(err_fused) <= 1.25 * stat(err_ref), (stat.__name__, stat(err_fused), stat(err_ref))


def test_the_knob_sets_every_fused_module_and_is_validated():
    model = CausalWanModel(CFG, elementwise="fused")
    flagged = [m for m in model.modules() if getattr(m, "fused", None) is not None]
    assert flagged and all(m.fused for m in flagged)
    assert sum(isinstance(m, (FP32LayerNorm, FP32RMSNorm)) for m in flagged) == 7 * CFG.num_layers + 1
    model.set_elementwise("reference")
    assert not any(m.fused for m in flagged)
    with pytest.raises(ValueError, match="elementwise"):
        model.set_elementwise("triton")
    assert load_preset("baseline").elementwise == "reference"   # LongLive as published
    for name in ("balanced", "turbo", "turbo-fp8", "ultra"):   # measured on the H200 (BENCHMARKS.md)
        assert load_preset(name).elementwise == "fused"
    assert load_preset("balanced", {"elementwise": "reference"}).elementwise == "reference"
    with pytest.raises(LltraceError, match="elementwise.*reference, fused"):
        load_preset("balanced", {"elementwise": "bf16"})


def test_the_pipeline_applies_and_records_the_knob():
    from lltrace.pipeline.generator import StreamingPipeline

    pipe = StreamingPipeline(load_preset("balanced", {"compile": "false", "elementwise": "fused", **{"decoder_compile": "off", "decoder_graph": "off", "cuda_graphs": "off", "kv_cache": "dynamic"}}), model="tiny", device="cpu")
    assert pipe.generator.elementwise == "fused" and pipe.generator.blocks[0].norm1.fused
    described = pipe.describe()["optimizations"]
    assert described["elementwise"] == "fused"
    assert described["attention"].startswith("sdpa")
    pipe.start("a cat")
    assert pipe.generate_block().latents.isfinite().all()


_VIEWS = {"view", "_unsafe_view", "unsqueeze", "expand", "transpose", "t", "unflatten", "flatten",
          "split", "chunk", "slice", "select", "as_strided", "alias", "detach", "permute", "squeeze",
          "reshape", "split_with_sizes", "unbind", "lift_fresh"}


def _per_layer_work(elementwise: str) -> tuple[float, float]:
    """Compute ops (aten calls that produce a new tensor: each a kernel on a GPU) and bytes they
    write, per layer of an eager bf16 forward: the difference between a 4- and a 2-layer model."""
    import dataclasses

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = written = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__ not in _VIEWS:
                self.ops += 1
                outs = out if isinstance(out, (tuple, list)) else [out]
                self.written += sum(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))
            return out

    work = []
    for layers in (2, 4):
        cfg = dataclasses.replace(CFG, num_layers=layers)
        model = init_random_weights(CausalWanModel(cfg, elementwise=elementwise).eval(), 0).to(torch.bfloat16)
        kv = make_kv_cache("dynamic", cfg, 1, 6, 2, torch.bfloat16, "cpu")
        xattn = CrossAttnCache(cfg, 1, torch.bfloat16, "cpu")
        x = torch.randn(1, cfg.in_dim, 3, cfg.latent_height, cfg.latent_width, dtype=torch.bfloat16)
        args = (x, torch.full((1, 3), 500.0), torch.randn(1, 11, cfg.text_dim, dtype=torch.bfloat16), kv, xattn, 0)
        with torch.no_grad():
            model(*args)   # fills the cross-attention cache: the steady forward is counted
            with Count() as c:
                model(*args)
        work.append((c.ops, c.written))
    return (work[1][0] - work[0][0]) / 2, (work[1][1] - work[0][1]) / 2


def test_fused_runs_fewer_kernels_and_writes_fewer_bytes_per_layer():
    """What the knob is for: on the tiny config 78 -> 54 compute ops and 530 -> 351 kB written
    per layer (CPU dispatch; on a GPU rms_norm is one kernel, so fused saves a few more)."""
    ref_ops, ref_bytes = _per_layer_work("reference")
    ops, written = _per_layer_work("fused")
    assert ops <= 0.75 * ref_ops, (ops, ref_ops)
    assert written <= 0.75 * ref_bytes, (written, ref_bytes)
