"""The budget tree: GPU ms per region from launches, instance statistics, explicit remainders,
idle time; CPU-only traces made here with torch.profiler; JSON round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lltrace.trace.budget import Budget, build_budget, load_budget
from lltrace.trace.loader import load_trace
from helpers.synthetic_trace import lltrace_run, write


def assert_children_sum(budget: Budget) -> None:
    """Every node's children add up to the node (the remainders are explicit nodes)."""
    for path, node in budget.tree.walk():
        if not node.children:
            continue
        total = sum(c.value(budget.metric) for c in node.children)
        assert total == pytest.approx(node.value(budget.metric), rel=1e-9, abs=1e-9), path
        for c in node.children:
            if node.value(budget.metric) > 0:
                assert c.share == pytest.approx(c.value(budget.metric) / node.value(budget.metric))


def class_total(node, cls) -> float:
    return sum(n.gpu_ms for _, n in node.walk() if n.kind == "class" and n.name == cls)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    syn = lltrace_run(blocks=3, steps=2, layers=3, slow_layer0=2.0)
    path = write(tmp_path_factory.mktemp("syn"), syn.to_json(), gz=True)
    return syn, build_budget(load_trace(path))


def test_region_gpu_ms_is_the_sum_of_what_it_launched(synthetic):
    syn, budget = synthetic
    expected = syn.expected_by_path()
    for path, us in expected.items():
        if path and path[0] == "(unattributed)":
            continue
        node = budget.tree.find(*path)
        assert node is not None, path
        assert node.gpu_ms == pytest.approx(us / 1e3, abs=1e-9), path
    assert budget.gpu_ms == pytest.approx(expected[()] / 1e3)
    assert_children_sum(budget)


def test_instances_are_counted_and_distributed(synthetic):
    _, budget = synthetic
    block = budget.tree.find("block")
    assert block.count == 3 and block.kind == "region"
    step0 = block.child("step[0]")
    assert step0.count == 3               # one per block; step[j] stays separate per index
    assert [c.name for c in block.children if c.kind == "region"] == \
        ["noise", "step[0]", "step[1]", "context", "decode"]
    layer0, layer1 = step0.child("layer[0]"), step0.child("layer[1]")
    assert layer0.instances_gpu_ms["p50"] > layer1.instances_gpu_ms["p50"]   # "layer 0 is slow"
    # block 0 also replayed a graph etc. in its decode: the block distribution shows it
    decode = block.child("decode")
    assert decode.instances_gpu_ms["p99"] > decode.instances_gpu_ms["p50"]
    assert decode.instances_cpu_ms is not None and step0.cpu_ms > 0


def test_remainders_are_explicit(synthetic):
    _, budget = synthetic
    layer = budget.tree.find("block", "step[1]", "layer[2]")
    other = layer.child("(other)")
    assert other.kind == "other" and other.gpu_ms == pytest.approx(0.002 * 3)   # residual adds
    assert [c.name for c in other.children] == ["elementwise"]
    unattributed = budget.tree.child("(unattributed)")
    assert unattributed.gpu_ms == pytest.approx(0.030)          # the memcpy before every region
    assert unattributed.children[0].name == "copy/memset"
    assert budget.attributed_fraction == pytest.approx(1 - 0.030 / budget.gpu_ms)
    assert budget.linked_fraction == 1.0


def test_kernel_classes_add_up_everywhere(synthetic):
    _, budget = synthetic
    ffn = budget.tree.find("block", "step[0]", "layer[1]", "ffn")
    assert {c.name: c.gpu_ms for c in ffn.children} == pytest.approx({"gemm": 0.18, "elementwise": 0.018})
    assert sum(budget.classes.values()) == pytest.approx(budget.gpu_ms)
    for cls, total in budget.classes.items():
        assert class_total(budget.tree, cls) == pytest.approx(total), cls
    attn = budget.tree.find("block", "step[0]", "layer[0]", "self_attn")
    assert class_total(attn, "attention") == pytest.approx(3 * 0.100)
    assert sum(k["gpu_ms"] for k in budget.kernels) == pytest.approx(budget.gpu_ms)
    assert budget.kernels[0]["class"] == "attention"


