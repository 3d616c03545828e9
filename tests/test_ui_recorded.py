"""`lltrace view` data: reading a run directory back (stats, frames, events, budget), the
`view` command's errors, and the view app over a recorded run.

The run directory is tests/helpers/recorded_run.py's (fixed numbers; the snapshot tests render it too).
"""
from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from lltrace.errors import LltraceError
from lltrace.ui.recorded import load_recorded, locate
from helpers.recorded_run import EVENTS, RUN_ID, make_recorded_run, plain, synthetic_cpu_trace


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


def test_stats_recomputed_from_frames_agree_with_the_sessions_summary(tmp_path):
    """The fallback must compute what the frame clock wrote into summary.json."""
    from lltrace.capture.session import run_session
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    preset, _ = cpu_fallback(load_preset("ultra"))
    pipe = StreamingPipeline(preset, model="tiny", device="cpu")
    result = run_session(pipe, num_blocks=4, prompt="a cat", switches={2: "a dog"}, run_dir=tmp_path / "run",
                         regions_level="block", handle_signals=False)
    (tmp_path / "run" / "summary.json").unlink()   # as if the run had been killed before writing it
    rec = load_recorded(tmp_path / "run")
    again = rec.stats
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
    from lltrace.commands.cli import main

    assert main(["view", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no such file or run directory" in err
    # Under pytest stdin is not a terminal: a one-line error naming the text alternative.
    assert main(["view", str(recorded_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs a terminal" in err and "lltrace budget" in err


# -- the view app over a recorded run ----------------------------------------------------------------

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


EXAMPLES = Path(__file__).resolve().parent.parent / "traces" / "examples"


@pytest.mark.skipif(not (EXAMPLES / "h200-baseline").is_dir(), reason="example runs not in this checkout")
def test_graphs_panel_shows_what_graphs_could_save_from_the_window():
    """The CUDA-graph panel gives the upper bound measured in the profiled window: the worst
    forward's launch-bound gaps (issue #16), the same figure `lltrace budget` prints."""
    from lltrace.trace.budget import load_budget
    from lltrace.ui.app import LltraceApp
    from lltrace.ui.widgets import GraphsPanel
    from lltrace.ui.widgets.panels import graphs_could_save

    run = EXAMPLES / "h200-baseline"
    worst = load_budget(run).idle["launch_bound_per_forward"][0]
    want = graphs_could_save(load_budget(run).idle)
    assert want == f"<= {worst['ms']:,.2f} ms per {worst['forward']}"
    assert graphs_could_save({"launch_bound_per_forward": []}) is None and graphs_could_save(None) is None

    async def go():
        app = LltraceApp(recorded=run)
        async with app.run_test(size=(150, 45)) as pilot:
            await _settle(pilot, app)
            panel = app.query_one(GraphsPanel)
            assert panel.status.could_save == want
            assert want in plain(panel.render(), width=120)
    asyncio.run(go())
