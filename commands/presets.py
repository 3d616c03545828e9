"""`lltrace presets`: list the presets and their knobs."""
from __future__ import annotations

import json

import click

# What a table adds to its cells (box.SIMPLE_HEAD, pad_edge=False): the edges (1 each side),
# and per column after the first a divider and a padding column each side.
_EDGES, _GAP = 2, 3


def _cell(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _column_width(name: str, cells: list[str]) -> int:
    """Wide enough for the preset's name and its longest word: rich then wraps a value only at
    a space (a list of timesteps at ", "), never inside a word such as `channels_last`."""
    words = [w for c in cells for w in c.split()]
    return max([len(name), 6, *map(len, words)])


def _groups(widths: list[int], first: int, total: int) -> list[list[int]]:
    """Preset columns split into as few tables as fit `total` columns (each repeats the knob
    column), as even as that allows: [0, 1, 2], [3, 4] rather than [0, 1, 2, 3], [4]."""
    def fits(cols: list[int]) -> bool:
        return _EDGES + first + sum(widths[i] + _GAP for i in cols) <= total

    n = len(widths)
    for k in range(1, n + 1):
        # k contiguous groups of sizes as equal as possible, the larger ones first
        size, extra = divmod(n, k)
        out, i = [], 0
        for g in range(k):
            step = size + (1 if g < extra else 0)
            out.append(list(range(i, i + step)))
            i += step
        if all(fits(cols) for cols in out):
            return out
    return [[i] for i in range(n)]   # narrower than one preset: rich folds (never reached at 80)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
def presets(as_json):
    """List the presets in configs/ with their knobs."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from lltrace.pipeline.presets import KNOBS, available_presets, load_preset

    loaded = [load_preset(n) for n in available_presets()]
    if as_json:
        click.echo(json.dumps({p.name: p.to_dict() for p in loaded}, indent=2))
        return
    knobs = [k for k in KNOBS if k != "description"]
    cells = [[_cell(p.to_dict()[k]) for k in knobs] for p in loaded]
    widths = [_column_width(p.name, c) for p, c in zip(loaded, cells)]
    natural = [max(w, *map(len, c)) for w, c in zip(widths, cells)]   # each value on one line
    knob_width = max(map(len, knobs))
    console = Console()
    # The knob names stay whole (no_wrap, their own width). Where all presets do not fit side
    # by side (80 columns), the presets fold into two tables, each with the knob column.
    groups = _groups(widths, knob_width, console.width)
    for n, cols in enumerate(groups):
        table = Table(title="lltrace presets" if n == 0 else None, title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("knob", no_wrap=True, min_width=knob_width, style="bold")
        wide = _EDGES + knob_width + sum(natural[i] + _GAP for i in cols) <= console.width
        for i in cols:
            table.add_column(loaded[i].name, width=(natural if wide else widths)[i], overflow="fold")
        for r, knob in enumerate(knobs):
            table.add_row(knob, *[cells[i][r] for i in cols])
        console.print(table)
