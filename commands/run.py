"""`lltrace run`: the pipeline under regions, frame clock, recompile monitor and profiler."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from lltrace.commands.params import (
    FRAME_PROMPT,
    NO_BLOCKS,
    PROFILE_BLOCKS,
    QUALNAME,
    REGIONS_MAP,
)
from lltrace.errors import LltraceError

DEFAULT_PRESET = "ultra"
# options that only mean something when lltrace builds and drives its own pipeline
PRESET_ONLY = ("frames", "prompt", "switch_at", "model", "device", "overrides", "weights", "lora", "lora_alpha",
               "vae_weights", "tokenizer", "seed", "doctor", "nproc")
SCRIPT_ONLY = ("regions_map", "block_fn", "decode_fn", "recache_fn")


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--preset", "-p", default=None, help=f"Preset from configs/ (see `lltrace presets`). Default: {DEFAULT_PRESET}.")
@click.option("--script", "script", type=click.Path(dir_okay=True, path_type=Path), default=None,
              help="Profile your own Python script instead: it runs in this process as __main__, with "
                   "ARGS after `--` as its sys.argv; blocks, steps, context and decode are found from "
                   "its calls (docs/FORMATS.md §7). Not with --preset.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS...]")
@click.option("--regions-map", "regions_map", type=REGIONS_MAP, default=None,
              help="--script: YAML of `module-name pattern: region` tried before the Wan names, "
                   "e.g. `transformer_blocks.{k}: ll/layer[{k}]`.")
@click.option("--block-fn", "block_fn", type=QUALNAME, default=None,
              help="--script: each call of this function is one block (when detection does not fit).")
@click.option("--decode-fn", "decode_fn", type=QUALNAME, default=None,
              help="--script: this function is the decode (besides modules named like vae/decoder).")
@click.option("--recache-fn", "recache_fn", type=QUALNAME, default=None,
              help="--script: this function is the recache after a prompt switch (besides methods "
                   "named like *recache*).")
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
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout at the end (implies --headless; "
              "a --script's own output goes to stderr then).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sequence parallelism (Ulysses) over N processes: gloo on the CPU, NCCL on N GPUs; "
                   "a trace per rank in one run directory. Headless.")
@click.option("--doctor/--no-doctor", default=True, show_default=True,
              help="TUI only: check the built pipeline with `lltrace doctor` (denoise, kv_update) and show "
                   "its CUDA-graph verdict; costs a few seconds before the first frame (not counted in it).")
@click.pass_context
def run(ctx, preset, script, script_args, regions_map, block_fn, decode_fn, recache_fn, frames, prompt, switch_at,
        headless, profile_blocks, regions_level, py_spy, out_dir, kernel_map, model, device,
        overrides, weights, lora, lora_alpha, vae_weights, tokenizer, seed, as_json, doctor, nproc):
    """Run the LongLive pipeline with full instrumentation; write traces/<run-id>/.

    On a terminal this opens the live TUI; without one (or with --headless) it prints a
    summary. On a machine without CUDA the tiny model runs on the CPU, GPU-only knobs off.

    \b
    Your own pipeline: lltrace run --script FILE.py [-- ARGS...]
    runs FILE.py as `python FILE.py ARGS` would, under the same capture
    (live TUI or headless; --profile-blocks counts the blocks found in its calls).
    """
    given = {name for name in ctx.params if ctx.get_parameter_source(name) not in
             (click.core.ParameterSource.DEFAULT, None)}
    if script is not None:
        if preset is not None:
            raise LltraceError("--script and --preset are mutually exclusive",
                               "--preset runs lltrace's own pipeline, --script yours")
        wrong = [n for n in PRESET_ONLY if n in given]
        if wrong:
            flag = "--" + wrong[0].replace("_", "-").replace("overrides", "set")
            raise LltraceError(f"{flag} applies to --preset runs, not to --script",
                               "pass your script its own options after `--`")
        return _run_script(script, script_args, regions_map=regions_map, block_fn=block_fn, decode_fn=decode_fn,
                           recache_fn=recache_fn, headless=headless, profile_blocks=profile_blocks,
                           regions_level=regions_level, py_spy=py_spy, out_dir=out_dir, kernel_map=kernel_map,
                           as_json=as_json)
    if script_args:
        raise LltraceError(f"unexpected argument {script_args[0]!r}", "arguments after `--` go to a --script")
    wrong = [n for n in SCRIPT_ONLY if n in given]
    if wrong:
        raise LltraceError(f"--{wrong[0].replace('_', '-')} applies to --script runs")
    preset = preset or DEFAULT_PRESET
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

    run_kwargs = {"num_blocks": num_blocks, "prompt": prompt, "switches": switches, "profile_blocks": profile,
                  "regions_level": regions_level, "py_spy": py_spy, "kernel_map": kernel_map}
    if nproc > 1:
        if not (headless or as_json) and sys.stdout.isatty():
            notes.append("--nproc runs are headless (the live TUI drives one process); "
                         "`lltrace view` shows the run directory")
        return _run_ranks(nproc, p, dev, model, notes, run_kwargs, out_dir, as_json,
                          {"weights": weights, "lora": lora, "lora_alpha": lora_alpha,
                           "vae_weights": vae_weights, "tokenizer": tokenizer, "seed": seed})
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
    session_kwargs = dict(run_kwargs, run_dir=_fresh_dir(out_dir) if out_dir is not None else None, command=["lltrace", *sys.argv[1:]])
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


def _run_ranks(nproc, p, dev, model, notes, run_kwargs, out_dir, as_json, pipeline_kwargs):
    """--nproc N: N sequence-parallel ranks (lltrace.capture.ranks), headless; rank 0's summary."""
    from rich.console import Console

    from lltrace.capture.ranks import run_ranks
    from lltrace.capture.rundir import RunDirectory
    from lltrace.pipeline.config import load_model_config
    from lltrace.pipeline.parallel import check_split
    from lltrace.trace.roofline import measure_matmul_tflops
    from lltrace.ui.run_summary import run_summary

    check_split(load_model_config(model or p.model), nproc)
    if dev.type == "cuda":
        import torch
        if torch.cuda.device_count() < nproc:
            raise LltraceError(f"--nproc {nproc} needs {nproc} GPUs, this machine has {torch.cuda.device_count()}")
    rd = RunDirectory(_fresh_dir(out_dir)) if out_dir is not None else RunDirectory.create(p.name)
    rd.path.mkdir(parents=True, exist_ok=True)
    spec = {"preset": p, "device": str(dev), "model": model, "pipeline": dict(pipeline_kwargs, model=model),
            "ceiling": measure_matmul_tflops,   # each rank measures its own GPU
            "run_dir": str(rd.path), "session": dict(run_kwargs, command=["lltrace", *sys.argv[1:]])}
    try:
        with Console(stderr=True).status(f"{p.name}: {run_kwargs['num_blocks']} blocks on {nproc} ranks"):
            result, describe, ranks = run_ranks(nproc, spec)
    except KeyboardInterrupt:
        click.echo(f"lltrace: interrupted; the run directory {rd.path} is complete up to there", err=True)
        raise click.exceptions.Exit(130) from None
    if as_json:
        click.echo(json.dumps({"run_dir": str(result.run_dir), "status": result.status, **result.summary,
                               "ranks": ranks}, indent=2))
        return
    blocks = {r: (v.get("ms_per_block") or {}).get("p50") for r, v in ranks["per_rank"].items()}
    notes = [*notes, (f"{nproc} ranks (Ulysses, {ranks['backend']}); the frame clock is rank 0's; "
                      f"`lltrace budget {result.run_dir}` shows each rank"),
             "ms per block p50 by rank: " + ", ".join(
                 f"{r}: {v:,.1f}" if isinstance(v, (int, float)) else f"{r}: -" for r, v in sorted(blocks.items()))]
    Console().print(run_summary(result, describe, notes))
    if result.status == "interrupted" and result.reason != "stopped":
        raise click.exceptions.Exit(130)


