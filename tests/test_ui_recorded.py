"""`lltrace view` data: reading a run directory back (stats, frames, events, budget), the
`view` command's errors, and the view app over a recorded run.

`make_recorded_run(path)` writes a run directory with FIXED numbers (FORMATS.md §2 files and a
small CPU-only Kineto-shaped trace with ll/ regions): the snapshot tests render it too.
"""
from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from lltrace.errors import LltraceError
from lltrace.ui.recorded import load_recorded, locate, stats_from_frames, switch_latencies

PID = TID = 4242
RUN_ID = "20260101-120000-ultra"


class _Trace:
    """Host ranges on one thread, µs, nested by time like torch.profiler writes them."""

    def __init__(self):
        self.t = 1_000_000.0
        self.ext = 0
        self.events: list[dict] = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
                                    "args": {"name": "python"}}]

    def span(self, name: str, cat: str, inner, gap: float = 1.0):
        start = self.t
        self.t += gap
        inner()
        self.t += gap
        self.ext += 1
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": PID, "tid": TID, "ts": start,
                            "dur": self.t - start, "args": {"External id": self.ext}})
        self.t += gap

    def op(self, name: str, dur: float):
        return lambda: self.span(name, "cpu_op", lambda: setattr(self, "t", self.t + dur), gap=0.0)


def synthetic_cpu_trace(blocks=(2, 3), steps: int = 2, layers: int = 2) -> dict:
    tr = _Trace()

    def layer():
        tr.span("ll/norm", "user_annotation", tr.op("aten::layer_norm", 40.0))
        tr.span("ll/self_attn", "user_annotation",
                lambda: (tr.op("aten::mm", 300.0)(), tr.span("ll/kv_update", "user_annotation",
                                                              tr.op("aten::copy_", 20.0)),
                         tr.op("aten::scaled_dot_product_attention", 500.0)()))
        tr.span("ll/cross_attn", "user_annotation", tr.op("aten::mm", 200.0))
        tr.span("ll/ffn", "user_annotation", lambda: (tr.op("aten::mm", 400.0)(), tr.op("aten::gelu", 60.0)()))

    def forward():
        tr.span("ll/embed", "user_annotation", tr.op("aten::linear", 50.0))
        for k in range(layers):
            tr.span(f"ll/layer[{k}]", "user_annotation", layer)
        tr.span("ll/head", "user_annotation", tr.op("aten::linear", 30.0))

    def block():
        tr.span("ll/noise", "user_annotation", tr.op("aten::randn", 10.0))
        for j in range(steps):
            tr.span(f"ll/step[{j}]", "user_annotation", forward)
        tr.span("ll/context", "user_annotation", forward)
        tr.span("ll/decode", "user_annotation", tr.op("aten::conv3d", 900.0))

    tr.span("ll/clock_sync", "user_annotation", lambda: None, gap=0.0)
    for b in range(*blocks):
        tr.span(f"ll/block[{b}]", "user_annotation", block)
    return {"schemaVersion": 1, "traceEvents": tr.events, "baseTimeNanoseconds": 1_700_000_000_000_000_000}


def _frames() -> list[dict]:
    out, frame, ready = [], 0, 0.0
    block_ms = [240.0, 60.0, 48.0, 150.0, 50.0, 54.0]   # block 3 is the first after a switch
    for b, ms in enumerate(block_ms):
        n = 9 if b == 0 else 12
        ready += ms / 1e3
        kind = "first" if b == 0 else ("switch" if b == 3 else "steady")
        for _ in range(n):
            out.append({"frame": frame, "block": b, "prompt": 0 if b < 3 else 1, "kind": kind,
                        "ready_s": round(ready, 6), "latency_ms": round(ms / n, 6), "block_ms": ms,
                        "frames_in_block": n, "clock": "cuda"})
            frame += 1
    return out


