"""The run's events as they arrive: recompiles and graph breaks with their reasons, CUDA-graph
skips, prompt switches, profiler windows, notes. Counts per kind go in the border title."""
from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import RichLog

STYLES = {"recompile": "bold yellow", "graph_break": "bold red", "cudagraph_skip": "red", "compile": "blue",
          "prompt_switch": "green", "profile_window": "magenta", "note": "dim"}
COUNTED = ("recompile", "graph_break", "cudagraph_skip")


def event_lines(kind: str, message: str, data: dict[str, Any]) -> list[str]:
    """The detail lines worth reading under an event (reasons, where), FORMATS.md §2 `data`."""
    out: list[str] = []
    if kind == "recompile":
        fn = data.get("function") or {}
        if fn.get("name"):
            out.append(f"in {fn['name']} ({fn.get('file', '?')}:{fn.get('line', '?')})")
        out += [f"reason: {r}" for r in (data.get("reasons") or [])[:5]]
    elif kind == "graph_break":
        if data.get("where"):
            out.append(f"at {data['where']}")
        if data.get("reason") and data["reason"] not in message:
            out.append(f"reason: {data['reason']}")
    elif kind == "cudagraph_skip":
        if data.get("reason") and data["reason"] not in message:
            out.append(f"reason: {data['reason']}")
    elif kind == "compile":
        for key in ("recompile_reason", "cudagraph_skip_reason", "fail_type"):
            if data.get(key):
                out.append(f"{key.replace('_', ' ')}: {data[key]}")
    return out


class EventLog(RichLog):
    def __init__(self, **kwargs) -> None:
        super().__init__(wrap=True, markup=False, highlight=False, max_lines=5000, min_width=20, **kwargs)
        self.counts: Counter[str] = Counter()

    def add_event(self, t_s: float | None, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.counts[kind] += 1
        # A grid row per event: long messages and reasons wrap inside their column.
        row = Table.grid(padding=(0, 1), expand=True)
        row.add_column(width=9, justify="right", style="dim", no_wrap=True)
        row.add_column(width=14, no_wrap=True)
        row.add_column(ratio=1)
        row.add_row(f"{t_s:.3f}s" if t_s is not None else "–", Text(kind, style=STYLES.get(kind, "")), message)
        for detail in event_lines(kind, message, data or {}):
            row.add_row("", "", Text(detail, style="dim"))
        self.write(row, expand=True)
        self._title()

    def add_note(self, message: str, style: str = "dim") -> None:
        row = Table.grid(padding=(0, 1), expand=True)
        row.add_column(width=9 + 1 + 14, no_wrap=True)
        row.add_column(ratio=1)
        row.add_row("", Text(message, style=style))
        self.write(row, expand=True)

    def _title(self) -> None:
        parts = [f"{self.counts[k]} {k.replace('_', ' ')}{'s' if self.counts[k] != 1 else ''}"
                 for k in COUNTED if self.counts[k]]
        self.border_title = "events" + (f" ({', '.join(parts)})" if parts else "")
