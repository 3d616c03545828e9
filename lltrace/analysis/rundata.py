"""The non-trace files of a run directory (docs/FORMATS.md §2): summary.json, frames.jsonl,
events.jsonl, meta.json, read leniently (a killed run leaves a half-written last line; a
missing file is "unknown", not an error)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lltrace.capture.schema import check_events, check_frames, check_meta, check_summary
from lltrace.inputs import is_regular_file, what_is


@dataclass
class RunData:
    run_dir: Path | None
    meta: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _present(path: Path, warnings: list[str]) -> bool:
    """A regular file is there; a FIFO, device or directory by that name is a warning (reading
    it could block forever), a missing file is just missing."""
    if is_regular_file(path):
        return True
    what = what_is(path) if os.path.lexists(path) else None
    if what:
        warnings.append(f"{path.name} is {what}, not a file: ignored")
    return False


def _json(path: Path, warnings: list[str]) -> Any:
    """The decoded file (any JSON value: lltrace.capture.schema checks it), or None."""
    if not _present(path, warnings):
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        warnings.append(f"{path.name} is unreadable ({exc.__class__.__name__}): ignored")
        return None


def _jsonl(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    if not _present(path, warnings):
        return []
    out, bad = [], 0
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        warnings.append(f"{path.name} is unreadable ({exc.strerror or exc}): ignored")
        return []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            bad += 1
            continue
        if isinstance(item, dict):
            out.append(item)
        else:
            bad += 1
    if bad:
        warnings.append(f"{path.name}: {bad} unreadable line(s) skipped")
    return out


def read_run(run_dir: Path | None, meta: dict[str, Any] | None = None) -> RunData:
    """Everything but the trace; an empty RunData for None (a bare trace file)."""
    if run_dir is None:
        return RunData(None, meta)
    warnings: list[str] = []
    meta = meta if meta is not None else check_meta(_json(run_dir / "meta.json", warnings), warnings)
    return RunData(run_dir, meta, check_summary(_json(run_dir / "summary.json", warnings), warnings),
                   check_frames(_jsonl(run_dir / "frames.jsonl", warnings), warnings),
                   check_events(_jsonl(run_dir / "events.jsonl", warnings), warnings), warnings)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def block_rows(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per block: {"block", "kind", "block_ms", "latency_ms", "frames"} (frames of a
    block share their latency, so per-block values are the independent samples)."""
    blocks: dict[int, dict[str, Any]] = {}
    for f in frames:
        b = f.get("block")
        bms, lat = _num(f.get("block_ms")), _num(f.get("latency_ms"))
        if not isinstance(b, int) or bms is None or lat is None:
            continue
        row = blocks.setdefault(b, {"block": b, "kind": f.get("kind"), "block_ms": bms, "latency_ms": lat,
                                    "frames": 0, "frames_in_block": f.get("frames_in_block")})
        row["frames"] += 1
    for row in blocks.values():   # the block's size as recorded, else the frames seen
        fib = row.pop("frames_in_block")
        if isinstance(fib, int) and fib > 0:
            row["frames"] = fib
    return [blocks[b] for b in sorted(blocks)]


def steady_blocks(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks summary.json's ms_per_frame is over: steady ones, or all while there are none."""
    rows = block_rows(frames)
    steady = [r for r in rows if r["kind"] == "steady"]
    return steady or rows
