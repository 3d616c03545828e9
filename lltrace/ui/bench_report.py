"""Rendering of `lltrace bench` results: a rich table, or markdown for BENCHMARKS.md."""
from __future__ import annotations

from rich.table import Table


def _f(v, fmt="{:.1f}"):
    return "—" if v is None or v != v else fmt.format(v)


COLUMNS = [
    ("preset", "preset", lambda r: r["preset"]),
    ("fwd ms", "ms/forward", lambda r: _f(r["ms_per_forward"])),
    ("block ms", "ms/block", lambda r: _f(r["ms_per_block"])),
    ("decode ms", "ms decode", lambda r: _f(r["ms_decode"])),
    ("frame ms", "ms/video frame", lambda r: _f(r["ms_per_frame"], "{:.2f}")),
    ("FPS", "FPS", lambda r: _f(r["fps"])),
    ("first frame ms", "first frame ms", lambda r: _f(r["first_frame_ms"])),
    ("switch ms", "prompt switch ms", lambda r: _f(r["prompt_switch_ms"])),
    ("peak GiB", "peak GiB", lambda r: _f(r["peak_mem_bytes"] / 2**30 if r["peak_mem_bytes"] else None, "{:.1f}")),
]


def bench_table(rows: list[dict]) -> Table:
    t = Table(title="lltrace bench (steady state, decode included)")
    for col, _, _ in COLUMNS:
        t.add_column(col, justify="left" if col == "preset" else "right")
    for r in rows:
        if r.get("error"):
            t.add_row(r["preset"], f"[red]{r['error']}[/red]", *[""] * (len(COLUMNS) - 2))
        else:
            t.add_row(*[get(r) for _, _, get in COLUMNS])
    return t


def bench_markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['preset']} | error: {r['error']} |" + " |" * (len(COLUMNS) - 2))
        else:
            lines.append("| " + " | ".join(get(r) for _, _, get in COLUMNS) + " |")
    return "\n".join(lines)
