"""`lltrace budget PATH`: the hierarchical time budget of a run, a trace file or a budget JSON."""
from __future__ import annotations

import json
import sys

import click

PROGRESS_ABOVE = 20 << 20   # show a progress bar for files larger than this


@click.command()
@click.argument("path")
@click.option("--depth", type=click.IntRange(0, 64), default=None,
              help="Levels of the tree under the root to show [default: 4 on a terminal (5 for a "
                   "multi-rank run: comm is under self_attn), all in --json].")
@click.option("--by", type=click.Choice(["region", "kernel"]), default="region", show_default=True,
              help="The region tree, or a table of kernels.")
@click.option("--expand", is_flag=True,
              help="List repeated regions one by one (layer[0], layer[1], …) instead of one "
                   "layer[0..29] row with its spread.")
@click.option("--json", "as_json", is_flag=True, help="Print the budget JSON (docs/FORMATS.md §3) to stdout.")
@click.option("--top", type=click.IntRange(1, None), default=None,
              help="Kernels to list [default: 20 on a terminal, all in --json].")
@click.option("--hta", "with_hta", is_flag=True,
              help="Add HolisticTraceAnalysis: temporal breakdown, kernel launch delays, idle time.")
@click.option("--ceiling", type=click.FloatRange(min=0, min_open=True), default=None,
              help="bf16 TFLOP/s ceiling for the roofline column (default: meta.json's measured one).")
@click.option("--rank", "rank", type=click.IntRange(min=0), default=None,
              help="A multi-rank run (lltrace run --nproc): only this rank's tree [default: every rank].")
def budget(path, depth, by, expand, as_json, top, with_hta, ceiling, rank):
    """Hierarchical GPU/CPU time budget of PATH: a run directory (traces/<id>/), a run id,
    a torch-profiler trace (.json / .json.gz / *.pt.trace.json[.gz]) or a budget JSON.

    \b
    Compiled and CUDA-graph-replayed kernels are placed below their layer too:
    - torch.compile'd kernels by inductor's provenance, recorded by `lltrace run`
      (provenance.json): a fused kernel goes to the op region owning 2/3 of its
      nodes, else to a named mix such as norm+self_attn;
    - replayed kernels by the recorded capture of their graph, matched by order
      and Triton kernel name (a mismatch is a warning, never a silent guess).
    Without those records they are grouped by compiled region / graph launch.
    docs/FORMATS.md §6 has the rules."""
    from rich.console import Console

    from lltrace.trace.budget import build_budget, load_budget
    from lltrace.trace.loader import load_trace, resolve_source
    from lltrace.ui import budget_report

    err = Console(stderr=True)
    src = resolve_source(path)
    if with_hta:
        from lltrace.analysis import hta
        hta.require()   # fail before a long parse
        if src.kind == "budget":
            from lltrace.errors import LltraceError
            raise LltraceError("--hta needs a trace, not a budget JSON")
    if src.kind == "budget":
        result = load_budget(src.path)
    else:
        trace = _load_with_progress(load_trace, src, err)
        result = build_budget(trace)   # with the run's meta.json, when there is one
        if with_hta:
            with err.status("HTA: loading the trace and analysing..."):
                result.hta = hta.analyze(src.path)
    if ceiling is not None:
        result.ceiling_tflops = ceiling
    ranks = None
    meta = getattr(trace, "run_meta", None) if src.kind == "run" else None
    from lltrace.trace.ranks import rank_traces
    if src.kind == "run" and rank_traces(meta):
        from lltrace.analysis.ranks import analyze_run
        with err.status("reading the other ranks' traces"):
            ranks = analyze_run(src.run_dir, meta, rank0=trace, budget0=result)
        for v in ranks.ranks:
            if ceiling is not None:
                v.budget.ceiling_tflops = ceiling
        if rank is not None:
            result = ranks.rank(rank).budget
    elif rank is not None:
        from lltrace.errors import LltraceError
        raise LltraceError(f"--rank {rank}: {path} is not a multi-rank run", "lltrace run --nproc N makes one")
    if as_json:
        data = result.to_dict()
        data["tree"] = budget_report.prune(result.tree, depth).to_dict()
        if top is not None:
            data["kernels"] = data["kernels"][:top]
        if ranks is not None:   # the top-level budget is rank 0's (or --rank's); FORMATS.md §3 `ranks`
            data["rank"] = 0 if rank is None else rank
            data["ranks"] = ranks.to_dict(depth, budget_report.prune)
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    out = Console()
    if ranks is not None:
        from lltrace.ui import ranks_report
        ranks_report.render(ranks, out, [v.rank for v in ranks.ranks] if rank is None else [rank],
                            depth=5 if depth is None else depth, by=by, top=top, expand=expand)
        return
    budget_report.render(result, out, depth=4 if depth is None else depth, by=by, top=top, expand=expand)


def _load_with_progress(load_trace, src, err):
    size = sum(p.stat().st_size for p in src.traces)
    if size <= PROGRESS_ABOVE or not err.is_terminal:
        return load_trace(src)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("reading {task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(src.path.name, total=size)
        return load_trace(src, progress=lambda done, total: bar.update(task, completed=done))
