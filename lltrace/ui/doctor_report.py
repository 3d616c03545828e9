"""Rendering of `lltrace doctor` reports: a rich table per run, and short lines for the TUI's
CUDA-graph panel. Reads only lltrace.doctor.report (the same data `--json` prints)."""
from __future__ import annotations

from rich.console import Group
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


def _reasons(stage: StageReport) -> Text:
    t = Text()
    if stage.description:
        t.append(stage.description + "\n", style="dim italic")
    shown = stage.findings[:MAX_REASONS]
    for f in shown:
        t.append("• ", style="red" if f.blocking else "yellow")
        t.append(f.message + (" (caveat)" if not f.blocking else ""))
        if f.where:
            t.append(f"\n  {f.where}", style="cyan")
            if f.code:
                t.append(f"  {f.code[:80]}", style="dim")
        t.append("\n")
    if len(stage.findings) > len(shown):
        t.append(f"… {len(stage.findings) - len(shown)} more (--json lists all)\n", style="dim")
    if stage.capture and stage.verdict == INCOMPATIBLE:   # NOT RUN already says why in its verdict
        t.append(f"capture: {stage.capture}\n", style="dim")
    elif stage.verdict == COMPATIBLE:
        t.append(f"{stage.capture}\n", style="green")
    t.rstrip()
    return t if t.plain else Text("—")


def _compile(stage: StageReport) -> Text:
    c = stage.compile
    if c is None:
        return Text("not checked", style="dim")
    t = Text(c.summary())
    for b in c.breaks[:2]:
        t.append(f"\nbreak: {b['reason'][:90]}", style="yellow")
        if b.get("where"):
            t.append(f" @ {b['where']}", style="cyan")
    for label, items in (("within a call", c.recompiles_first_call), ("next position", c.recompiles_next_call)):
        for r in items[:2]:
            t.append(f"\nrecompile ({label}): {r['guard'][:80]}", style="yellow")
            if r.get("where"):
                t.append(f" @ {r['where']}", style="cyan")
    if c.error:
        t.append(f"\n{c.error}", style="red")
    return t


def doctor_table(report: DoctorReport) -> Table:
    model = f", model {report.model}" if report.model else ""
    table = Table(title=f"lltrace doctor: {report.target} on {report.device}{model}", show_lines=True,
                  expand=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("CUDA graph", no_wrap=True)
    table.add_column("reasons (file:line)", ratio=5)
    table.add_column("torch.compile", ratio=3)
    table.add_column("fix", ratio=3)
    for s in report.stages:
        table.add_row(s.stage, verdict_text(s), _reasons(s), _compile(s),
                      Text("\n".join(f"→ {x}" for x in s.fixes[:3]) or "—"))
    return table


def doctor_renderable(report: DoctorReport) -> Group:
    notes = Text("\n".join(f"note: {n}" for n in report.notes), style="dim")
    return Group(doctor_table(report), notes) if report.notes else Group(doctor_table(report))


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
