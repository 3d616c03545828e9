"""Rendering of `lltrace bench` results: a rich table, or markdown for BENCHMARKS.md."""
from __future__ import annotations

import math

from rich.console import Group
from rich.text import Text

from lltrace.ui.budget_report import Col, fitted_table


def _f(v, fmt="{:,.1f}"):
    return "—" if v is None or math.isnan(v) else fmt.format(v)


# (terminal header, two lines at most so that 9 columns fit 80; markdown header; value)
COLUMNS = [
    ("preset", "preset", lambda r: r["preset"]),
    ("fwd\nms", "ms/forward", lambda r: _f(r["ms_per_forward"])),
    ("block\nms", "ms/block", lambda r: _f(r["ms_per_block"])),
    ("decode\nms", "ms decode", lambda r: _f(r["ms_decode"])),
    ("frame\nms", "ms/video frame", lambda r: _f(r["ms_per_frame"], "{:,.2f}")),
    ("FPS", "FPS", lambda r: _f(r["fps"])),
    ("first\nframe ms", "first frame ms", lambda r: _f(r["first_frame_ms"])),
    ("switch\nms", "prompt switch ms", lambda r: _f(r["prompt_switch_ms"])),
    ("peak\nGiB", "peak GiB", lambda r: _f(r["peak_mem_bytes"] / 2**30 if r["peak_mem_bytes"] else None,
                                          "{:.1f}")),
]


def bench_table(rows: list[dict], width: int = 80) -> Group:
    """The results at `width` columns (numbers never cut); a failed preset is a line below."""
    cols = [Col(h, "left" if h == "preset" else "right") for h, _, _ in COLUMNS]
    ok = [[get(r) for _, _, get in COLUMNS] for r in rows if not r.get("error")]
    out: list = [Text("lltrace bench (steady state, decode included)", style="bold"), fitted_table(cols, ok, width)]
    out += [Text(f"{r['preset']}: {r['error']}", style="red") for r in rows if r.get("error")]
    return Group(*out)


def bench_markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['preset']} | error: {r['error']} |" + " |" * (len(COLUMNS) - 2))
        else:
            lines.append("| " + " | ".join(get(r) for _, _, get in COLUMNS) + " |")
    return "\n".join(lines)
