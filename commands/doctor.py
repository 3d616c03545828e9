"""`lltrace doctor`: CUDA-graph compatibility and torch.compile health of each pipeline stage."""
from __future__ import annotations

import json

import click

from lltrace.commands.params import MODULE_FACTORY
from lltrace.errors import LltraceError


@click.command()
@click.option("--preset", "-p", default=None, help="Preset to diagnose (default: baseline).")
@click.option("--stage", "stages", multiple=True, metavar="STAGE",
              help="denoise, kv_update, recache, decode or text (repeatable or comma-separated). Default: all.")
@click.option("--module", "module_spec", type=MODULE_FACTORY, default=None, metavar="MODULE:FACTORY",
              help="Diagnose your own module instead: FACTORY() returns (module, [args of call 1, args of call 2]). "
                   "MODULE is an importable name or a .py path.")
@click.option("--model", default=None, help="Model config (wan-1.3b, tiny). Default: the preset's; without CUDA: tiny.")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto.")
@click.option("--set", "overrides", multiple=True, metavar="KNOB=VALUE", help="Override a preset knob.")
@click.option("--no-compile", is_flag=True, help="Skip the torch.compile checks (explain, recompiles).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--strict", is_flag=True, help="Exit with 1 when a stage is INCOMPATIBLE (for CI).")
def doctor(preset, stages, module_spec, model, device, overrides, no_compile, as_json, strict):
    """For each pipeline stage, try a CUDA-graph capture and report COMPATIBLE or why not, with
    the line of code responsible: host syncs, Python values that change between calls,
    tensors whose address changes, dynamic shapes, CPU tensors, RNG. Also torch.compile
    health: graph breaks and what recompiles at the next position.

    Without CUDA the static checks and compile checks still run (on the tiny model); the
    capture itself is reported as needing CUDA.
    """
    from rich.console import Console

    from lltrace.doctor.report import INCOMPATIBLE

    err = Console(stderr=True)
    if module_spec is not None:
        given = [flag for flag, v in (("--preset", preset), ("--stage", stages), ("--model", model),
                                      ("--set", overrides)) if v]
        if given:
            raise LltraceError(f"--module diagnoses your module: {', '.join(given)} do not apply to it")
        from lltrace.doctor.graph import diagnose_module, load_module_factory

        mod_name, factory = module_spec
        module, calls = load_module_factory(mod_name, factory)
        with err.status(f"diagnosing {mod_name}:{factory}"):
            report = diagnose_module(module, calls, name=factory, target=f"{mod_name}:{factory}",
                                     compile_check=not no_compile)
    else:
        from lltrace.doctor.pipeline import diagnose_preset, parse_stages
        from lltrace.pipeline.generator import resolve_device
        from lltrace.pipeline.presets import load_preset, parse_overrides

        names = parse_stages(stages or None)
        knobs = parse_overrides(overrides)
        load_preset(preset or "baseline", knobs)   # a bad preset or knob fails before anything is built
        dev = resolve_device(device)
        if dev.type != "cuda":
            err.print("[yellow]no CUDA: static and compile checks on the tiny model; capture needs CUDA[/yellow]")
        with err.status(f"diagnosing {preset or 'baseline'}: {', '.join(names)}") as status:
            # Without a terminal the spinner shows nothing: print each step instead.
            show = status.update if err.is_terminal else (lambda s: err.print(f"  {s}"))
            report = diagnose_preset(preset or "baseline", names, device=str(dev), model=model,
                                     overrides=knobs, compile_check=not no_compile, progress=show)

    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        from lltrace.ui.doctor_report import doctor_renderable

        Console().print(doctor_renderable(report))
    if strict and any(s.verdict == INCOMPATIBLE for s in report.stages):
        raise click.exceptions.Exit(1)
