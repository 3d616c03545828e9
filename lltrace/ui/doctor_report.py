"""Rendering of `lltrace doctor` reports: one block per stage (verdict, reasons with
file:line, torch.compile, fixes), and short lines for the TUI's CUDA-graph panel. Reads only lltrace.doctor.report (the same data `--json` prints)."""
from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from lltrace.doctor.report import (
    COMPATIBLE,
    INCOMPATIBLE,
    DoctorReport,
    Finding,
    StageReport,
)

MAX_REASONS = 6
STYLE = {COMPATIBLE: "bold green", INCOMPATIBLE: "bold red"}


def verdict_text(stage: StageReport) -> Text:
    return Text(stage.verdict_text(), style=STYLE.get(stage.verdict, "yellow"))


def _indented(text: Text, indent: int = 2, mark: str = "", mark_style: str = "") -> Padding:
    """`text` indented; with a `mark` ("• ", "fix: "), wrapped lines hang under the text."""
    if not mark:
        return Padding(text, (0, 0, 0, indent), expand=False)
    grid = Table.grid()
    grid.add_column(no_wrap=True)
    grid.add_column()
    grid.add_row(Text(mark, style=mark_style), text)
    return Padding(grid, (0, 0, 0, indent), expand=False)


def stage_block(stage: StageReport) -> list[Any]:
    """One stage: the verdict line, what was called, the reasons with file:line (and the
    source line), torch.compile health, then the fixes. Readable at 80 columns."""
    head = Text(stage.stage, style="bold")
    head.append("  ")
    head.append_text(verdict_text(stage))
    if stage.seconds:
        head.append(f"  ({stage.seconds:.1f} s)", style="dim")
    out: list[Any] = [head]
    if stage.description:
        out.append(_indented(Text(stage.description, style="dim italic")))
    shown = stage.findings[:MAX_REASONS]
    for f in shown:
        out.append(_indented(Text(f.message + (" (caveat)" if not f.blocking else "")), 2, "• ",
                             "red" if f.blocking else "yellow"))
        if f.where:
            loc = Text(f.where, style="cyan")
            if f.code and len(f.where) + 2 + len(f.code) <= 72:
                loc.append(f"  {f.code}", style="dim")
            elif f.code:   # the source line on its own line, cut at the width (never wrapped)
                loc.append("\n")
                loc.append(f.code[:120], style="dim")
            loc.no_wrap, loc.overflow = True, "ellipsis"
            out.append(_indented(loc, 4))
    if len(stage.findings) > len(shown):
        out.append(_indented(Text(f"… {len(stage.findings) - len(shown)} more (--json lists all)", style="dim")))
    if stage.capture and stage.verdict == INCOMPATIBLE:   # NOT RUN already says why in its verdict
        out.append(_indented(Text(f"capture: {stage.capture}", style="dim")))
    elif stage.verdict == COMPATIBLE and stage.capture:
        out.append(_indented(Text(stage.capture, style="green")))
    if stage.graph_savings is not None:
        out.append(_indented(savings_text(stage), 2))
    first, *rest = _compile(stage)
    out.append(_indented(first, 2, "torch.compile: ", "bold"))
    out.extend(_indented(line, 4, "- ", "dim") for line in rest)
    for x in stage.fixes[:3]:
        out.append(_indented(Text(x), 2, "fix: ", "bold green"))
    return out


def savings_text(stage: StageReport) -> Text:
    """"CUDA graphs would save <= 3.10 ms per call (launch-bound gaps: 41% of the call's GPU
    time)", or why it was not measured ("CUDA graphs would save: needs CUDA")."""
    g = stage.graph_savings
    if g is None or g.ms is None:
        return Text(f"CUDA graphs would save: {g.text() if g else 'not measured'}", style="dim")
    return Text(f"CUDA graphs would save {g.text()}", style="bold" if g.ms > 0 else "")


def _compile(stage: StageReport) -> list[Text]:
    """torch.compile health: the summary, then graph breaks and recompiles with file:line."""
    c = stage.compile
    if c is None:
        return [Text("not checked", style="dim")]
    out = [Text(c.summary())]
    for b in c.breaks[:2]:
        t = Text(f"break: {b['reason'][:90]}", style="yellow")
        if b.get("where"):
            t.append(f" @ {b['where']}", style="cyan")
        out.append(t)
    for label, items in (("within a call", c.recompiles_first_call), ("next position", c.recompiles_next_call)):
        for r in items[:2]:
            t = Text(f"recompile ({label}): {r['guard'][:80]}", style="yellow")
            if r.get("where"):
                t.append(f" @ {r['where']}", style="cyan")
            out.append(t)
    if c.error and c.graphs is not None:   # without graphs the summary already is the error
        out.append(Text(c.error, style="red"))
    return out


def doctor_renderable(report: DoctorReport) -> Group:
    """The report as a list of blocks, one per stage (was a 5-column table: 9-character
    columns at 80 columns)."""
    model = f", model {report.model}" if report.model else ""
    items: list[Any] = [Text(f"lltrace doctor: {report.target} on {report.device}{model}", style="bold")]
    overall = Text("CUDA graphs: ")
    overall.append(panel_verdict(report), style=STYLE.get(report.verdict, "yellow"))
    items.append(overall)
    if report.attention:   # which kernel the checks ran: flash4 and SDPA trace and capture differently
        items.append(Text(f"attention: {report.attention}", style="dim"))
    if report.stopped:
        items.append(_indented(Text(f"the doctor stopped {report.stopped}; the stages below are what it "
                                    "checked before", style="bold red"), 0))
    for s in report.stages:
        items.append(Text(""))
        items.extend(stage_block(s))
    if report.notes:
        items.append(Text(""))
        items.extend(_indented(Text(f"note: {n}", style="dim"), 0) for n in report.notes)
    return Group(*items)


def panel_lines(report: DoctorReport) -> list[Text]:
    """One line per stage for the TUI's CUDA-graph panel: verdict and the first reason."""
    lines = []
    for s in report.stages:
        line = Text(f"{s.stage:<10} ")
        line.append_text(verdict_text(s))
        first = next((f for f in s.findings if f.blocking), None)
        if first is not None:
            line.append(f"  {first.message}" + (f" [{first.where}]" if first.where else ""), style="dim")
        lines.append(line)
    return lines


def _first_blocking(report: DoctorReport) -> Finding | None:
    bad = next((s for s in report.stages if s.verdict == INCOMPATIBLE), None)
    return None if bad is None else next((f for f in bad.findings if f.blocking), None)


def panel_where(report: DoctorReport) -> str | None:
    """file:line of the finding panel_verdict names (GraphStatus.verdict_where), if any."""
    first = _first_blocking(report)
    return None if first is None else first.where


def panel_verdict(report: DoctorReport) -> str:
    """The one-line verdict the TUI's CUDA-graph panel shows (GraphStatus.verdict)."""
    bad = [s for s in report.stages if s.verdict == INCOMPATIBLE]
    if bad:
        first = _first_blocking(report)
        why = f": {first.message.split(':')[0]}" if first is not None else ""
        return f"INCOMPATIBLE ({', '.join(s.stage for s in bad)}){why}"
    names = ", ".join(s.stage for s in report.stages)
    if report.verdict == COMPATIBLE:
        return f"COMPATIBLE ({names})"
    notes = {s.capture for s in report.stages if s.capture}
    return f"NOT RUN ({'; '.join(sorted(notes)) or 'no capture'}); no blocking issue found statically ({names})"
