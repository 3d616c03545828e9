"""Per-instance values behind the noise test must add up to the budget's own numbers,
node by node, on GPU (synthetic and real) and CPU-only traces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lltrace.analysis.instances import compute
from lltrace.trace.budget import build_budget
from lltrace.trace.loader import load_trace
from helpers.synthetic_trace import lltrace_run, write

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted(p for p in (ROOT / "tests" / "data").glob("*.json*") if p.is_file()) + \
    sorted(p for p in (ROOT / "traces" / "examples").glob("*") if p.is_dir() and any(p.glob("trace.json*")))


def check_consistent(path):
    trace = load_trace(path)
    b = build_budget(trace)
    inst = compute(trace)
    assert inst.metric == b.metric
    for p, node in b.tree.walk():
        v = inst.values(p)
        assert v is not None, p
        assert len(v) == node.count, p
        assert float(np.sum(v)) == pytest.approx(node.value(b.metric), rel=1e-9, abs=1e-9), p
    assert set(inst.by_path) == {p for p, _ in b.tree.walk()}
    return trace, b, inst


def test_synthetic_gpu_trace(tmp_path):
    path = write(tmp_path, lltrace_run(blocks=3, steps=2, layers=2).to_json())
    _, b, inst = check_consistent(path)
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
    _, b, inst = check_consistent(path)
    assert b.metric == "cpu" and len(inst.values(("work",))) == 3
    names = {o["name"] for o in inst.ops}
    assert "aten::matmul" in names or "aten::mm" in names


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_traces(path):
    check_consistent(path)
