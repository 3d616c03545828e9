"""The live TUI driven by Textual's pilot over the tiny CPU pipeline: frames reach the plot and
the percentiles, a prompt typed in the input box reaches the pipeline and its latency shows,
an on-demand profiled window fills the budget tree, quitting finalizes the run directory, the
pre-flight doctor's verdict shows in the CUDA-graph panel. Tests about something else pass
doctor=False (the doctor streams a few blocks of its own first)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from helpers.pilot import wait_for
from helpers.recorded_run import plain

from lltrace.capture.session import Session
from lltrace.errors import LltraceError
from lltrace.pipeline.observer import NULL_OBSERVER
from lltrace.ui.app import DOCTOR_STATE, LltraceApp
from lltrace.ui.widgets import (
    BudgetTree,
    EventLog,
    GraphsPanel,
    LatencyPlot,
    MemoryPanel,
    StatsPanel,
)
from lltrace.ui.widgets.stats import fmt_ms

SIZE = (150, 45)


@pytest.fixture(scope="module")
def pipe():
    """One tiny pipeline for the module: start() resets its caches for every run."""
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    preset, _ = cpu_fallback(load_preset("ultra"))
    return StreamingPipeline(preset, model="tiny", device="cpu")


@pytest.fixture(autouse=True)
def traces(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    return tmp_path / "traces"


async def type_text(pilot, text: str) -> None:
    await pilot.press(*("space" if c == " " else c for c in text))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_dir_of(traces: Path) -> Path:
    (run,) = list(traces.iterdir())
    return run


def test_frames_update_the_plot_and_the_percentiles_while_running(pipe, traces):
    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=3, prompt="a cat", regions_level="block"),
                         refresh_s=0.05, doctor=False)
        app.control.pause()                     # from the start: the run waits before block 1
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.control.paused_blocks == [1], "the pause before block 1")
            plot, stats = app.query_one(LatencyPlot), app.query_one(StatsPanel)
            await wait_for(pilot, lambda: len(plot.samples) == 9 and stats.stats is not None, "block 0's frames")
            assert not app.done.is_set()
            assert [k for _, _, k in plot.samples] == ["first"] * 9
            live = stats.stats
            assert live.frames == 9 and live.blocks == 1 and live.p50_ms == pytest.approx(plot.samples[0][1])
            assert "paused after 1/3 blocks" in app.state
            await pilot.pause(0.5)
            assert len(plot.samples) == 9       # still paused
            await pilot.press("space")          # resume
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            final = app.run_result
            assert final.status == "completed"
            assert len(plot.samples) == final.stats.frames == 9 + 12 + 12
            assert stats.stats == final.stats and stats.stats.steady_frames == 24
            text = plain(stats.render())
            assert f"p50 {fmt_ms(final.stats.p50_ms)}" in text and f"p99 {fmt_ms(final.stats.p99_ms)}" in text
            assert "CPU run" in plain(app.query_one(MemoryPanel).render())
            # the plot's samples are the frames the run directory recorded
            frames = read_lines(final.run_dir / "frames.jsonl")
            assert [(f["frame"], f["kind"]) for f in frames] == [(f, k) for f, _, k in plot.samples]
            # the pause is not counted in the block after it: its time starts at the resume
            ready = {f["block"]: f["ready_s"] for f in frames}
            block1_ms = next(f["block_ms"] for f in frames if f["block"] == 1)
            assert block1_ms <= (ready[1] - ready[0]) * 1e3 - 450
            await pilot.press("q")
        assert app.return_value is final

    asyncio.run(go())


@pytest.mark.slow
def test_prompt_typed_in_the_input_box_reaches_the_pipeline(pipe, traces):
    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=4, prompt="a cat", regions_level="block"),
                         refresh_s=0.05, doctor=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("space")
            await wait_for(pilot, lambda: app.control.paused_blocks, "the pause")
            paused_at = app.control.paused_blocks[0]
            await pilot.press("s")
            box = app.query_one("#prompt")
            assert box.has_class("-visible") and app.focused is box
            await type_text(pilot, "a sheep, quietly")   # space, s, p and q go to the box, not the app
            assert box.value == "a sheep, quietly" and not app.quitting and app.control.paused
            await pilot.press("enter")
            assert not box.has_class("-visible") and app.control.queued == 1
            await pilot.press("space")
            stats = app.query_one(StatsPanel)
            await wait_for(pilot, lambda: stats.stats is not None and stats.stats.switch_ms, "the switch latency")
            assert pipe.prompt_index == 1
            latency = stats.stats.switch_ms[0]
            assert latency > 0 and f"{latency:,.1f} ms" in plain(stats.render())
            assert stats.since_enter_ms is not None and stats.since_enter_ms >= latency * 0.5
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            await pilot.press("q")
        run = app.run_result.run_dir
        meta = json.loads((run / "meta.json").read_text())
        assert meta["switches"] == {str(paused_at): "a sheep, quietly"}
        assert meta["prompts"] == ["a cat", "a sheep, quietly"]
        events = read_lines(run / "events.jsonl")
        asked = [e for e in events if e["kind"] == "prompt_switch" and e["data"]["phase"] == "requested"]
        assert [e["data"]["text"] for e in asked] == ["a sheep, quietly"]
        assert asked[0]["data"]["before_block"] == paused_at
        frames = read_lines(run / "frames.jsonl")
        assert {f["kind"] for f in frames if f["block"] == paused_at} == {"switch"}
        assert {f["prompt"] for f in frames if f["block"] >= paused_at} == {1}

    asyncio.run(go())


def test_quit_while_paused_stops_after_the_block_and_finalizes_the_run_directory(pipe, traces):
    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=50, prompt="a cat", regions_level="block"),
                         doctor=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("space")
            await wait_for(pilot, lambda: app.control.paused_blocks, "the pause")
            await pilot.press("q")               # must not hang on the paused run
            await wait_for(pilot, lambda: app.done.is_set(), "the run to stop", timeout=30)
            await pilot.pause(0.1)
        return app

    app = asyncio.run(go())
    result = app.return_value
    assert result is app.run_result and result.status == "interrupted" and result.reason == "stopped"
    run = run_dir_of(traces)
    assert result.run_dir == run
    meta = json.loads((run / "meta.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert meta["status"] == "interrupted" and meta["end"]["reason"] == "stopped"
    done = app.control.paused_blocks[0]          # paused before this block: it never ran
    assert summary["partial"] is True and summary["blocks"] == done
    frames = read_lines(run / "frames.jsonl")
    assert len(frames) == summary["frames"] == meta["end"]["frames"] == 9 + 12 * (done - 1)
    assert {"meta.json", "summary.json", "frames.jsonl", "events.jsonl"} <= set(meta["files"])


def test_profiled_window_on_demand_fills_the_budget_tree(pipe, traces):
    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=4, prompt="a cat", regions_level="op"),
                         profile_window_blocks=1, doctor=False)
        # Paused from the start: a pause pressed late on a loaded machine could land before the
        # last block, and the window would then open after the run's end, with no block in it.
        app.control.pause()
        async with app.run_test(size=SIZE) as pilot:
            tree = app.query_one(BudgetTree)
            assert tree.budget is None and "press p" in str(tree.root.label)
            await wait_for(pilot, lambda: app.control.paused_blocks, "the pause")
            await pilot.press("p", "space")
            await wait_for(pilot, lambda: tree.budget is not None, "the window's budget")
            assert "trace.json.gz" in tree.border_subtitle and "host time" in tree.border_subtitle
            budget = tree.budget
            assert budget.metric == "cpu" and tree.root.data.name == "run"
            block = tree.root.children[0]
            assert block.data.name == "block" and block.data.count == 1 and block.is_expanded
            step = next(c for c in block.children if c.data.name == "step[0]")
            layer = next(c for c in step.children if c.data.name == "layer[0]")
            attn = next(c for c in layer.children if c.data.name == "self_attn")
            assert not step.is_expanded and not attn.children   # op-level nodes come when needed
            layer.expand()
            await pilot.pause()
            assert attn.children and {c.data.kind for c in attn.children} <= {"region", "class", "other"}
            log = app.query_one(EventLog)
            assert log.counts["profile_window"] == 2      # start, saved
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            await pilot.press("q")
        run = app.run_result.run_dir
        meta = json.loads((run / "meta.json").read_text())
        (window,) = meta["profile_windows"]
        start, stop = window["blocks"]
        # one block (profile_window_blocks=1), after the request (picked up at the next block boundary)
        assert stop - start == 1 and start >= app.control.paused_blocks[0]
        assert window["file"] == "trace.json.gz" and window["partial"] is False

    asyncio.run(go())


def test_a_pipeline_that_fails_to_build_is_shown_not_raised_in_the_ui(traces):
    def factory():
        raise LltraceError("fp8 needs CUDA, and no CUDA device is available")

    async def go():
        app = LltraceApp(pipeline=factory, session_kwargs=dict(num_blocks=2, prompt="a cat"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.ended, "the failure")
            assert app.state.startswith("error: LltraceError: fp8 needs CUDA")
            assert app.run_result is None and isinstance(app.run_error, LltraceError)
            await pilot.press("q")
        assert app.return_value is None

    asyncio.run(go())
    assert not traces.exists()     # nothing ran: no run directory


def test_help_screen_and_a_cancelled_prompt(pipe):
    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=1, prompt="a cat", regions_level="off"),
                         doctor=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            assert type(app.screen).__name__ == "Screen"
            await pilot.press("s", "x", "escape")          # Esc drops what was typed
            box = app.query_one("#prompt")
            assert not box.has_class("-visible") and box.value == "" and app.control.queued == 0
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            await pilot.press("q")

    asyncio.run(go())


def test_session_next_switch_hook(pipe, tmp_path):
    """The Session hook the TUI uses: a prompt returned before block b is switched to there and
    recorded in meta.json like a scheduled switch (it replaces one at the same block)."""
    asked = []

    def next_switch(block):
        asked.append(block)
        return "a dog" if block == 2 else None

    s = Session(pipe, num_blocks=4, prompt="a cat", switches={2: "a cow", 3: "a fox"}, run_dir=tmp_path / "r",
                regions_level="off", handle_signals=False, next_switch=next_switch)
    result = s.run()
    assert asked == [1, 2, 3] and result.status == "completed"
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["switches"] == {"2": "a dog", "3": "a fox"} and meta["prompts"] == ["a cat", "a dog", "a fox"]
    frames = read_lines(tmp_path / "r" / "frames.jsonl")
    assert [f["prompt"] for f in frames if f["frame"] in (0, 9 + 12, 9 + 24)] == [0, 1, 2]


# -- the pre-flight doctor ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def baseline_pipe():
    """baseline's CPU fallback: the dynamic KV cache, which the doctor names incompatible."""
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    preset, _ = cpu_fallback(load_preset("baseline"))
    return StreamingPipeline(preset, model="tiny", device="cpu")


