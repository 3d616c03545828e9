"""Compiled and CUDA-graph-replayed kernels under their op regions (lltrace.trace.kernelmap),
on the H200 runs in traces/examples (recorded with `scripts/device/record_examples.sh`)."""
import gzip
import json
import shutil
from pathlib import Path

import pytest

from lltrace.capture.patterns import kernel_region, region_of_submodule
from lltrace.capture.provenance import module_path
from lltrace.trace.attribution import regions_and_attribution
from lltrace.trace.budget import build_budget, load_budget
from lltrace.trace.loader import load_trace

EX = Path(__file__).resolve().parent.parent / "traces" / "examples"
ULTRA, NOGRAPHS, BALANCED = EX / "h200-ultra", EX / "h200-ultra-nographs", EX / "h200-balanced"
FORWARDS = ("step[", "context", "recache")


def forwards(budget):
    return [(p, n) for p, n in budget.tree.walk() if p and p[-1].startswith(FORWARDS)]


def named_share(node) -> float:
    """GPU share of a forward in op regions below its layers, or in embed/head."""
    named = sum(c.gpu_ms for c in node.children if c.kind == "region" and c.name in ("embed", "head"))
    named += sum(g.gpu_ms for c in node.children if c.kind == "region" and c.name.startswith("layer[")
                 for g in c.children if g.kind == "region")
    return named / node.gpu_ms


def op_split(node) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in node.children:
        kids = c.children if c.kind == "region" and c.name.startswith("layer[") else [c]
        for g in kids:
            key = g.name if g.kind == "region" else "(other)"
            out[key] = out.get(key, 0.0) + g.gpu_ms
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


@pytest.mark.parametrize("run", [ULTRA, NOGRAPHS, BALANCED], ids=lambda p: p.name)
def test_every_forward_is_in_named_op_regions(run):
    b = load_budget(run)
    fw = forwards(b)
    assert fw, "no forwards in the budget"
    for path, node in fw:
        assert named_share(node) >= 0.90, (path, named_share(node))


def test_every_replayed_kernel_is_placed_or_reported():
    trace = load_trace(ULTRA)
    b = build_budget(trace)
    km = b.trace["kernel_map"]
    replayed = int(regions_and_attribution(trace).att.graph.sum())
    assert replayed > 1000 and km["replayed_kernels"] == replayed and km["replayed_missed"] == 0
    assert km["method"]["replayed"].startswith("recorded capture")
    assert not any("replayed from CUDA graphs" in w for w in b.warnings)
    # the replayed steps have all 30 layers, each with its attention in self_attn
    step = b.tree.find("block", "step[0]")
    layers = [c for c in step.children if c.name.startswith("layer[")]
    assert len(layers) == 30
    assert all(c.find("self_attn") is not None and c.find("self_attn").gpu_ms > 0 for c in layers)


def test_replayed_split_matches_the_same_kernels_launched_eagerly():
    a, b = load_budget(ULTRA), load_budget(NOGRAPHS)
    for node in ("step[0]", "step[1]", "context"):
        sa, sb = op_split(a.tree.find("block", node)), op_split(b.tree.find("block", node))
        assert set(sa) == set(sb)
        for k in sa:
            assert abs(sa[k] - sb[k]) <= 0.05, (node, k, sa[k], sb[k])


def _copy_run(tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(ULTRA, dst)
    return dst


def test_a_missing_capture_record_is_warned_and_kept_at_step_level(tmp_path):
    run = _copy_run(tmp_path)
    (run / "graph-capture-1.json.gz").unlink()
    b = load_budget(run)
    assert any("graph 1's capture was not recorded" in w and "grouped by graph launch" in w for w in b.warnings)
    assert b.trace["kernel_map"]["replayed_missed"] > 0
    step = b.tree.find("block", "step[1]")   # replays of graph 1 (full window) in both profiled blocks
    assert [c.name for c in step.children if c.kind == "region"] == ["graph_launch"]
    assert step.find("graph_launch").gpu_ms > 0.99 * step.gpu_ms
    assert any("no recorded capture matched them" in w for w in b.warnings)


def test_a_capture_that_does_not_match_its_replays_is_not_used(tmp_path):
    run = _copy_run(tmp_path)
    path = run / "graph-capture-1.json.gz"
    data = json.loads(gzip.decompress(path.read_bytes()))
    ev = data["traceEvents"]
    i = next(k for k, e in enumerate(ev) if e.get("name") == "cuLaunchKernel")
    del ev[i]   # one launch fewer than the replays have kernels
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    b = load_budget(run)
    assert any("1264 kernels replayed, 1263 launches captured" in w for w in b.warnings), b.warnings
    assert b.trace["kernel_map"]["replayed_kernels"] < b.trace["kernel_map"]["replayed_missed"]


def test_a_run_without_provenance_says_so(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(BALANCED, run)
    (run / "provenance.json").unlink()
    b = load_budget(run)
    assert b.trace["kernel_map"]["method"]["compiled"].startswith("none")
    assert any("no module attribution" in w for w in b.warnings)
    layer = b.tree.find("block", "step[0]", "layer[0]")
    assert layer.find("ffn") is None
    groups = [c for c in layer.children if c.name.startswith("compiled[")]
    assert len(groups) == 2 and sum(c.gpu_ms for c in groups) > 0.3 * layer.gpu_ms   # pre_attn, post_attn


@pytest.mark.parametrize("modules, region", [
    ({"self_attn.q": 1}, "ll/self_attn"),
    ({"": 7, "norm1": 1}, "ll/norm"),                       # the block's own code does not vote
    ({"": 3}, "ll/modulation"),                             # ... unless nothing else does
    ({"norm3": 1, "self_attn.o": 1}, "ll/norm+self_attn"),  # no 2/3 majority: both named
    ({"ffn.0": 2, "ffn.2": 1, "norm2": 1}, "ll/ffn"),       # 3 of 4 votes
    ({"a": 1, "b": 1, "c": 1, "d": 1}, None),               # no module maps to a region
    ({"cross_attn.q": 1, "self_attn.o": 1, "ffn.2": 1, "norm2": 1}, "ll/cross_attn+ffn"),
])
def test_kernel_region_rule(modules, region):
    assert kernel_region(modules) == region


def test_module_paths_and_submodule_regions():
    assert module_path("L['self'].self_attn.q") == "self_attn.q"
    assert module_path("L['self']._modules['ffn']._modules['0']") == "ffn.0"
    assert module_path("L['self']") == ""
    assert region_of_submodule("cross_attn.norm_k") == "ll/cross_attn"
    assert region_of_submodule("time_embedding.0") == "ll/embed"
    assert region_of_submodule("modulation") is None