EVENTS = [
    {"t_s": -0.5, "time_ns": 1, "kind": "compile", "message": "compiled forward (3 ops)",
     "data": {"compile_id": "0/0", "co_name": "forward", "graph_op_count": 3}},
    {"t_s": 0.301, "time_ns": 2, "kind": "recompile", "message": "recompile of forward",
     "data": {"compile_id": "0/1", "function": {"name": "forward", "file": "model.py", "line": 210},
              "reasons": ["start == 4680  # kv_cache.local_end_index"]}},
    {"t_s": 0.302, "time_ns": 3, "kind": "graph_break", "message": "graph break: Tensor.item()",
     "data": {"compile_id": "0/1", "where": "kv_cache.py:88", "reason": "Tensor.item()"}},
    {"t_s": 0.35, "time_ns": 4, "kind": "cudagraph_skip", "message": "skipping cudagraphs due to mutated inputs",
     "data": {"reason": "mutated inputs (1 instances)", "logger": "perf_hints"}},
    {"t_s": 0.36, "time_ns": 5, "kind": "profile_window", "message": "profiling from block 2",
     "data": {"phase": "start", "block": 2, "blocks": [2, 3]}},
    {"t_s": 0.41, "time_ns": 6, "kind": "profile_window", "message": "wrote trace.json.gz (blocks 2..2)",
     "data": {"phase": "saved", "blocks": [2, 3], "file": "trace.json.gz", "partial": False, "bytes": 4096}},
    {"t_s": 0.42, "time_ns": 7, "kind": "prompt_switch", "message": "switch to prompt 1: 'a dog'",
     "data": {"phase": "requested", "prompt": 1, "text": "a dog", "before_block": 3}},
    {"t_s": 0.55, "time_ns": 8, "kind": "prompt_switch", "message": "prompt 1 showing after 132.5 ms",
     "data": {"phase": "done", "prompt": 1, "latency_ms": 132.5, "block": 3, "requested_s": 0.4175}},
]

KNOBS = {"name": "ultra", "model": "wan-1.3b", "description": "", "denoising_steps": [1000, 500],
         "frames_per_block": 3, "local_attn_size": 6, "sink_size": 2, "context_noise": 0, "dtype": "bfloat16",
         "fp8": True, "compile": True, "cuda_graphs": True, "kv_cache": "static", "decoder": "fast",
         "attention": "auto"}


def make_recorded_run(root: Path, *, summary: bool = True, trace: bool = True) -> Path:
    run = root / RUN_ID
    run.mkdir(parents=True)
    frames = _frames()
    meta = {"lltrace_version": "0.1.0", "run_id": RUN_ID, "command": ["lltrace", "run", "--preset", "ultra"],
            "preset": "ultra", "knobs": KNOBS, "model": {"name": "tiny"},
            "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_000_000_000},
            "optimizations": {"fp8_linears": 180, "compiled_blocks": 30,
                              "cuda_graphs": "whole forward per block shape"},
            "status": "completed", "end": {"reason": "finished", "message": "6 blocks"},
            "profile": {"blocks": [2, 3]}, "profile_windows": [{"blocks": [2, 3], "file": "trace.json.gz",
                                                               "partial": False}]}
    (run / "meta.json").write_text(json.dumps(meta, indent=2))
    (run / "frames.jsonl").write_text("".join(json.dumps(f) + "\n" for f in frames))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    if summary:
        s = stats_from_frames(frames, switch_latencies(EVENTS))
        (run / "summary.json").write_text(json.dumps({
            "frames": s.frames, "blocks": s.blocks,
            "ms_per_frame": {"mean": s.mean_ms, "p50": s.p50_ms, "p95": s.p95_ms, "p99": s.p99_ms},
            "fps": s.fps, "first_frame_ms": s.first_frame_ms, "prompt_switch_ms": s.switch_ms,
            "ms_per_block": s.block_ms, "peak_mem_bytes": 21_474_836_480, "peak_host_rss_bytes": 3_221_225_472,
            "partial": False, "status": "completed", "clock": "cuda", "steady_frames": s.steady_frames}))
    if trace:
        with gzip.open(run / "trace.json.gz", "wt") as f:
            json.dump(synthetic_cpu_trace(), f)
    return run