def held_doctor(monkeypatch):
    """diagnose_pipeline held until the test sets the gate; records its calls and when it returned."""
    from lltrace.doctor import pipeline as pipeline_doctor

    real, gate, calls, returned = pipeline_doctor.diagnose_pipeline, threading.Event(), [], []

    def held(*args, **kwargs):
        calls.append((args, kwargs))
        assert gate.wait(30)
        try:
            return real(*args, **kwargs)
        finally:
            returned.append(time.perf_counter_ns())

    monkeypatch.setattr(pipeline_doctor, "diagnose_pipeline", held)
    return gate, calls, returned


def doctor_cells(panel) -> dict:
    """The GraphsPanel's rows: label -> value cell (a row without a label joins the one above)."""
    grid = panel.render()
    rows, last = {}, None
    for label, cell in zip(grid.columns[0]._cells, grid.columns[1]._cells):
        last = label or last
        rows.setdefault(last, []).append(cell)
    return rows


@pytest.mark.slow
def test_doctor_runs_before_the_run_and_names_the_dynamic_cache_line(baseline_pipe, traces, monkeypatch):
    gate, calls, returned = held_doctor(monkeypatch)

    async def go():
        app = LltraceApp(pipeline=baseline_pipe, session_kwargs=dict(num_blocks=2, prompt="a cat", regions_level="off"),
                         refresh_s=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: calls and app.state == DOCTOR_STATE, "the doctor")
            panel = app.query_one(GraphsPanel)
            assert panel.status.verdict == "checking…" and "checking…" in plain(panel.render())
            assert app.session.clock is None and not traces.exists()   # the run waits for the doctor
            gate.set()
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            status = panel.status
            assert status.verdict.startswith("INCOMPATIBLE (denoise, kv_update)")
            assert status.verdict_where.startswith("lltrace/pipeline/kv_cache.py:")
            text = plain(panel.render(), width=120)
            assert "INCOMPATIBLE (denoise, kv_update)" in text and "lltrace/pipeline/kv_cache.py:" in text
            verdict, where = doctor_cells(panel)["doctor"]
            assert verdict.style == "bold red" and where.style == "cyan"
            await pilot.press("q")
        return app

    app = asyncio.run(go())
    (args, kwargs), = calls
    assert args == (baseline_pipe, ["denoise", "kv_update"]) and kwargs == {"compile_check": False}
    result = app.run_result
    assert result.status == "completed" and result.stats.frames == 9 + 12
    # The run's clock (frame latencies, first frame included) starts after the doctor returned.
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["t0"]["perf_counter_ns"] > returned[0]
    assert baseline_pipe.observer is NULL_OBSERVER and baseline_pipe.graphed_forward is None


