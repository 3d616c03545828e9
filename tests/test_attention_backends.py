"""Attention backends: flash-attn 2 and flash-attn-4 are found by their own modules, a flash
backend that cannot run here is a one-line error, and meta.json's line names what runs."""
from __future__ import annotations

import pytest
import torch

from lltrace.commands.cli import main
from lltrace.errors import LltraceError, NeedsCudaError
from lltrace.pipeline import attention as att
from lltrace.pipeline.presets import ATTENTION


def _fake_package(root, *files):
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def test_presets_offer_exactly_the_backends():
    assert ATTENTION == att.BACKENDS and "flash4" in ATTENTION


def test_flash4_alone_is_not_taken_for_flash_attn_2(tmp_path, monkeypatch):
    # FA4's wheel has flash_attn/cute/ and no flash_attn/__init__.py: `flash_attn` is then a
    # namespace package, which a bare find_spec("flash_attn") would report as FA2.
    if att.flash4_available():
        pytest.skip("flash-attn-4 is installed here; the fake package needs a machine without it")
    _fake_package(tmp_path, "flash_attn/cute/__init__.py", "flash_attn/cute/interface.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert att.flash4_available() and not att.flash_available()
    _fake_package(tmp_path, "flash_attn/__init__.py", "flash_attn/flash_attn_interface.py")
    assert att.flash4_available() and att.flash_available()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_flash4_on_cpu_needs_cuda_and_auto_never_picks_it(tmp_path, monkeypatch):
    _fake_package(tmp_path, "flash_attn/cute/interface.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(NeedsCudaError, match="'flash4' \\(flash-attn-4\\) needs CUDA"):
        att.resolve_backend("flash4", "cpu")
    assert att.resolve_backend("auto", "cpu") == "sdpa"
    with pytest.raises(LltraceError, match="unknown attention backend"):
        att.resolve_backend("flash5", "cpu")


@pytest.mark.parametrize("fa4, fa2, capability, want", [
    (True, True, (9, 0), "flash4"),    # measured faster than SDPA on the H200: it comes first
    (False, True, (9, 0), "flash"),
    (True, False, (8, 0), "sdpa"),     # FA4's forward has Hopper and Blackwell kernels only
    (True, True, (8, 0), "flash"),
    (False, False, (9, 0), "sdpa"),
])
def test_auto_on_a_gpu_prefers_flash4_then_flash_attn_2_then_sdpa(monkeypatch, fa4, fa2, capability, want):
    monkeypatch.setattr(att, "flash4_available", lambda: fa4)
    monkeypatch.setattr(att, "flash_available", lambda: fa2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert att.resolve_backend("auto", "cuda") == want


def test_flash4_is_one_opaque_op_to_the_compiler():
    """Traced with fake tensors (what dynamo and inductor see), flash4 is the custom op alone:
    no FA4 Python is traced, so the doctor's compile checks find no graph break in it."""
    from torch.fx.experimental.proxy_tensor import make_fx
    q, k, v = (torch.randn(1, 6, 2, 8, dtype=torch.bfloat16) for _ in range(3))
    graph = make_fx(lambda q, k, v: torch.ops.lltrace.flash4_attention(q, k, v) * 2,
                    tracing_mode="fake")(q, k, v).graph
    calls = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    assert calls == ["lltrace.flash4_attention.default", "aten.mul.Tensor"]


def test_flash_backends_on_cpu_tensors_run_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 8) for _ in range(3))
    want = att.attention(q, k, v, "sdpa")
    for backend in ("flash", "flash4"):
        assert not att.flash_used(backend, q, None)
        torch.testing.assert_close(att.attention(q, k, v, backend), want)


def test_describe_names_the_kernel_that_runs():
    assert att.describe_backend("sdpa").startswith("sdpa: torch.nn.functional.scaled_dot_product_attention")
    line = att.describe_backend("flash4")
    assert line.startswith("flash4: flash-attn-4") and "flash_attn.cute" in line and "masked" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cli_asking_for_flash4_on_cpu_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    assert main(["run", "--headless", "--frames", "5", "--set", "attention=flash4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "flash4" in err and "needs CUDA" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash-attn-4 runs on CUDA only")
@pytest.mark.parametrize("lk", [4680, 512])   # self-attention over a 3-frame block, cross over text
def test_flash4_matches_sdpa_on_the_gpu(lk):
    """flash4 is a drop-in for SDPA: same output within bf16 rounding, at the pipeline's shapes."""
    from lltrace.pipeline.attention import attention, flash4_available
    if not flash4_available() or torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("flash-attn-4 not installed here, or the GPU is older than SM 9.0")
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, 4680, 12, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(1, lk, 12, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    ref = attention(q.float(), k.float(), v.float(), "sdpa")
    got = attention(q, k, v, "flash4")
    assert got.shape == ref.shape and got.dtype == torch.bfloat16
    # Relative error: bf16 output rounding and flash's bf16 softmax probabilities are ~0.3%; a
    # wrong softmax scale or a dropped key block moves it by tens of percent.
    rel = ((got.float() - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel
