"""`lltrace diff A B`: compare two runs, traces or budget JSONs, with noise-aware verdicts."""
from __future__ import annotations

import contextlib
import json
import sys

import click


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--depth", type=click.IntRange(0, 64), default=None,
              help="Tree levels under the root to show [default: 3 on a terminal, all in --json].")
@click.option("--top", type=click.IntRange(1, None), default=10, show_default=True,
              help="Kernels (or host ops) listed per section.")
@click.option("--expand", is_flag=True,
              help="List repeated regions one by one (layer[0], layer[1], …) instead of one layer[0..29] row.")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON (format lltrace-diff/1).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the diff as GitHub markdown (for a PR comment).")
@click.option("--fail-above", "fail_above", metavar="PCT", default=None,
              help="Exit 1 when --metric regresses by more than PCT (e.g. 5%); for CI.")
@click.option("--metric", default=None,
              help="Metric for --fail-above: ms_per_frame (default), p99, fps, ms_per_block, first_frame_ms, "
                   "prompt_switch_ms, gpu_ms / host_ms (per unit), or a region path such as block/decode. "
                   "[default: ms_per_frame, or gpu_ms when there are no frames]")
@click.option("--strict", is_flag=True, help="With --fail-above: fail even when the noise test calls it noise.")
@click.option("--min-effect", "min_effect", metavar="PCT", default="2%", show_default=True,
              help="Smallest change of a median that counts as a win or a loss.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="Significance level of the Mann-Whitney U test.")
def diff(a, b, depth, top, expand, as_json, as_markdown, fail_above, metric, strict, min_effect, alpha):
    """Compare A and B (run directories, run ids, trace files or budget JSONs): headline
    numbers, the budget tree side by side sorted by impact, kernels that appeared,
    disappeared or changed. Exit codes: 0 ok, 1 regression above --fail-above, 2 bad input."""
    from rich.console import Console

    from lltrace.analysis import diff as diff_mod
    from lltrace.analysis import gate as gate_mod
    from lltrace.analysis.side import load_sides
    from lltrace.errors import LltraceError
    from lltrace.ui import diff_report

    if as_json and as_markdown:
        raise LltraceError("--json and --markdown are exclusive: pick one")
    threshold = gate_mod.parse_pct(fail_above) if fail_above is not None else None
    effect = gate_mod.parse_pct(min_effect, "--min-effect") / 100.0
    if metric is not None and threshold is None:
        raise LltraceError("--metric chooses what --fail-above checks: give --fail-above PCT too")

    err = Console(stderr=True)
    with err.status(f"reading A and B: {a}, {b}") if err.is_terminal else contextlib.nullcontext():
        sides = load_sides(a, b)         # at the same time; an error names its side
    result = diff_mod.diff(*sides, alpha=alpha, min_effect=effect)
    from lltrace.analysis.ranks import side_ranks

    # a sequence-parallel side (lltrace run --nproc): its ranks and comm share
    ranks = [side_ranks(s.run.meta, s.budget) for s in sides]
    if all(r["world_size"] == 1 for r in ranks):
        ranks = None
    verdict = gate_mod.gate(result, threshold, metric, strict) if threshold is not None else None

    if as_json:
        data = result.to_dict(depth=depth, top=top)
        data["gate"] = verdict.to_dict() if verdict else None
        if ranks is not None:
            data["ranks"] = {"a": ranks[0], "b": ranks[1]}
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif as_markdown:
        sys.stdout.write(diff_report.markdown(result, depth=3 if depth is None else depth, top=top, gate=verdict,
                                                 expand=expand))
    else:
        out = Console()
        diff_report.render(result, out, depth=3 if depth is None else depth, top=top, gate=verdict,
                           expand=expand)
        if ranks is not None:
            from lltrace.ui.ranks_report import diff_lines
            for line in diff_lines(*ranks):
                out.print(line)
    if verdict is not None:
        if as_json or as_markdown:   # the gate line goes to stderr so stdout stays parseable
            err.print(verdict.message, style="bold red" if verdict.failed else "green", highlight=False)
        if verdict.failed:
            raise click.exceptions.Exit(1)

