"""The run's events as they arrive: recompiles and graph breaks with their reasons, CUDA-graph
skips, prompt switches, profiler windows, notes. Counts per kind go in the border title."""
from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import RichLog

from lltrace.capture.recompiles import recompile_message, recompile_reasons
from lltrace.words import count

STYLES = {"recompile": "bold yellow", "graph_break": "bold red", "cudagraph_skip": "red", "compile": "blue",
          "prompt_switch": "green", "profile_window": "magenta", "note": "dim"}
COUNTED = ("recompile", "graph_break", "cudagraph_skip")
NOUNS = {"recompile": "recompile", "graph_break": "graph break", "cudagraph_skip": "CUDA-graph skip"}
NARROW = 60     # below this width the kind goes before the message, not in a column of its own


def event_lines(kind: str, message: str, data: dict[str, Any]) -> list[str]:
    """The detail lines worth reading under an event (reasons, where), FORMATS.md §2 `data`."""
    out: list[str] = []
    if kind == "recompile":
        fn = data.get("function") or {}
        if fn.get("name"):
            out.append(f"in {fn['name']} ({fn.get('file', '?')}:{fn.get('line', '?')})")
        # dynamo's guard text, summarized ("x.size()[0] changed 4 → 8"); events.jsonl keeps it raw
        reasons = recompile_reasons([str(r) for r in data.get("reasons") or []])
        out += [f"reason: {r}" for r in reasons if r not in message]
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


class EventRow:
    """One event as a grid row; long messages and reasons wrap inside their column. Laid out
    when drawn, at the log's width: below NARROW the kind leads the message, so the message
    keeps most of the width; wider, the kind has a column of its own. (A rich renderable rather
    than a Table built at write time: RichLog may render it before it knows its width.)"""

    def __init__(self, when: str, kind: str | None, message: str | Text, details: list[Text]) -> None:
        self.when, self.kind, self.message, self.details = when, kind, message, details

    def __rich_console__(self, console, options):
        narrow = options.max_width < NARROW
        row = Table.grid(padding=(0, 1), expand=True)
        if self.kind is None:                        # a note: under the messages
            row.add_column(width=8 if narrow else 9 + 1 + 14, no_wrap=True)
            row.add_column(ratio=1)
            row.add_row("", self.message)
            yield row
            return
        row.add_column(width=8 if narrow else 9, justify="right", style="dim", no_wrap=True)
        style = STYLES.get(self.kind, "")
        if narrow:
            row.add_column(ratio=1)
            head = Text(self.kind.replace("_", " "), style=style)
            head.append(" ")
            head.append(self.message if isinstance(self.message, Text) else Text(self.message))
            row.add_row(self.when, head)
            for detail in self.details:
                row.add_row("", detail)
        else:
            row.add_column(width=14, no_wrap=True)
            row.add_column(ratio=1)
            row.add_row(self.when, Text(self.kind, style=style), self.message)
            for detail in self.details:
                row.add_row("", "", detail)
        yield row


class EventLog(RichLog):
    def __init__(self, **kwargs) -> None:
        super().__init__(wrap=True, markup=False, highlight=False, max_lines=5000, min_width=20, **kwargs)
        self.counts: Counter[str] = Counter()

    def add_event(self, t_s: float | None, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.counts[kind] += 1
        if kind == "recompile" and (data or {}).get("reasons"):
            # runs recorded before the summary had dynamo's raw guard text as their message
            message = recompile_message(data.get("function"), [str(r) for r in data["reasons"]])
        when = f"{t_s:.3f}s" if t_s is not None else "–"
        details = [Text(d, style="dim") for d in event_lines(kind, message, data or {})]
        self.write(EventRow(when, kind, message, details), expand=True)
        self._title()

    def add_note(self, message: str, style: str = "dim") -> None:
        self.write(EventRow("", None, Text(message, style=style), []), expand=True)

    def _title(self) -> None:
        parts = [count(self.counts[k], NOUNS[k]) for k in COUNTED if self.counts[k]]
        self.border_title = "events" + (f" ({', '.join(parts)})" if parts else "")
