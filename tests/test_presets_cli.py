"""`lltrace presets` at any width (issue #13): every value reads whole in its column, wrapped
only at a space, never inside a word (`channels_` / `last`) and never cut."""
from __future__ import annotations

import json
import re

import pytest

from lltrace.commands.cli import main
from lltrace.pipeline.presets import KNOBS


def _tables(text: str) -> list[list[str]]:
    """The printed tables, each as its lines from the header row on."""
    out, cur = [], None
    for line in text.splitlines():
        if line.startswith(" knob "):
            cur = [line]
            out.append(cur)
        elif cur is not None:
            cur.append(line)
    return out


def _cells(table: list[str]) -> dict[tuple[str, str], str]:
    """(preset, knob) -> the cell's text, its wrapped lines joined by a space."""
    header = table[0]
    names = header.split()[1:]
    starts = [m.start() for m in re.finditer(r"\S+", header)][1:]
    bounds = list(zip(starts, starts[1:] + [None]))
    cells: dict[tuple[str, str], list[str]] = {}
    knob = None
    for line in table[2:]:          # below the header's rule
        first = line[:starts[0]].strip()
        if first:
            knob = first
        if knob is None or not line.strip():
            continue
        for name, (a, b) in zip(names, bounds):
            part = line[a:b].strip()
            if part:
                cells.setdefault((name, knob), []).append(part)
    return {k: " ".join(v) for k, v in cells.items()}


@pytest.mark.parametrize("width", [80, 60, 200])
def test_no_value_is_split_or_cut(capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["presets", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    seen: dict[tuple[str, str], str] = {}
    for table in _tables(text):
        seen.update(_cells(table))
    knobs = [k for k in KNOBS if k != "description"]
    for name, preset in expected.items():
        for knob in knobs:
            v = preset[knob]
            want = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
            assert seen.get((name, knob)) == want, (width, name, knob, seen.get((name, knob)))
    assert "channels_last" in text.split()


def test_at_80_columns_the_presets_fold_into_two_tables(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["presets"]) == 0
    tables = _tables(capsys.readouterr().out)
    assert [t[0].split()[1:] for t in tables] == [["baseline", "balanced", "turbo"], ["turbo-fp8", "ultra"]]


def test_a_wide_terminal_has_one_table_one_line_per_knob(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["presets"]) == 0
    (table,) = _tables(capsys.readouterr().out)
    rows = [line for line in table[2:] if line.strip()]
    assert len(rows) == len([k for k in KNOBS if k != "description"])
