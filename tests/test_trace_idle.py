"""Idle GPU time by cause (lltrace.trace.idle): a synthetic Kineto-shaped trace with a planted
`.item()` (aten::_local_scalar_dense -> cudaMemcpyAsync + cudaStreamSynchronize) in one layer,
a host that falls behind in another, and work queued ahead; and the real H200 runs."""
import json
from pathlib import Path

import pytest

from lltrace.trace.budget import build_budget, load_budget
from lltrace.trace.loader import load_trace

HOST, GPU, STREAM = 11, 0, 7
EX = Path(__file__).resolve().parent.parent / "traces" / "examples"


class _T:
    def __init__(self):
        self.ev = [{"ph": "M", "name": "process_name", "pid": HOST, "tid": 0, "args": {"name": "python"}}]
        self.corr, self.ext = 100, 1

    def x(self, cat, name, ts, dur, pid=HOST, tid=HOST, **args):
        self.ev.append({"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur,
                        "args": args})

    def op(self, name, ts, dur):
        self.ext += 1
        self.x("cpu_op", name, ts, dur, **{"External id": self.ext})
        return self.ext

    def launch(self, ts, gpu_ts, gpu_dur, kernel="k", call="cudaLaunchKernel", cat="kernel"):
        ext = self.op("aten::mul", ts, 4)
        self.corr += 1
        self.x("cuda_runtime", call, ts + 1, 2, correlation=self.corr, **{"External id": ext})
        self.x(cat, kernel, gpu_ts, gpu_dur, pid=GPU, tid=STREAM, correlation=self.corr, **{"External id": ext})

    def sync(self, ts, dur):
        self.op("aten::item", ts, dur)
        ext = self.op("aten::_local_scalar_dense", ts + 0.5, dur - 1)
        self.corr += 1
        self.x("cuda_runtime", "cudaMemcpyAsync", ts + 1, 2, correlation=self.corr, **{"External id": ext})
        self.x("cuda_runtime", "cudaStreamSynchronize", ts + 4, dur - 6, correlation=self.corr + 1,
               **{"External id": ext})
        self.corr += 1

    def json(self):
        return {"traceEvents": self.ev, "displayTimeUnit": "ms"}


def _trace(tmp_path, syncs_in_layer1=3):
    t = _T()
    t.x("user_annotation", "ll/block[0]", 0, 10_000)
    t.x("user_annotation", "ll/step[0]", 1, 9_000)
    gpu = 100.0
    # layer 0: work queued ahead (launched before the GPU needs it): no idle of its own
    t.x("user_annotation", "ll/layer[0]", 10, 80)
    for i in range(5):
        t.launch(20 + 10 * i, gpu, 50)
        gpu += 50
    # layer 1: .item() syncs; each drains the GPU, and the next launch comes 100 us after it
    # returns: the GPU idles ~107 us per sync
    start1 = 100.0
    host = start1
    for _ in range(syncs_in_layer1):
        host += 10
        k = max(gpu, host + 5)
        t.launch(host, k, 40)
        gpu = k + 40
        t.sync(host + 10, gpu - host - 10 + 8)          # returns 2 us after the GPU drains
        host = gpu + 2 + 100
        t.launch(host, host + 5, 30)
        gpu = host + 5 + 30
        host += 10
    t.x("user_annotation", "ll/layer[1]", start1, host - start1)
    # layer 2: no sync, the host is simply late: a launch-bound gap of 200 us per kernel
    start2 = host
    for _ in range(4):
        host = max(host, gpu) + 200
        t.launch(host, host + 5, 20)
        gpu = host + 25
    t.x("user_annotation", "ll/layer[2]", start2, host + 10 - start2)
    p = tmp_path / "trace.json"
    p.write_text(json.dumps(t.json()))
    return p


def test_a_planted_item_is_named_with_its_count_and_idle_time(tmp_path):
    b = build_budget(load_trace(_trace(tmp_path, syncs_in_layer1=3)))
    idle = b.idle
    assert idle["total_ms"] == pytest.approx(b.idle_gpu_ms, rel=1e-9)      # the causes add up
    assert sum(idle["by_cause"].values()) == pytest.approx(idle["total_ms"], rel=1e-9)
    (site,) = [s for s in idle["sync_sites"] if s["count"]]
    assert site["op"] == "aten::_local_scalar_dense" and site["where"] == "block/step[0]/layer[1]"
    assert site["count"] == 3 and site["per_block"] == 3
    # each .item(): the GPU idles from draining to the next launch's kernel, ~107 us
    assert site["idle_ms"] == pytest.approx(3 * 0.107, abs=0.01)
    assert idle["by_cause"]["sync"] == pytest.approx(site["idle_ms"])
    # layer 2's host is late by 200 us per kernel (minus the launch's own 5 us)
    regions = {r["region"]: r for r in idle["by_region"]}
    assert regions["block/step[0]/layer[2]"]["launch"] == pytest.approx(4 * 0.205, abs=0.02)
    assert "block/step[0]/layer[0]" not in regions or regions["block/step[0]/layer[0]"]["ms"] < 1e-3
    assert idle["by_cause"]["other"] == 0.0
    # the bound on what graphs could win: the forward's launch-bound gaps, per instance
    (fw,) = idle["launch_bound_per_forward"]
    assert fw["forward"] == "block/step[0]" and fw["ms"] == pytest.approx(idle["by_cause"]["launch"])


