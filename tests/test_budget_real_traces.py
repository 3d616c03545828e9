"""Acceptance tests on real traces: every file in tests/data/ and run in traces/examples/.

- lltrace runs (ll/ regions, recorded on a GPU): >= 95% of GPU kernel time inside a region;
  attention / FFN time adds up the tree (each node's children sum to it, each class's total
  over the tree equals the trace's class total).
- plain torch.profiler traces with a couple of record_function ranges: those ranges become
  the tree, and kernels are linked to their launches.
Skipped cleanly when no such files are present.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lltrace.trace.budget import build_budget
from lltrace.trace.loader import load_trace

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(p for p in (ROOT / "tests" / "data").glob("*")
               if p.name.endswith((".json", ".json.gz")) and p.is_file())
RUNS = sorted(p for p in (ROOT / "traces" / "examples").glob("*") if p.is_dir() and any(p.glob("trace.json*")))
SOURCES = [pytest.param(p, id=str(p.relative_to(ROOT))) for p in FILES + RUNS]

if not SOURCES:
    pytest.skip("no real traces in tests/data/ or traces/examples/ yet", allow_module_level=True)


@pytest.fixture(scope="module", params=SOURCES)
def budget(request):
    trace = load_trace(request.param)
    return trace, build_budget(trace)


@pytest.mark.slow
def test_loads_whole_and_children_add_up(budget):
    trace, b = budget
    assert not b.partial, b.trace.get("stop_reason")
    for path, node in b.tree.walk():
        if node.children:
            total = sum(c.value(b.metric) for c in node.children)
            assert total == pytest.approx(node.value(b.metric), rel=1e-6, abs=1e-6), path
    json.dumps(b.to_dict())


@pytest.mark.slow
def test_class_totals_add_up_the_tree(budget):
    _, b = budget
    if b.metric != "gpu":
        pytest.skip("CPU-only trace")
    assert sum(b.classes.values()) == pytest.approx(b.gpu_ms)
    for cls, total in b.classes.items():
        in_tree = sum(n.gpu_ms for _, n in b.tree.walk() if n.kind == "class" and n.name == cls)
        assert in_tree == pytest.approx(total), cls


@pytest.mark.slow
def test_lltrace_runs_attribute_almost_all_gpu_time(budget):
    trace, b = budget
    if not b.trace["lltrace_regions"] or b.metric != "gpu":
        pytest.skip("not an lltrace GPU run")
    assert b.attributed_fraction >= 0.95
    block = b.tree.child("block")
    assert block is not None and block.count >= 1
    # attention and FFN of a layer add up to the layer's share of its forward
    for path, node in b.tree.walk():
        if node.name.startswith("layer[") and node.child("ffn") is not None:
            parts = sum(c.gpu_ms for c in node.children)
            assert parts == pytest.approx(node.gpu_ms, rel=1e-6)
            assert node.child("ffn").gpu_ms > 0
    assert b.classes.get("attention", 0) > 0 and b.classes.get("gemm", 0) > 0


@pytest.mark.slow
def test_plain_profiler_traces_use_their_record_functions(budget):
    trace, b = budget
    if b.trace["lltrace_regions"] or b.metric != "gpu":
        pytest.skip("not a plain GPU profiler trace")
    names = [c.name for c in b.tree.children if c.kind == "region"]
    assert names, "record_function ranges become the top of the tree"
    assert b.linked_fraction >= 0.95


def test_h100_ultra_graph_replays_are_credited_to_their_step():
    """The recorded ultra run (compiled block halves, CUDA-graph replays, a prompt switch before
    block 4): a replayed forward's kernels have no layer ranges (no Python ran), so they land on
    the step that launched the graph; the eager forward after the switch has its layers."""
    run = ROOT / "traces" / "examples" / "h100-ultra"
    if not run.is_dir():
        pytest.skip("no ultra example")
    b = build_budget(load_trace(run))
    assert b.metric == "gpu" and b.attributed_fraction >= 0.95 and b.linked_fraction >= 0.95
    block = next(n for n in b.tree.children if n.name == "block")
    steps = {c.name: c for c in block.children}
    replayed = steps["step[1]"]                   # replayed in both profiled blocks
    assert replayed.count == 2 and replayed.gpu_ms > 50
    assert not any(c.name.startswith("layer[") for c in replayed.children)
    # this run predates the capture records: its replays are grouped by graph launch, and said so
    group = replayed.child("graph_launch")
    assert group is not None and group.gpu_ms > 0.95 * replayed.gpu_ms
    assert {c.name for c in group.children} >= {"attention", "gemm"}
    assert any("grouped by graph launch" in w for w in b.warnings)
    eager = [c for c in steps["step[0]"].children if c.name.startswith("layer[")]
    assert len(eager) == 30 and all(c.count == 1 for c in eager)   # block 4's first forward only
    assert any(n.name == "recache" for n in b.tree.children)
