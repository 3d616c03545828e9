"""The key help, as a modal screen."""
from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

LIVE_KEYS = [
    ("space", "pause / resume the pipeline (takes effect between blocks)"),
    ("s", "switch prompt: type the new prompt, Enter; the pipeline recaches and the switch latency shows"),
    ("p", "start a profiled window of the next blocks / stop it early; its budget replaces the tree"),
    ("q", "quit: stop after the current block and finalize the run directory"),
]
COMMON_KEYS = [
    ("arrows, enter", "move in the budget tree, expand / collapse a node (down to layer and op)"),
    ("tab", "move between the budget tree and the event log"),
    ("?", "this help"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def __init__(self, live: bool) -> None:
        super().__init__()
        self.live = live

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in (LIVE_KEYS if self.live else [("q", "quit")]) + COMMON_KEYS:
            table.add_row(key, what)
        with Vertical(id="help-box"):
            yield Static("lltrace " + ("live run" if self.live else "recorded run"), id="help-title")
            yield Static(table)
            yield Static("Esc or ? closes this help.", id="help-foot")