def test_no_gaps_means_no_idle(tmp_path):
    t = _T()
    t.x("user_annotation", "ll/block[0]", 0, 1_000)
    for i in range(20):
        t.launch(10 + i * 5, 200 + 10 * i, 10)          # back to back on the GPU, launched ahead
    p = tmp_path / "t.json"
    p.write_text(json.dumps(t.json()))
    b = build_budget(load_trace(p))
    assert b.idle_gpu_ms == 0.0 and b.idle["total_ms"] == 0.0 and b.idle["gaps"] == 0


def test_budget_json_round_trips_idle(tmp_path):
    b = build_budget(load_trace(_trace(tmp_path)))
    (tmp_path / "b.json").write_text(json.dumps(b.to_dict()))
    again = load_budget(tmp_path / "b.json")
    assert again.idle["sync_sites"][0]["op"] == "aten::_local_scalar_dense"


@pytest.mark.parametrize("run", ["h200-ultra", "h200-balanced", "h100-baseline", "h200-longlive-v1"])
def test_real_runs_classify_their_idle_time(run):
    b = load_budget(EX / run)
    idle = b.idle
    assert idle["total_ms"] == pytest.approx(b.idle_gpu_ms, rel=1e-6)
    named = idle["total_ms"] - idle["by_cause"]["other"]
    assert named >= 0.9 * idle["total_ms"]


@pytest.mark.parametrize("at", ["inside", "after"])
def test_a_sync_site_marker_names_the_python_line(tmp_path, at):
    """CUDA layout: lltrace.capture.syncs leaves `ll/sync_site:<file>:<line> <fn>` as the sync's
    op returns to Python (torch raises its sync warning then), or inside the op; the site
    carries that line."""
    from lltrace import names
    data = json.loads(_trace(tmp_path, syncs_in_layer1=2).read_text())
    ev = data["traceEvents"]
    ops = [e for e in ev if e.get("name") == "aten::_local_scalar_dense"]
    for op in ops:
        ev.append({"ph": "X", "cat": "user_annotation", "name": names.sync_site("pipe/model.py", 231, "attend"),
                   "pid": op["pid"], "tid": op["tid"],
                   "ts": op["ts"] + 0.2 if at == "inside" else op["ts"] + op["dur"] + 3, "dur": 0})
    # a marker on another thread at the same time must not be taken
    ev.append({"ph": "X", "cat": "user_annotation", "name": names.sync_site("other.py", 1, "f"),
               "pid": HOST, "tid": 99, "ts": ops[0]["ts"] + 0.3, "dur": 0})
    p = tmp_path / "marked.json"
    p.write_text(json.dumps(data))
    b = build_budget(load_trace(p))
    (site,) = [s for s in b.idle["sync_sites"] if s["count"]]
    assert site["line"] == "pipe/model.py:231 attend" and site["count"] == 2
    # the marker is no region: the tree keeps its layers and has no sync_site node
    assert "sync_site" not in json.dumps(b.to_dict()["tree"])


PLANTED = "planted .item()"


def _plant_item(pipe, layer: int):
    """A layer whose forward reads a tensor on the host once per call (the planted sync)."""
    block = pipe.generator.blocks[layer]
    forward = block.forward

    def forward_with_item(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.float().abs().mean().item()   # planted .item()
        return out
    block.forward = forward_with_item
    return forward_with_item.__code__.co_firstlineno + 2   # the planted line


def test_cpu_run_names_the_planted_item_line_and_its_count_per_block(tmp_path, monkeypatch):
    """A real CPU run of the tiny pipeline with a planted `.item()` in layer 1's forward: the
    budget's sync sites name this file's line, with exactly one per forward of every block."""
    from lltrace.capture import syncs
    from lltrace.capture.session import run_session
    # this pipeline is eager; other tests in this worker process may have compiled graphs, which
    # (rightly, test_syncs_cuda.py) keeps the CPU marker mode off in a real process
    monkeypatch.setattr(syncs, "_compiled_anything", lambda: False)
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    p, _ = cpu_fallback(load_preset("baseline"))
    pipe = StreamingPipeline(p, model="tiny", device="cpu")
    line = _plant_item(pipe, layer=1)
    run = tmp_path / "run"
    result = run_session(pipe, num_blocks=4, prompt="a cat", run_dir=run, profile_blocks=(1, 3),
                         handle_signals=False)
    assert result.status == "completed"
    b = load_budget(run)
    here = f"{Path(__file__).name}:{line} forward_with_item"
    planted = [s for s in b.idle["sync_sites"] if s["line"] and s["line"].endswith(here)]
    assert planted, b.idle["sync_sites"]
    forwards_per_block = len(p.denoising_steps) + 1     # the steps and the context forward
    assert sum(s["count"] for s in planted) == 2 * forwards_per_block    # 2 profiled blocks
    assert all("layer[1]" in s["where"] for s in planted)
    assert sum(s["per_block"] for s in planted) == forwards_per_block
    # every op that would sync on a GPU is named by its line (here: the scheduler's table lookups)
    assert all(s["line"] for s in b.idle["sync_sites"]), b.idle["sync_sites"]


def test_longlive_v1_syncs_are_named_by_their_lines():
    """LongLive v1.0's own pipeline on the H200 under `lltrace run --script`: its per-layer
    .item() calls come out as lines of its attention, with their count per block."""
    b = load_budget(EX / "h200-longlive-v1")
    sites = b.idle["sync_sites"]
    named = sum(s["count"] for s in sites if s["line"])
    assert named >= 0.99 * sum(s["count"] for s in sites)
    by_line: dict[str, int] = {}
    for s in sites:
        by_line[s["line"]] = by_line.get(s["line"], 0) + s["count"]
    top, n = max(by_line.items(), key=lambda kv: kv[1])
    assert top.endswith("wan/modules/causal_model.py:288 forward") and n == 600   # 2 blocks
