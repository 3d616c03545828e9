"""Snapshots (pytest-textual-snapshot) of the TUI's main screens, rendered over a recorded run
with fixed numbers (test_ui_recorded.make_recorded_run), so they are deterministic.
Update after an intended change with `pytest tests/test_ui_snapshots.py --snapshot-update`
and look at the SVGs (tests/__snapshots__/test_ui_snapshots/) before accepting them."""
from __future__ import annotations

import pytest

from lltrace.ui.app import LltraceApp
from helpers.recorded_run import make_recorded_run

SIZE = (150, 45)


@pytest.fixture
def app(tmp_path):
    return LltraceApp(recorded=make_recorded_run(tmp_path))


async def loaded(pilot) -> None:
    """The run's files and its budget are read in worker threads: wait for both."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_main_screen(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)


def test_budget_tree_expanded_to_layer_and_op(app, snap_compare):
    # cursor: run, block, noise, step[0] -> expand; then its layer[0] -> expand
    keys = ["down", "down", "down", "enter", "down", "down", "enter"]
    assert snap_compare(app, press=keys, terminal_size=SIZE, run_before=loaded)


def test_help_screen(app, snap_compare):
    assert snap_compare(app, press=["question_mark"], terminal_size=SIZE, run_before=loaded)


# Small terminals (issue #13): the budget tree and the event log get the rows; the CUDA-graph,
# memory and preset panels fold into one line and the headline numbers into five.
SMALL = (80, 24)
MEDIUM = (90, 30)


def test_main_screen_at_80x24(app, snap_compare):
    assert snap_compare(app, terminal_size=SMALL, run_before=loaded)


def test_budget_tree_expanded_at_80x24(app, snap_compare):
    keys = ["down", "down", "down", "enter", "down", "down", "enter"]
    assert snap_compare(app, press=keys, terminal_size=SMALL, run_before=loaded)


def test_main_screen_at_90x30(app, snap_compare):
    assert snap_compare(app, terminal_size=MEDIUM, run_before=loaded)