def test_idle_gpu_time_is_the_gaps_between_kernels(synthetic):
    syn, budget = synthetic
    ks = sorted((e["ts"], e["ts"] + e["dur"]) for e in syn.events
                if e.get("ph") == "X" and e["cat"] in ("kernel", "gpu_memcpy"))
    gaps = sum(max(0.0, b[0] - a[1]) for a, b in zip(ks, ks[1:]))
    assert budget.idle_gpu_ms == pytest.approx(gaps / 1e3)
    dev = budget.devices[0]
    assert dev["busy_ms"] + dev["idle_ms"] == pytest.approx(dev["span_ms"])


def test_budget_json_round_trips(synthetic, tmp_path):
    _, budget = synthetic
    data = budget.to_dict()
    assert data["format"] == "lltrace-budget/1"
    again = Budget.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict() == data
    p = tmp_path / "budget.json"
    p.write_text(json.dumps(data))
    assert load_budget(p).tree.find("block", "step[0]").gpu_ms == pytest.approx(budget.tree.find("block", "step[0]").gpu_ms)


def test_cuda_graph_kernels_go_to_the_range_around_the_launch(synthetic):
    _, budget = synthetic
    decode = budget.tree.find("block", "decode")
    # no capture record: the replayed kernels are grouped by their graph launch, and said so
    assert decode.find("graph_launch", "reduction").gpu_ms == pytest.approx(0.015)
    assert any("CUDA graphs" in w for w in budget.warnings)
    assert any("grouped by graph launch" in w for w in budget.warnings)


def test_a_region_without_kernels_is_kept_with_zero_gpu_time(tmp_path):
    syn = lltrace_run(blocks=1, steps=1, layers=1, extras=False)
    syn.open("ll/text_encode", "text_encode")
    syn.close()
    budget = build_budget(load_trace(write(tmp_path, syn.to_json())))
    node = budget.tree.child("text_encode")
    assert node.gpu_ms == 0.0 and node.share == 0.0 and node.cpu_ms > 0
    assert_children_sum(budget)


def _profile_cpu(tmp_path, regions: bool, modules: bool = False):
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile, record_function

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(32)
            self.ffn = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))

        def forward(self, x):
            if regions:
                with record_function("ll/ffn"):
                    return x + self.ffn(self.norm(x))
            return x + self.ffn(self.norm(x))

    layers = torch.nn.ModuleList([Layer(), Layer()])
    x = torch.randn(8, 32)
    with profile(activities=[ProfilerActivity.CPU], with_modules=modules, with_stack=modules) as prof:
        if regions:
            for b in range(2):
                with record_function(f"ll/block[{b}]"):
                    for j in range(2):
                        with record_function(f"ll/step[{j}]"):
                            for k, layer in enumerate(layers):
                                with record_function(f"ll/layer[{k}]"):
                                    x = layer(x)
        else:
            with record_function("forward"):
                for layer in layers:
                    x = layer(x)
            with record_function("loss"):
                x.sum()
    path = tmp_path / "cpu.pt.trace.json"
    prof.export_chrome_trace(str(path))
    return path


def test_cpu_trace_with_lltrace_regions(tmp_path):
    budget = load_budget(_profile_cpu(tmp_path, regions=True))
    assert budget.metric == "cpu" and budget.gpu_ms == 0.0
    assert any("no GPU events" in w for w in budget.warnings)
    block = budget.tree.find("block")
    assert block.count == 2 and block.find("step[1]", "layer[0]").count == 2
    ffn = block.find("step[0]", "layer[1]", "ffn")
    names = {c.name for c in ffn.children}
    assert {"gemm", "norm"} <= names and "(python)" in names
    assert ffn.cpu_ms > 0 and ffn.instances_cpu_ms["p99"] >= ffn.instances_cpu_ms["p50"]
    assert_children_sum(budget)


