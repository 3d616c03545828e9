"""`lltrace run`: the pipeline under regions, frame clock, recompile monitor and profiler."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lltrace.commands.params import FRAME_PROMPT, NO_BLOCKS, PROFILE_BLOCKS
from lltrace.errors import LltraceError


@click.command()
@click.option("--preset", "-p", default="ultra", show_default=True, help="Preset from configs/ (see `lltrace presets`).")
@click.option("--frames", type=click.IntRange(min=1), default=240, show_default=True, help="Video frames to generate (rounded up to whole blocks).")
@click.option("--prompt", default="a red fox running through fresh snow, golden hour", show_default=True)
@click.option("--switch-at", "switch_at", multiple=True, type=FRAME_PROMPT, metavar='F:"PROMPT"',
              help="Switch to PROMPT before video frame F (repeatable); the KV cache is re-cached.")
@click.option("--headless", is_flag=True, help="No TUI: print a rich summary (the default without a terminal).")
@click.option("--profile-blocks", type=PROFILE_BLOCKS, default=None,
              help="Blocks A:B (B exclusive) to record with torch.profiler; 'none' to record nothing. "
                   "Default: 2:4 (after warm-up), or the last two blocks of a shorter run.")
@click.option("--regions", "regions_level", type=click.Choice(["off", "block", "layer", "op"]), default="op",
              show_default=True, help="Region detail: NVTX + record_function ranges.")
@click.option("--py-spy", "py_spy", is_flag=True, help="Also record host-side Python stacks with py-spy.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the run directory here (it must be new or empty). Default: "
                   "traces/<run-id>/ under $LLTRACE_TRACES or the current directory.")
@click.option("--kernel-map/--no-kernel-map", "kernel_map", default=True, show_default=True,
              help="Record inductor's kernel provenance and each CUDA-graph capture, so the budget puts "
                   "compiled and replayed kernels under their op regions (compile-time and capture-time "
                   "cost only).")
@click.option("--model", default=None, help="Model config (wan-1.3b, tiny). Default: the preset's; tiny without CUDA.")
@click.option("--device", default="auto", show_default=True, help="cuda, cpu or auto.")
@click.option("--set", "overrides", multiple=True, metavar="KNOB=VALUE", help="Override a preset knob.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Generator checkpoint (.pt/.safetensors, Wan/LongLive keys). Default: random weights.")
@click.option("--lora", type=click.Path(exists=True, dir_okay=False), default=None, help="LoRA to merge into --weights.")
@click.option("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the file's, else rank).")
@click.option("--vae-weights", type=click.Path(exists=True, dir_okay=False), default=None, help="Decoder checkpoint.")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local tokenizer directory (default: a built-in hashing tokenizer).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout at the end (implies --headless).")
@click.option("--doctor/--no-doctor", default=True, show_default=True,
              help="TUI only: check the built pipeline with `lltrace doctor` (denoise, kv_update) and show "
                   "its CUDA-graph verdict; costs a few seconds before the first frame (not counted in it).")
def run(preset, frames, prompt, switch_at, headless, profile_blocks, regions_level, py_spy, out_dir, kernel_map, model, device,
        overrides, weights, lora, lora_alpha, vae_weights, tokenizer, seed, as_json, doctor):
    """Run the LongLive pipeline with full instrumentation; write traces/<run-id>/.

    On a terminal this opens the live TUI; without one (or with --headless) it prints a
    summary. On a machine without CUDA the tiny model runs on the CPU, GPU-only knobs off.
    """
    from rich.console import Console

    from lltrace.capture.session import blocks_for_frames, switch_block
    from lltrace.pipeline.generator import StreamingPipeline, for_this_machine
    from lltrace.pipeline.presets import load_preset, parse_overrides

    err = Console(stderr=True)
    p, dev, model, notes = for_this_machine(load_preset(preset, parse_overrides(overrides)), device, model)
    num_blocks = blocks_for_frames(frames, p.frames_per_block)
    switches = {}
    for f, text in switch_at:
        b = switch_block(f, p.frames_per_block)
        if not 0 < b < num_blocks:
            raise LltraceError(f"--switch-at {f} is outside the run ({frames} frames)")
        switches[b] = text
    if profile_blocks is None:
        profile = (2, 4) if num_blocks >= 4 else (max(0, num_blocks - 2), num_blocks)
    else:
        profile = None if profile_blocks == NO_BLOCKS else profile_blocks
    if profile is not None and profile[1] > num_blocks:
        raise click.BadParameter(f"{profile[0]}:{profile[1]} ends after the run's last block ({num_blocks} blocks "
                                 f"for {frames} frames)", param_hint="'--profile-blocks'")
    if p.compile and regions_level == "op":
        notes.append("compiled blocks get layer regions only: inductor fuses across op boundaries")

    live = not (headless or as_json) and sys.stdout.isatty()
    if live:  # headless runs list the notes in their summary
        for n in notes:
            err.print(f"[yellow]note:[/yellow] {n}")
    from lltrace.capture import provenance
    if kernel_map:
        provenance.recording()   # before anything compiles, the TUI's pre-flight doctor included
    with err.status(f"building {p.name} ({model or p.model})"):
        pipe = StreamingPipeline(p, device=dev, model=model, weights=weights, lora=lora, lora_alpha=lora_alpha,
                                 vae_weights=vae_weights, tokenizer=tokenizer, seed=seed)
    if dev.type == "cuda":
        from lltrace.trace.roofline import measure_fp8_tflops, measure_matmul_tflops
        pipe.ceiling_tflops = measure_matmul_tflops(iters=10)  # ~0.1 s; meta.json's roofline ceiling
        if p.fp8:
            pipe.ceiling_fp8_tflops = measure_fp8_tflops(iters=10)
    session_kwargs = dict(num_blocks=num_blocks, prompt=prompt, switches=switches, profile_blocks=profile,
                          regions_level=regions_level, py_spy=py_spy, kernel_map=kernel_map,
                          run_dir=_fresh_dir(out_dir) if out_dir is not None else None, command=["lltrace", *sys.argv[1:]])
    if live:
        try:
            from lltrace.ui.app import run_live_app
        except ImportError:
            live = False
            err.print("[yellow]note:[/yellow] the live TUI is not available; running headless")
    if live:
        result = run_live_app(pipe, session_kwargs, notes=notes, doctor=doctor)
    else:
        from lltrace.capture.session import run_session
        from lltrace.ui.run_summary import run_summary

        with err.status(f"{p.name}: {num_blocks} blocks"):
            result = run_session(pipe, **session_kwargs)
        if as_json:
            click.echo(json.dumps({"run_dir": str(result.run_dir), "status": result.status, **result.summary},
                                  indent=2))
        else:
            Console().print(run_summary(result, pipe.describe(), notes))
    # Ctrl-C / SIGTERM: the shell convention 130. Quitting the TUI with `q` is a normal end.
    if result is not None and result.status == "interrupted" and result.reason != "stopped":
        raise click.exceptions.Exit(130)


def _fresh_dir(path: Path) -> Path:
    """--out: a new or empty directory (a run never mixes its files with another's)."""
    from lltrace.errors import LltraceError
    if path.exists() and any(path.iterdir()):
        raise LltraceError(f"--out {path}: the directory exists and is not empty", "give a new directory")
    return path
