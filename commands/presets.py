"""`lltrace presets`: list the presets and their knobs."""
from __future__ import annotations

import json

import click


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
    # At 80 columns the knob names stay whole (no_wrap, their own width); values wrap at
    # ", " (a list of timesteps), never inside a number.
    table = Table(title="lltrace presets", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("knob", no_wrap=True, min_width=max(len(k) for k in KNOBS), style="bold")
    for p in loaded:
        table.add_column(p.name, overflow="fold", min_width=min(9, max(len(p.name), 6)))
    for knob in KNOBS:
        if knob == "description":
            continue
        values = [p.to_dict()[knob] for p in loaded]
        table.add_row(knob, *[", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in values])
    Console().print(table)