def test_foreign_cpu_trace_uses_its_record_function_and_module_names(tmp_path):
    budget = load_budget(_profile_cpu(tmp_path, regions=False, modules=True))
    assert budget.tree.name == "trace"
    assert [c.name for c in budget.tree.children if c.kind == "region"] == ["forward", "loss"]
    modules = [p for p, n in budget.tree.walk() if n.name.startswith("nn.Module:")]
    assert modules, "nn.Module ranges become nodes"
    assert_children_sum(budget)


def test_partial_trace_gives_a_partial_budget(tmp_path):
    raw = json.dumps(lltrace_run(blocks=2, steps=1, layers=1).to_json(), indent=1).encode()
    p = tmp_path / "cut.json"
    p.write_bytes(raw[: int(len(raw) * 0.6)])
    budget = load_budget(p)
    assert budget.partial and budget.trace["stop_reason"]
    assert budget.warnings[0].startswith("partial trace")
    assert_children_sum(budget)


def test_kernel_only_trace_is_class_only(tmp_path):
    syn = lltrace_run(blocks=1, steps=1, layers=1, extras=False)
    events = [e for e in syn.to_json()["traceEvents"] if e.get("cat") != "user_annotation"]
    budget = load_budget(write(tmp_path, {"traceEvents": events}))
    assert budget.tree.name == "trace"
    assert all(c.kind == "class" for c in budget.tree.children)
    assert budget.attributed_fraction == 0.0 and budget.linked_fraction == 1.0
    assert np.isclose(sum(c.gpu_ms for c in budget.tree.children), budget.gpu_ms)


@pytest.mark.slow
def test_budget_of_a_real_capture_run_on_cpu(tmp_path):
    """The capture layer's own run directory (tiny model, CPU): the tree follows FORMATS §1."""
    session = pytest.importorskip("lltrace.capture.session")
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import load_preset

    pipe = StreamingPipeline(load_preset("baseline", {"decoder": "fast"}), device="cpu", model="tiny")
    session.run_session(pipe, num_blocks=2, prompt="a fox", run_dir=tmp_path / "run", profile_blocks=(0, 2),
                        regions_level="op")
    budget = load_budget(tmp_path / "run")
    assert budget.metric == "cpu" and budget.run["preset"] == "baseline"
    block = budget.tree.child("block")
    assert block.count == 2
    assert [c.name for c in block.children if c.kind == "region"][:2] == ["noise", "step[0]"]
    layer = block.find("step[0]", "layer[1]")
    assert {"self_attn", "cross_attn", "ffn", "norm"} <= {c.name for c in layer.children}
    assert layer.child("self_attn").child("kv_update") is not None
    # FLOPs come from meta.json's model config and knobs: the block counts its forwards
    forwards = [block.child(n).flops for n in ("step[0]", "step[1]", "step[2]", "step[3]", "context")]
    assert all(f and f > 0 for f in forwards)
    assert block.flops == pytest.approx(sum(forwards))
    assert_children_sum(budget)


def test_node_value_by_metric_and_json_numbers():
    """One accessor per metric, and one rounding contract: ms to the ns, NaN / inf as null."""
    from lltrace.analysis.diff import json_num
    from lltrace.analysis.noise import Judgement
    from lltrace.trace.budget import CPU, GPU, Node

    node = Node("layer[0]")
    node.set_value(GPU, 1.23456789012, {"p50": 0.1 + 0.2, "p95": float("nan"), "p99": 1.0})
    node.set_value(CPU, 2.5)
    assert node.value(GPU) == 1.23456789012 and node.value(CPU) == 2.5
    assert node.instances(GPU)["p99"] == 1.0 and node.instances(CPU) is None
    assert Node("x").value(CPU) == 0.0           # a GPU budget's class leaf has no host ms
    with pytest.raises(KeyError):
        node.value("wall")
    d = node.to_dict()
    assert d["gpu_ms"] == 1.234568 and d["instances_gpu_ms"] == {"p50": 0.3, "p95": None, "p99": 1.0}
    json.dumps(d, allow_nan=False)
    assert json_num(0.1 + 0.2) == 0.3 and json_num(float("inf")) is None and json_num(3) == 3
    j = Judgement("same", p=1 / 3, effect=float("nan")).to_dict()
    assert j["p"] == 0.333333 and j["effect"] is None
