"""`lltrace bench`: time presets on the GPU (steady state, after warm-up)."""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import click

from lltrace.errors import LltraceError


@click.command()
@click.option("--preset", "-p", "presets", multiple=True,
              help="Preset to time (repeatable). Default: all presets in configs/.")
@click.option("--model", default=None, help="Model config (wan-1.3b, tiny). Default: the preset's; "
              "on a machine without CUDA: tiny.")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto.")
@click.option("--set", "overrides", multiple=True, metavar="KNOB=VALUE",
              help="Override a knob in every preset, e.g. --set local_attn_size=15.")
@click.option("--warmup", default=3, show_default=True, help="Blocks before timing (compile, autotune).")
@click.option("--blocks", default=8, show_default=True, help="Steady-state blocks to time.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write results as JSON here (default: bench-out/bench-<time>.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout instead of a table.")
@click.option("--markdown", is_flag=True, help="Print a markdown table (for BENCHMARKS.md).")
def bench(presets, model, device, overrides, warmup, blocks, out_path, as_json, markdown):
    """Time presets: ms per forward, per block and per video frame (steady state, decode
    included), first-frame and prompt-switch latency, peak memory.

    Runs the bare pipeline (no regions, no profiler). A preset that fails (e.g. fp8 without
    CUDA) is reported as an error row and the others still run; the exit code is 1 then.
    """
    import torch
    from rich.console import Console

    from lltrace.pipeline.bench import bench_preset
    from lltrace.pipeline.generator import resolve_device
    from lltrace.pipeline.presets import available_presets, load_preset, parse_overrides
    from lltrace.ui.bench_report import bench_markdown, bench_table

    err = Console(stderr=True)
    dev = resolve_device(device)
    if dev.type != "cuda" and model is None:
        model = "tiny"
        err.print("[yellow]no CUDA device: timing the tiny model on the CPU; these are not GPU numbers[/yellow]")
    names = list(presets) or available_presets()
    knobs = parse_overrides(overrides)
    loaded = [load_preset(n, knobs) for n in names]  # validate all before spending time
    if dev.type != "cuda":   # as `lltrace run` does: GPU-only knobs off, each with a note
        from lltrace.pipeline.presets import cpu_fallback
        fell = [cpu_fallback(p) for p in loaded]
        loaded = [p for p, _ in fell]
        for p, notes in fell:
            for n in notes:
                err.print(f"[yellow]note:[/yellow] {p.name}: {n}")

    rows = []
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": ["lltrace", *sys.argv[1:]],
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "results": rows}
    out = Path(out_path) if out_path else Path("bench-out") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for p in loaded:
        try:
            with err.status(f"{p.name}") as status:
                # Without a terminal the spinner shows nothing: print each stage instead.
                show = status.update if err.is_terminal else (lambda s: err.print(f"  {s}"))
                r = bench_preset(p, device=dev, model=model, warmup_blocks=warmup, blocks=blocks,
                                 progress=show)
            rows.append(r.to_dict())
        except LltraceError as exc:
            rows.append({"preset": p.name, "error": str(exc)})
        except torch.OutOfMemoryError as exc:
            rows.append({"preset": p.name, "error": f"out of memory: {str(exc).splitlines()[0]}"})
        err.print(f"{p.name}: " + ("done" if not rows[-1].get("error") else f"[red]{rows[-1]['error']}[/red]"))
        _write(out, doc)   # after every preset: a later preset that hangs or is killed loses only itself

    if as_json:
        click.echo(json.dumps(doc, indent=2))
    elif markdown:
        click.echo(bench_markdown(rows))
    else:
        console = Console()
        console.print(bench_table(rows, console.width))
        err.print(f"results: {out}")
    if any(r.get("error") for r in rows):
        raise click.exceptions.Exit(1)


def _write(out: Path, doc: dict) -> None:
    """Atomically (a reader never sees half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(out)
