"""The TUI in small terminals (issue #13): at 80x24 and 90x30 the time budget and the event log
get the rows, the CUDA-graph / memory / preset panels fold into one line, the headline numbers
into five; after a live run ends, p / s / space say why they do nothing, the stats say "none"
rather than "none yet", and leaving the TUI prints where the run was saved."""
from __future__ import annotations

import asyncio
import io
import time

import pytest
from helpers.recorded_run import RUN_ID, make_recorded_run, plain

from lltrace.ui.app import TALL_ROWS, LltraceApp, saved_message
from lltrace.ui.widgets import (
    BudgetTree,
    EventLog,
    FoldedPanels,
    GraphsPanel,
    StatsPanel,
)


async def loaded(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def layout_at(tmp_path, size):
    """(budget rows, events rows, stats text, folded line or None, bottom panels shown) at `size`."""
    out = {}

    async def go():
        app = LltraceApp(recorded=make_recorded_run(tmp_path))
        async with app.run_test(size=size) as pilot:
            await loaded(pilot)
            budget, events = app.query_one(BudgetTree), app.query_one(EventLog)
            folded, graphs = app.query_one(FoldedPanels), app.query_one(GraphsPanel)
            stats = app.query_one(StatsPanel)
            out.update(budget=budget.region.height, events=events.region.height,
                       budget_lines=budget.last_line + 1,
                       stats=plain(stats.render(), width=stats.content_size.width),
                       stats_rows=stats.content_size.height,
                       folded=plain(folded.render(), width=200).strip() if folded.display and folded.region.height
                       else None,
                       panels=graphs.region.height > 0)

    asyncio.run(go())
    return out


@pytest.mark.parametrize("size, rows", [((80, 24), 12), ((90, 30), 18)])
def test_the_budget_tree_and_the_events_get_the_rows_in_a_small_terminal(tmp_path, size, rows):
    got = layout_at(tmp_path, size)
    # at least `rows` rows of the tree (border included); the whole 2-level budget fits
    assert got["budget"] >= rows and got["events"] == got["budget"]
    assert got["budget"] - 2 >= got["budget_lines"]
    assert not got["panels"]                                  # the small panels are folded...
    folded = got["folded"]
    assert folded is not None and "ultra" in folded          # ...into one line with their news
    assert "1 recompile, 1 graph break" in folded and "GPU peak 20.00 GiB" in folded[:100]
    # the headline numbers fold into as many lines as the panel has, the verdict kept
    assert len(got["stats"].rstrip().splitlines()) <= got["stats_rows"]
    assert "p99 within 40 ms" in got["stats"] and "p50 4.33" in got["stats"]


def test_a_tall_terminal_keeps_the_full_panels(tmp_path):
    got = layout_at(tmp_path, (150, TALL_ROWS))
    assert got["panels"] and got["folded"] is None and got["budget"] >= 12
    assert "ms/block" in got["stats"] and "p95" in got["stats"]


def test_the_event_log_summarizes_the_guard_failure_and_keeps_the_raw_text(tmp_path):
    out = {}

    async def go():
        app = LltraceApp(recorded=make_recorded_run(tmp_path))
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            log = app.query_one(EventLog)
            out["text"] = " ".join(" ".join(strip.text for strip in log.lines).split())   # unwrapped
            out["title"] = str(log.border_title)
            out["raw"] = next(e.data for e in app.recorded.events if e.kind == "recompile")["reasons"]

    asyncio.run(go())
    # the recorded message ("recompile of forward") is rebuilt from the data: readable for old runs
    assert "recompiling forward: start changed (was 4680)" in out["text"]
    assert "# kv_cache.local_end_index" not in out["text"]
    assert out["raw"] == ["start == 4680  # kv_cache.local_end_index"]
    assert out["title"] == "events (1 recompile, 1 graph break, 1 CUDA-graph skip)"


@pytest.fixture(scope="module")
def pipe():
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    preset, _ = cpu_fallback(load_preset("ultra"))
    return StreamingPipeline(preset, model="tiny", device="cpu")


def test_after_the_run_p_s_and_space_say_why_they_do_nothing(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    out = {}

    async def go():
        app = LltraceApp(pipeline=pipe, session_kwargs={"num_blocks": 2, "prompt": "a cat", "regions_level": "block",
                                                           "profile_blocks": (1, 2)},
                         refresh_s=0.05, doctor=False)
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 120
            while not app.ended:
                assert time.monotonic() < deadline, "the run did not end"
                await pilot.pause(0.05)
            await pilot.pause()
            for key in ("p", "s", "space"):
                await pilot.press(key)
                await pilot.pause()
            out["notes"] = [n.message for n in app._notifications]
            out["prompt_box"] = app.query_one("#prompt").has_class("-visible")
            out["paused"] = app.control.paused
            stats = app.query_one(StatsPanel)
            out["stats"] = plain(stats._grid(compact=False))
            buf = io.StringIO()
            saved_message(app, file=buf)
            out["saved"] = buf.getvalue()
            out["run_dir"] = app.run_result.run_dir
            await pilot.press("q")

    asyncio.run(go())
    notes = out["notes"]
    assert len(notes) == 3 and all(n.startswith("the run has ended: ") for n in notes)
    assert "no blocks are left to profile" in notes[0] and f"lltrace budget {out['run_dir']}" in notes[0]
    assert "no blocks are left to show a new prompt" in notes[1]
    assert not out["prompt_box"] and not out["paused"]
    assert "prompt switch none" in out["stats"] and "none yet" not in out["stats"]
    assert "2 blocks" in out["stats"]
    assert f"saved in {out['run_dir']}" in out["saved"] and "completed (2 blocks)" in out["saved"]


def test_a_recorded_run_has_no_switch_yet_to_wait_for(tmp_path):
    # a recorded run without a switch: "none", the run is over
    run = make_recorded_run(tmp_path)
    assert run.name == RUN_ID
    panel = StatsPanel()
    panel.ended = True
    from lltrace.capture.frame_clock import FrameRecord, clock_stats

    panel.stats = clock_stats([FrameRecord(0, 0, 0, "first", 0.2, 20.0, 180.0, 9, "host")], [], "host")
    text = plain(panel._grid(compact=False))
    assert "prompt switch none" in text and "1 block" in text and "1 blocks" not in text


def test_view_help_and_its_usage_error_name_the_argument_run_or_trace():
    from click.testing import CliRunner

    from lltrace.commands.view import view

    help_text = CliRunner().invoke(view, ["--help"]).output
    assert "Usage: view [OPTIONS] RUN_OR_TRACE" in help_text and "PATH" not in help_text
    missing = CliRunner().invoke(view, [])
    assert missing.exit_code == 2 and "Missing argument 'RUN_OR_TRACE'" in missing.output