def test_doctor_finds_no_blocking_issue_in_ultras_static_cache(pipe, traces):
    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=1, prompt="a cat", regions_level="off"))
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one(GraphsPanel)
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            status = panel.status
            # No capture on a CPU: the doctor's static checks found nothing blocking.
            assert status.verdict.startswith("NOT RUN (capture needs CUDA); no blocking issue found statically")
            assert status.verdict_where is None
            (verdict,) = doctor_cells(panel)["doctor"]
            assert verdict.style == "dim"
            assert app.run_result.status == "completed"
            await pilot.press("q")

    asyncio.run(go())


def test_no_doctor_means_no_check_and_no_row(pipe, traces, monkeypatch):
    from lltrace.doctor import pipeline as pipeline_doctor

    calls = []
    monkeypatch.setattr(pipeline_doctor, "diagnose_pipeline", lambda *a, **k: calls.append(a))

    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=1, prompt="a cat", regions_level="off"),
                         doctor=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            panel = app.query_one(GraphsPanel)
            assert panel.status.verdict is None and "doctor" not in doctor_cells(panel)
            assert app.run_result.status == "completed"
            await pilot.press("q")

    asyncio.run(go())
    assert calls == []


def test_a_doctor_that_fails_is_shown_and_the_run_goes_on(pipe, traces, monkeypatch):
    from lltrace.doctor import pipeline as pipeline_doctor

    def broken(*args, **kwargs):
        raise RuntimeError("no probe today")

    monkeypatch.setattr(pipeline_doctor, "diagnose_pipeline", broken)

    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=2, prompt="a cat", regions_level="off"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.ended, "the end of the run")
            panel = app.query_one(GraphsPanel)
            assert panel.status.verdict == "doctor failed: RuntimeError: no probe today"
            (verdict,) = doctor_cells(panel)["doctor"]
            assert verdict.style == "bold red"
            assert "doctor failed: RuntimeError: no probe today" in plain(panel.render(), width=120)
            assert app.run_result.status == "completed" and app.run_error is None
            assert app.run_result.stats.frames == 9 + 12
            await pilot.press("q")

    asyncio.run(go())


def test_quit_during_the_doctor_runs_nothing(pipe, traces, monkeypatch):
    gate, calls, _ = held_doctor(monkeypatch)

    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs=dict(num_blocks=2, prompt="a cat", regions_level="off"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: calls, "the doctor")
            await pilot.press("q")
            gate.set()
            await wait_for(pilot, lambda: app.done.is_set(), "the worker")
            await pilot.pause(0.1)
        return app

    app = asyncio.run(go())
    assert app.return_value is None and app.run_result is None and app.run_error is None
    assert not traces.exists()      # no run directory: the run never started
