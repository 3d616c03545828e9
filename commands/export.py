"""`lltrace export RUN_OR_TRACE -o out.json.gz`: a Chrome trace with lltrace's tracks for Perfetto."""
from __future__ import annotations

import contextlib

import click

from lltrace.commands.params import BLOCKS, MS_WINDOW


@click.command()
@click.argument("source")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file, .json or .json.gz (gzipped).")
@click.option("--blocks", type=BLOCKS, default=None, metavar="START:STOP",
              help="Keep whole blocks START..STOP-1 (e.g. 3:6), with the GPU work they launched.")
@click.option("--window-ms", "window_ms", type=MS_WINDOW, default=None, metavar="[START:]END",
              help="Keep the time window START..END ms from the trace's first event (END alone: the first END ms).")
@click.option("--gzip-level", "gzip_level", type=click.IntRange(1, 9), default=6, show_default=True,
              help="Compression of a .gz output, zlib's scale: 1 is fastest, 9 smallest. With "
                   "'lltrace[fast]' installed (python-isal, zlib-ng) 1-3 are ~5x faster and 4-9 ~1.5x.")
@click.option("--check", is_flag=True, help="Read the output back and validate every event against the "
                                            "Chrome trace event format.")
def export(source, out, blocks, window_ms, gzip_level, check):
    """Write SOURCE (a run directory, run id or trace file) as a Chrome trace that opens in
    ui.perfetto.dev, with lltrace's tracks added: video frames, prompt switches, run events
    (recompiles, ...), regions on host and GPU, and a frame-latency counter. A multi-rank
    run (lltrace run --nproc) becomes one trace with a process per rank ("rank r")."""
    from rich.console import Console

    from lltrace.errors import LltraceError
    from lltrace.export import perfetto as pe

    if blocks is not None and window_ms is not None:
        raise click.UsageError("--blocks and --window-ms are exclusive: pick one")
    err = Console(stderr=True)
    with err.status(f"exporting {source}") if err.is_terminal else contextlib.nullcontext():
        result = pe.export(source, out, blocks=blocks, window_ms=window_ms, gzip_level=gzip_level)
    c = result.lltrace_events
    added = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in c.items() if v)
    size = pe.human_bytes(result.bytes) + (f" gzipped ({pe.human_bytes(result.json_bytes)} of JSON)"
                                           if result.gzip else "")
    click.echo(f"wrote {result.path}: {size}")
    click.echo(f"  {result.events_written:,} of {result.events_read:,} trace events"
               + (f" ({result.window.label}, {(result.window.end_us - result.window.start_us) / 1e3:,.1f} ms)"
                  if result.window else "")
               + (f"; lltrace tracks: {added}" if added else "; no lltrace tracks"))
    if result.clock:
        click.echo(f"  frames and run events aligned by the {result.clock}")
    for w in result.warnings:
        err.print(f"warning: {w}", style="yellow", highlight=False)
    if check:
        from lltrace.export.chrome_format import validate_file
        report = validate_file(result.path)
        if not report.ok:
            raise LltraceError(f"{result.path} does not follow the trace event format: {report.summary()}")
        click.echo(f"  format check: {report.summary()}")
    click.echo("  open it at https://ui.perfetto.dev")

