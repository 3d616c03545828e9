"""The instance pass (lltrace.trace.instances): the budget, the diff's noise test and the
export read one set of per-instance values. Every budget node is the sum of its instance
values, on GPU (synthetic and real) and CPU-only traces; virtual rows appended after the
attribution stage (replayed CUDA graphs) count like recorded regions."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lltrace.export import timeline as tl_mod
from lltrace.export.perfetto import lltrace_events
from lltrace.capture.rundir import RunData
from lltrace.trace.attribution import Forest, regions_and_attribution
from lltrace.trace.kernelmap import KernelMapReport
from lltrace.trace.budget import OTHER_NODE, budget_of, build_budget
from lltrace.trace.instances import measure
from lltrace.trace.loader import load_trace
from test_trace_synthetic import lltrace_run, write

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted(p for p in (ROOT / "tests" / "data").glob("*.json*") if p.is_file()) + \
    sorted(p for p in (ROOT / "traces" / "examples").glob("*") if p.is_dir() and any(p.glob("trace.json*")))
ULTRA = ROOT / "traces" / "examples" / "h100-ultra"


def check_consistent(trace, inst):
    """The budget of an instance pass is its instance values summed, node by node."""
    b = budget_of(trace, inst)
    assert inst.metric == b.metric
    nodes = dict(b.tree.walk())
    assert set(nodes) == {p for p, _ in inst.tree.walk()}
    for p, node in nodes.items():
        v = inst.values(p)
        assert v is not None and len(v) == node.count, p
        assert math.fsum(v.tolist()) == node.value(b.metric), p
        assert [c.name for c in node.children] == [c.name for c in inst.node(p).children], p
        if node.kind == "region":
            assert math.fsum(inst.host_values(p).tolist()) == pytest.approx(node.cpu_ms, rel=1e-12), p
            assert sum(r.value_ms for r in inst.regions if r.path == p) == pytest.approx(node.value(b.metric)), p
        if node.children:
            assert math.fsum(c.value(b.metric) for c in node.children) == \
                pytest.approx(node.value(b.metric), rel=1e-9, abs=1e-9), p
    assert len(inst.regions) == len(inst.ra.forest) == b.trace["region_instances"]
    return b


def test_synthetic_gpu_trace(tmp_path):
    path = write(tmp_path, lltrace_run(blocks=3, steps=2, layers=2).to_json())
    trace = load_trace(path)
    inst = measure(trace)
    b = check_consistent(trace, inst)
    assert b.to_dict() == build_budget(trace).to_dict()
    # one value per block for every node below the block, GPU spans inside the host range's reach
    assert len(inst.values(("block", "step[0]", "layer[0]", "self_attn"))) == 3
    blocks = [r for r in inst.regions if r.name.startswith("ll/block[")]
    assert len(blocks) == 3 and all(r.gpu_start_us is not None and r.gpu_end_us > r.gpu_start_us for r in blocks)


def test_cpu_only_trace_has_an_op_table(tmp_path):
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            with record_function("work"):
                torch.randn(64, 64) @ torch.randn(64, 64)
    path = tmp_path / "cpu.json"
    prof.export_chrome_trace(str(path))
    trace = load_trace(path)
    inst = measure(trace)
    b = check_consistent(trace, inst)
    assert b.metric == "cpu" and len(inst.values(("work",))) == 3
    names = {o["name"] for o in inst.ops}
    assert "aten::matmul" in names or "aten::mm" in names


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_traces(path):
    trace = load_trace(path)
    check_consistent(trace, measure(trace))


def test_forest_append_grows_and_validates():
    f = Forest(np.array([7]), np.array([3]), np.array([5 << 32]), np.array([0.0]), np.array([10.0]),
               np.array([-1]), {5 << 32: (0, 1)})
    pos = [f.append(4, 0, 1.0, 2.0)]
    for i in range(40):                       # past the first buffer growth
        pos.append(f.append(4, pos[-1], 1.0, 2.0))
    assert len(f) == 42 and pos == list(range(1, 42))
    assert list(f.idx[:3]) == [7, -1, -1] and f.virtual.sum() == 41
    assert f.parent[41] == 40 and f.thread[41] == 5 << 32 and f.name[41] == 4
    # virtual rows are placed by their stage, never found by time
    assert list(f.innermost(np.array([5 << 32]), np.array([1.5]))) == [0]
    with pytest.raises(ValueError):
        f.append(4, 42, 1.0, 2.0)             # no such parent
    with pytest.raises(ValueError):
        f.append(4, 0, 2.0, 1.0)


@pytest.mark.skipif(not ULTRA.is_dir(), reason="no traces/examples/h100-ultra")
def test_virtual_rows_count_like_recorded_regions():
    """Kernels replayed from a CUDA graph land in the step around cudaGraphLaunch; moving some
    of them into virtual ll/layer[3] / ll/self_attn rows below that step shows them there,
    and the step's (other) shrinks by the same GPU ms."""
    trace = load_trace(ULTRA)
    ra = regions_and_attribution(trace)
    ra.kernel_map = KernelMapReport()   # the virtual-row mechanism alone, without the kernel map
    first = measure(trace, ra=ra)
    before = budget_of(trace, first)
    att, f = ra.att, ra.forest
    steps = [k for k, r in enumerate(first.regions) if r.path == ("block", "step[0]")]
    k = max(steps, key=lambda s: int((att.host == s).sum()))
    direct = np.nonzero((att.host == k) & att.graph)[0]
    direct = direct[np.argsort(trace.x["ts"][att.gpu[direct]], kind="stable")]
    moved = direct[len(direct) // 30 * 3:len(direct) // 30 * 4]
    assert len(moved) > 10
    moved_ms = math.fsum((trace.x["dur"][att.gpu[moved]] / 1e3).tolist())
    names = list(trace.names)
    assert "ll/layer[3]" in names and "ll/self_attn" not in names   # layers are compiled whole here
    layer = ra.add_region(trace, "ll/layer[3]", k, float(f.start[k]), float(f.end[k]))
    attn = ra.add_region(trace, "ll/self_attn", layer, float(f.start[k]), float(f.end[k]))
    assert f.name[layer] == names.index("ll/layer[3]") and trace.names == names + ["ll/self_attn"]
    assert trace.intern("ll/self_attn") == len(names)
    with pytest.raises(ValueError):
        ra.add_region(trace, "ll/clock_sync", k, float(f.start[k]), float(f.end[k]))   # a marker, not a region
    assert f.idx[attn] == -1 and trace.names[f.name[attn]] == "ll/self_attn" and f.parent[attn] == layer
    att.host[moved] = attn

    inst = measure(trace, ra=ra)
    after = check_consistent(trace, inst)
    step = ("block", "step[0]")
    old, new = before.tree.find(*step), after.tree.find(*step)
    assert new.gpu_ms == pytest.approx(old.gpu_ms, rel=1e-12) and new.count == old.count
    assert new.child(OTHER_NODE).gpu_ms == pytest.approx(old.child(OTHER_NODE).gpu_ms - moved_ms, rel=1e-9)
    assert new.child(OTHER_NODE).kernels == old.child(OTHER_NODE).kernels - len(moved)
    for sub in (("layer[3]",), ("layer[3]", "self_attn")):
        o, n = old.find(*sub), new.find(*sub)
        assert n.count == (o.count if o else 0) + 1, sub
        assert n.gpu_ms == pytest.approx((o.gpu_ms if o else 0.0) + moved_ms, rel=1e-9), sub
        assert n.kernels == (o.kernels if o else 0) + len(moved), sub
    assert after.gpu_ms == before.gpu_ms and after.classes == before.classes
    assert after.tree.child("block").gpu_ms == pytest.approx(before.tree.child("block").gpu_ms, rel=1e-12)
    # the diff's values and the export's regions see the virtual rows too
    assert len(inst.values(step + ("layer[3]", "self_attn"))) == new.find("layer[3]", "self_attn").count
    r = inst.regions[attn]
    g = att.gpu[moved]
    assert r.row == -1 and r.name == "ll/self_attn" and r.value_ms == pytest.approx(moved_ms)
    assert r.gpu_start_us == trace.x["ts"][g].min()
    tl = tl_mod.build(trace, RunData(None), inst)
    events, counts = lltrace_events(trace, tl, None, 999, [])
    gpu_regions = [e for e in events if e.get("cat") == "lltrace.gpu_region" and e["args"]["path"] == "block/step[0]/layer[3]/self_attn"]
    assert any(e["args"]["gpu_ms"] == pytest.approx(moved_ms, abs=1e-6) for e in gpu_regions)
