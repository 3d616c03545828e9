"""`lltrace doctor`: CUDA-graph compatibility and torch.compile health of each pipeline stage."""
from __future__ import annotations

import faulthandler
import json
import time
from contextlib import contextmanager

import click

from lltrace.commands.params import MODULE_FACTORY
from lltrace.errors import LltraceError


@contextmanager
def _progress(err, title: str):
    """Yields `show(text)`, told each stage's check as it starts. On a terminal: one rich status
    line with a spinner and the elapsed time; otherwise a plain line per check on stderr, with
    the seconds since the start (stdout stays the report: `--json` is clean)."""
    if err.is_terminal:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task(title)
            yield lambda text: bar.update(task, description=text)
        return
    t0 = time.perf_counter()
    err.print(f"  {0.0:6.1f} s  {title}", markup=False, highlight=False)
    yield lambda text: err.print(f"  {time.perf_counter() - t0:6.1f} s  {text}", markup=False, highlight=False)


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
@click.option("--isolate/--no-isolate", default=None,
              help="Run each stage group (denoise+kv_update, recache, decode, text) in a fresh process of its "
                   "own, several at once: a native crash (torch 2.11's dynamo) costs only that group, which "
                   "runs again without compile checks. Default: on with CUDA when more than one group is asked "
                   "for, off on the CPU.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, metavar="N",
              help="Isolated processes at once (default: half the CPU cores, at most one per group).")
@click.option("--stage-timeout", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="End an isolated group's process after this long and report it (default: 900).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--strict", is_flag=True, help="Exit with 1 when a stage is INCOMPATIBLE (for CI).")
def doctor(preset, stages, module_spec, model, device, overrides, no_compile, isolate, jobs, stage_timeout,
           as_json, strict):
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
    # A native crash inside torch (a segfault or abort in a capture or a compile) prints the
    # Python stack where it happened, rather than ending the process without a word.
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable()
        except (OSError, ValueError):   # a stderr without a file descriptor (captured)
            pass
    if module_spec is not None:
        given = [flag for flag, v in (("--preset", preset), ("--stage", stages), ("--model", model),
                                      ("--set", overrides), ("--isolate", isolate), ("--jobs", jobs),
                                      ("--stage-timeout", stage_timeout)) if v]
        if given:
            raise LltraceError(f"--module diagnoses your module: {', '.join(given)} do not apply to it")
        from lltrace.doctor.graph import diagnose_module, load_module_factory

        mod_name, factory = module_spec
        module, calls = load_module_factory(mod_name, factory)
        with _progress(err, f"diagnosing {mod_name}:{factory}") as show:
            report = diagnose_module(module, calls, name=factory, target=f"{mod_name}:{factory}",
                                     compile_check=not no_compile, progress=show)
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
        with _progress(err, f"diagnosing {preset or 'baseline'}: {', '.join(names)}") as show:
            report = diagnose_preset(preset or "baseline", names, device=str(dev), model=model,
                                     overrides=knobs, compile_check=not no_compile, isolate=isolate,
                                     jobs=jobs, timeout=stage_timeout, progress=show)

    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        from lltrace.ui.doctor_report import doctor_renderable

        Console().print(doctor_renderable(report))
    if report.stopped:   # the report is printed, and the command still failed
        raise click.exceptions.Exit(1)
    if strict and any(s.verdict == INCOMPATIBLE for s in report.stages):
        raise click.exceptions.Exit(1)