@pytest.fixture
def recorded_run(tmp_path) -> Path:
    return make_recorded_run(tmp_path)


# -- reading a run back ----------------------------------------------------------------------------

def test_load_recorded_reads_every_file(recorded_run):
    rec = load_recorded(recorded_run)
    assert rec.kind == "run" and rec.name == RUN_ID and rec.has_trace and not rec.warnings
    assert len(rec.frames) == 9 + 5 * 12 and len(rec.events) == len(EVENTS)
    s = rec.stats
    # steady blocks 1, 2, 4, 5: 48 frames in 212 ms
    assert s.frames == 69 and s.blocks == 6 and s.steady_frames == 48
    assert s.fps == pytest.approx(48 / 0.212)
    assert s.first_frame_ms == pytest.approx(240.0) and s.switch_ms == [132.5]
    assert s.p50_ms == pytest.approx((50 / 12 + 54 / 12) / 2)   # 12 frames each of 4.0, 4.17, 4.5, 5.0 ms
    assert s.p99_ms == pytest.approx(5.0)


def test_killed_run_without_summary_recomputes_stats_and_keeps_complete_lines(tmp_path):
    run = make_recorded_run(tmp_path, summary=False)
    with open(run / "frames.jsonl", "a") as f:
        f.write('{"frame": 69, "block": 6, "pro')           # cut mid-line by the kill
    rec = load_recorded(run)
    assert len(rec.frames) == 69
    assert any("unreadable line" in w for w in rec.warnings)
    assert any("no summary.json" in w for w in rec.warnings)
    assert rec.stats.frames == 69 and rec.stats.fps == pytest.approx(48 / 0.212)


def test_stats_from_frames_agree_with_the_sessions_summary(tmp_path):
    """The fallback must compute what the frame clock wrote into summary.json."""
    from lltrace.capture.session import run_session
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    preset, _ = cpu_fallback(load_preset("ultra"))
    pipe = StreamingPipeline(preset, model="tiny", device="cpu")
    result = run_session(pipe, num_blocks=4, prompt="a cat", switches={2: "a dog"}, run_dir=tmp_path / "run",
                         regions_level="block", handle_signals=False)
    rec = load_recorded(tmp_path / "run")
    again = stats_from_frames(rec.frames, switch_latencies(rec.events))
    want = result.stats
    for name in ("frames", "blocks", "steady_frames", "clock"):
        assert getattr(again, name) == getattr(want, name), name
    for name in ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "fps", "first_frame_ms"):
        # frames.jsonl keeps ready_s to the µs: first_frame_ms is exact to 1e-3 ms
        assert getattr(again, name) == pytest.approx(getattr(want, name), rel=1e-5, abs=2e-3), name
    assert again.switch_ms == pytest.approx(want.switch_ms, rel=1e-5)
    assert again.block_ms["p99"] == pytest.approx(want.block_ms["p99"], rel=1e-5)


def test_locate_rejects_what_is_not_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    with pytest.raises(LltraceError, match="no such file"):
        locate(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LltraceError, match="not a run directory"):
        locate(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LltraceError, match="not a trace"):
        locate(tmp_path / "notes.txt")
    run = make_recorded_run(tmp_path / "traces")
    assert locate(RUN_ID) == ("run", run)          # a run id under the traces directory
    assert locate(run / "trace.json.gz") == ("trace", run / "trace.json.gz")