def _run_script(script, script_args, *, regions_map, block_fn, decode_fn, recache_fn, headless, profile_blocks,
                regions_level, py_spy, out_dir, kernel_map, as_json):
    """`--script`: the user's file under a ForeignSession (lltrace.capture.script): in the live
    TUI on a terminal (lltrace.ui.script_feed; the script's output goes to <run>/script.log),
    else headless with a summary."""
    from rich.console import Console

    from lltrace.capture.hooks import DEFAULT_PATTERNS
    from lltrace.capture.script import Boundaries, check_script, run_script
    from lltrace.ui.run_summary import run_summary

    check_script(script)
    err = Console(stderr=True)
    notes = []
    live = not (headless or as_json) and sys.stdout.isatty() and sys.stdin.isatty()
    profile = (2, 4) if profile_blocks is None else (None if profile_blocks == NO_BLOCKS else profile_blocks)
    kwargs = {"patterns": tuple(regions_map or ()) + DEFAULT_PATTERNS,
              "boundaries": Boundaries(block_fn, decode_fn, recache_fn), "profile_blocks": profile,
              "regions_level": regions_level, "py_spy": py_spy, "kernel_map": kernel_map,
              "run_dir": _fresh_dir(out_dir) if out_dir is not None else None,
              "command": ["lltrace", *sys.argv[1:]]}
    if kernel_map:
        from lltrace.capture import provenance
        provenance.recording()
    if live:
        try:
            from lltrace.ui.script_feed import ScriptFeed, run_script_app
        except ImportError:
            live = False
            err.print("[yellow]note:[/yellow] the live TUI is not available; running headless")
    if live:
        feed = ScriptFeed(script, script_args, kwargs)
        result = run_script_app(feed)
        session, error = feed.session, feed.error
        if result is None and error is None:
            return
    else:
        # --json: stdout is one JSON document, so what the script prints goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            result, session, error = run_script(script, script_args, **kwargs)
    if error is not None:   # the script's own bug: its traceback, exit 1 (or its sys.exit code)
        _print_user_traceback(error, script)
        click.echo(f"lltrace: {script} raised {type(error).__name__}; run directory {result.run_dir} "
                   f"(status {result.status})", err=True)
        code = error.code if isinstance(error, SystemExit) and isinstance(error.code, int) else 1
        raise click.exceptions.Exit(code)
    if live:   # the TUI showed the run; saved_message said where it is
        if result.status == "interrupted" and result.reason != "stopped":
            raise click.exceptions.Exit(130)
        return
    notes = session.notes() + notes
    if profile is not None and not result.traces:
        notes.append(f"no profiler window: the script ran {session.detector.block_index} blocks "
                     f"and --profile-blocks is {profile[0]}:{profile[1]}")
    if as_json:
        click.echo(json.dumps({"run_dir": str(result.run_dir), "status": result.status, **result.summary}, indent=2))
    else:
        Console().print(run_summary(result, _script_describe(session, script), notes))
    if result.status == "interrupted":
        err.print("lltrace: interrupted; the run directory is complete up to there")
        raise click.exceptions.Exit(130)


