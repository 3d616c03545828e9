"""`lltrace run --script` in the live TUI (issue #15): the user's script runs in the app's worker
thread (lltrace.ui.script_feed), its frames reach the plot, its output goes to script.log, `s`
says why it cannot switch a script's prompt, space pauses at a block boundary, `q` stops the
script there and the run directory is final."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from helpers.pilot import wait_for

from lltrace.ui.app import LltraceApp
from lltrace.ui.script_feed import ScriptFeed
from lltrace.ui.widgets import BudgetTree, LatencyPlot

SCRIPT = Path(__file__).parent / "data" / "foreign_script.py"


def meta(run: Path) -> dict:
    return json.loads((run / "meta.json").read_text())


def test_script_runs_to_completion_under_the_tui_at_80x24(tmp_path):
    out = tmp_path / "run"
    feed = ScriptFeed(SCRIPT, ["--blocks", "3"], {"run_dir": out, "profile_blocks": (1, 2),
                                                  "regions_level": "layer", "kernel_map": False})

    async def go():
        app = LltraceApp(feed=feed, refresh_s=0.05)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.ended, "the end of the script")
            result = app.run_result
            assert result is not None and result.status == "completed", app.run_error
            plot = app.query_one(LatencyPlot)
            assert len(plot.samples) == result.stats.frames == 33      # 9 + 12 + 12, latent-derived
            assert [k for _, _, k in plot.samples][:9] == ["first"] * 9
            assert "completed" in app.state and str(out) in app.state
            tree = app.query_one(BudgetTree)
            await wait_for(pilot, lambda: "trace" in str(tree.border_subtitle) and "building" not in
                           str(tree.border_subtitle), "the window's budget")
            assert app.title.startswith("lltrace run") and "script foreign_script.py" in app.title
            await pilot.press("q")
        return app

    app = asyncio.run(go())
    assert app.return_value is feed.result
    assert meta(out)["status"] == "completed" and meta(out)["source"] == "script"
    assert len((out / "frames.jsonl").read_text().splitlines()) == 33
    # the script's print went to its log, not over the screen
    assert "video (1, 33, 3, 8, 8)" in (out / "script.log").read_text()


def test_pause_waits_at_a_block_boundary_and_q_stops_the_script_there(tmp_path):
    out = tmp_path / "run"
    feed = ScriptFeed(SCRIPT, ["--blocks", "40", "--sleep", "0.02"],
                      {"run_dir": out, "profile_blocks": None, "regions_level": "block", "kernel_map": False})

    async def go():
        app = LltraceApp(feed=feed, refresh_s=0.05)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: len(app._samples) >= 9, "block 0's frames")
            await pilot.press("s")                                    # cannot apply: says so
            assert app.control.queued == 0 and not app.query_one("#prompt").has_class("-visible")
            await pilot.press("space")
            await wait_for(pilot, lambda: app.control.paused_blocks, "the pause at a block boundary")
            paused = len(app._samples)
            await pilot.pause(0.3)
            assert len(app._samples) == paused and not app.done.is_set()    # the script waits
            await pilot.press("q")
            await wait_for(pilot, lambda: app.done.is_set(), "the stop")
        return app

    app = asyncio.run(go())
    result = feed.result
    assert result.status == "interrupted" and result.reason == "stopped"
    m = meta(out)
    assert m["status"] == "interrupted" and m["num_blocks"] < 40
    frames = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert {f["block"] for f in frames} == set(range(m["num_blocks"]))
    assert app.run_error is None and feed.error is None


def test_a_failing_script_shows_in_the_tui_and_its_run_directory_is_final(tmp_path):
    out = tmp_path / "run"
    feed = ScriptFeed(SCRIPT, ["--blocks", "3", "--fail-at", "1"],
                      {"run_dir": out, "profile_blocks": None, "regions_level": "block", "kernel_map": False})

    async def go():
        app = LltraceApp(feed=feed, refresh_s=0.05)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.ended, "the end of the script")
            assert app.state.startswith("error: RuntimeError")
            await pilot.press("q")
        return app

    app = asyncio.run(go())
    assert isinstance(feed.error, RuntimeError) and app.run_error is feed.error   # the caller shows it
    assert feed.result.status == "error" and meta(out)["status"] == "error"


@pytest.mark.slow
def test_script_command_in_a_terminal_keeps_the_script_output_off_the_screen(tmp_path):
    from test_ui_terminal import ALT_SCREEN_OFF, Terminal, _env

    out = tmp_path / "run"
    env = dict(_env(tmp_path), COLUMNS="80", LINES="24")
    term = Terminal([sys.executable, "-m", "lltrace", "run", "--script", str(SCRIPT), "-o", str(out),
                     "--profile-blocks", "1:2", "--", "--blocks", "3"], env, size=(80, 24))
    try:
        term.wait_for(b"frame latency")
        term.wait_for(b"final: ")                    # the event log: "run directory final: ..."
        term.press(b"q")
    finally:
        rc = term.close()
    screen = bytes(term.out)
    assert rc == 0, screen[-2000:].decode(errors="replace")
    assert meta(out)["status"] == "completed"
    assert "video (1, 33, 3, 8, 8)" in (out / "script.log").read_text()
    after = screen[screen.rindex(ALT_SCREEN_OFF):]
    assert b"video (1, 33" not in screen                      # not drawn over the TUI, nor after it
    assert f"saved in {out}".encode() in after and f"{out}/script.log".encode() in after
