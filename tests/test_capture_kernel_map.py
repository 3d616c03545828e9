"""What `lltrace run` records so that the budget can place compiled and replayed kernels:
inductor's provenance joined with module paths, and CUDA-graph capture records."""
import json

import pytest
import torch

from lltrace.capture import provenance
from lltrace.capture.graph_capture import GraphCaptureRecorder
from lltrace.capture.profiler import ProfilerWindow
from lltrace.capture.provenance import ProvenanceRecorder


class _Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q = torch.nn.Linear(32, 32)
        self.norm_q = torch.nn.LayerNorm(32)

    def forward(self, x):
        return torch.relu(self.norm_q(self.q(x))) * 2


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = _Attn()
        self.norm1 = torch.nn.LayerNorm(32)

    def half(self, x):
        return self.self_attn(self.norm1(x)) + x


def test_provenance_maps_each_inductor_kernel_to_its_modules():
    import torch._inductor.config as ic
    torch._dynamo.reset()
    before = ic.pre_grad_custom_pass   # a run earlier in this process may have its recorder on
    rec = ProvenanceRecorder().start()
    try:
        block = _Block()
        block.half = torch.compile(block.half, backend="inductor")
        with torch.no_grad():
            block.half(torch.randn(4, 32))
    finally:
        rec.stop()
        torch._dynamo.reset()
    data = rec.to_json()
    assert data["available"] and data["format"] == provenance.FORMAT
    (cid, comp), = data["compiles"].items()
    assert cid.count("/") == 1 and comp["mapped"]
    kernels = comp["kernels"]
    assert [k["handle"] for k in kernels] == sorted(k["handle"] for k in kernels)   # call order
    gemm = [k for k in kernels if "mm" in k["kernel"]]
    assert gemm and gemm[0]["modules"] == {"self_attn.q": 1} and gemm[0]["region"] == "ll/self_attn"
    regions = {k["region"] for k in kernels}
    assert "ll/norm" in regions or any(r and "norm" in r for r in regions)
    json.dumps(data)   # provenance.json is plain JSON
    assert ic.pre_grad_custom_pass is before   # stop() put inductor's settings back


def test_graph_capture_needs_cuda_and_says_so(tmp_path):
    events = []
    rec = GraphCaptureRecorder(tmp_path, lambda: "idle", sinks=[events.append])
    with rec.record(0):
        pass
    assert not list(tmp_path.iterdir())                     # no CUDA: nothing recorded
    assert rec.records == [{"graph": 0, "record": None}]
    assert "not recorded" in events[0].message and "step level" in events[0].message


def test_a_capture_during_the_profiler_warm_up_is_noted(tmp_path):
    rec = GraphCaptureRecorder(tmp_path, lambda: "busy")
    with rec.record(3):
        pass
    if torch.cuda.is_available():
        assert rec.records[0]["note"].startswith("the profiler window was warming up")
    else:
        assert rec.records[0]["record"] is None


def test_profiler_window_state(tmp_path):
    w = ProfilerWindow(tmp_path, blocks=(2, 3))
    assert w.state() == "idle"
    w.start()
    try:
        assert w.state() == "idle"      # waiting: another profiler may start
        w.step()
        assert w.state() == "busy"      # warming up for block 2
        w.step()
        assert w.state() == "recording"
    finally:
        w.close()


@pytest.mark.slow
def test_compiled_blocks_get_self_attn_around_their_eager_attention(tmp_path, monkeypatch):
    """A regionally compiled block calls its attention between the compiled halves; the run
    puts that call in ll/self_attn under the layer (it is ~half of a forward's GPU time)."""
    from lltrace.capture.session import run_session
    from lltrace.pipeline import optimize
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import load_preset
    from lltrace.trace.budget import load_budget

    monkeypatch.setattr(optimize, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    pipe = StreamingPipeline(load_preset("balanced", {"decoder": "fast", **{"decoder_compile": "off", "decoder_graph": "off", "cuda_graphs": "off", "kv_cache": "dynamic"}}), model="tiny", device="cpu")
    run_session(pipe, num_blocks=2, prompt="a cat", run_dir=tmp_path / "run", profile_blocks=(1, 2),
                handle_signals=False)
    torch._dynamo.reset()
    b = load_budget(tmp_path / "run")
    layer = b.tree.find("block", "step[0]", "layer[0]")
    assert layer.find("self_attn") is not None and layer.find("kv_update") is not None