def _print_user_traceback(exc: BaseException, script: Path) -> None:
    """The script's traceback from its own first frame on: lltrace's and runpy's frames above it
    are not the user's business (their bug, their stack)."""
    import traceback

    if isinstance(exc, SystemExit):
        return
    tb = exc.__traceback__
    target = str(Path(script).resolve())
    t = tb
    while t is not None and str(Path(t.tb_frame.f_code.co_filename).resolve()) != target:
        t = t.tb_next
    sys.stderr.write("".join(traceback.format_exception(type(exc), exc, t or tb)))
    sys.stderr.flush()


def _script_describe(session, script: Path) -> dict:
    """run_summary's header for a script run."""
    d = session.detector
    root = d.root if d is not None else None
    p = next(root.parameters(), None) if root is not None else None
    return {"preset": f"script {Path(script).name}",
            "model": {"name": type(root).__name__ if root is not None else "no root model"},
            "device": {"type": str(p.device) if p is not None else "cpu"},
            "dtype": str(p.dtype).replace("torch.", "") if p is not None else "-",
            "attention_backend": "as the script runs it"}


def _fresh_dir(path: Path) -> Path:
    """--out: a new or empty directory (a run never mixes its files with another's)."""
    from lltrace.errors import LltraceError
    if path.exists() and any(path.iterdir()):
        raise LltraceError(f"--out {path}: the directory exists and is not empty", "give a new directory")
    return path