def test_view_command_errors_are_one_line(tmp_path, recorded_run, capsys):
    from commands.cli import main

    assert main(["view", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no such file or run directory" in err
    # Under pytest stdin is not a terminal: a one-line error naming the text alternative.
    assert main(["view", str(recorded_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs a terminal" in err and "lltrace budget" in err


# -- the view app over a recorded run ----------------------------------------------------------------

def plain(renderable, width: int = 70) -> str:
    """What a widget's render() shows, as text."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


async def _settle(pilot, app) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def test_view_app_shows_the_recorded_run(recorded_run):
    from lltrace.ui.app import LltraceApp
    from lltrace.ui.widgets import BudgetTree, EventLog, GraphsPanel, LatencyPlot, MemoryPanel, StatsPanel

    async def go():
        app = LltraceApp(recorded=recorded_run)
        async with app.run_test(size=(150, 45)) as pilot:
            await _settle(pilot, app)
            assert RUN_ID in app.title
            plot = app.query_one(LatencyPlot)
            assert len(plot.samples) == 69 and plot.samples[0] == (0, pytest.approx(240 / 9), "first")
            stats = app.query_one(StatsPanel)
            assert stats.stats.fps == pytest.approx(48 / 0.212)
            text = plain(stats.render())
            assert "226.4" in text and "p50 4.33" in text and "132.5 ms" in text and "240.0 ms" in text
            tree = app.query_one(BudgetTree)
            budget = tree.budget
            assert budget is not None and budget.metric == "cpu"
            assert tree.root.data.name == "run" and [c.data.name for c in tree.root.children] == ["block"]
            block = tree.root.children[0]
            assert block.is_expanded and "step[0]" in [c.data.name for c in block.children]
            log = app.query_one(EventLog)
            assert log.counts["recompile"] == 1 and log.counts["graph_break"] == 1
            assert "1 recompile" in log.border_title and "1 graph break" in log.border_title
            g = app.query_one(GraphsPanel).status
            assert g.recompiles == 1 and g.graph_breaks == 1 and g.skips == ("mutated inputs (1 instances)",)
            mem = app.query_one(MemoryPanel).status
            assert mem.device == "cuda" and mem.peak == 21_474_836_480
            # live-only keys do nothing in view mode
            await pilot.press("space", "p", "s")
            assert not app.control.paused and not app.query_one("#prompt").has_class("-visible")
            await pilot.press("q")
        assert app.return_value is None

    asyncio.run(go())


def test_view_app_of_a_run_without_a_profiled_window(tmp_path):
    from lltrace.ui.app import LltraceApp
    from lltrace.ui.widgets import BudgetTree, LatencyPlot

    run = make_recorded_run(tmp_path, trace=False)

    async def go():
        app = LltraceApp(recorded=run)
        async with app.run_test(size=(150, 45)) as pilot:
            await _settle(pilot, app)
            tree = app.query_one(BudgetTree)
            assert tree.budget is None and "no profiled window" in str(tree.root.label)
            assert len(app.query_one(LatencyPlot).samples) == 69

    asyncio.run(go())


def test_view_app_of_a_trace_file_and_of_a_budget_json(tmp_path):
    """`lltrace view` takes what `lltrace budget` takes: a bare trace, or a saved budget JSON."""
    from lltrace.trace.budget import load_budget
    from lltrace.ui.app import LltraceApp
    from lltrace.ui.widgets import BudgetTree, StatsPanel

    trace = tmp_path / "window.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump(synthetic_cpu_trace(), f)
    budget_json = tmp_path / "budget.json"
    budget_json.write_text(json.dumps(load_budget(trace).to_dict()))

    async def go(path):
        app = LltraceApp(recorded=path)
        async with app.run_test(size=(150, 45)) as pilot:
            await _settle(pilot, app)
            tree = app.query_one(BudgetTree)
            assert tree.budget is not None and tree.root.data.name == "run"
            assert tree.root.data.cpu_ms == pytest.approx(load_budget(trace).tree.cpu_ms)
            assert app.query_one(StatsPanel).stats is None and path.name in app.state
            await pilot.press("q")

    for path in (trace, budget_json):
        asyncio.run(go(path))
