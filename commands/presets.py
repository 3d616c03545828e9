"""`lltrace presets`: list the presets and their knobs."""
from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
def presets(as_json):
    """List the presets in configs/ with their knobs."""
    from rich.console import Console
    from rich.table import Table

    from lltrace.pipeline.presets import KNOBS, available_presets, load_preset

    loaded = [load_preset(n) for n in available_presets()]
    if as_json:
        click.echo(json.dumps({p.name: p.to_dict() for p in loaded}, indent=2))
        return
    table = Table(title="lltrace presets")
    table.add_column("knob")
    for p in loaded:
        table.add_column(p.name)
    for knob in KNOBS:
        if knob == "description":
            continue
        values = [p.to_dict()[knob] for p in loaded]
        table.add_row(knob, *[", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in values])
    Console().print(table)
