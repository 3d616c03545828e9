"""`lltrace.profile`: profile a pipeline lltrace did not write, from inside Python.

    import lltrace
    with lltrace.profile(pipeline, out="runs/x", profile_blocks=(2, 4)) as run:
        video = pipeline.inference(noise, prompts)
    print(run.result.run_dir, run.result.summary["ms_per_block"])

Writes the run directory of `lltrace run` (docs/FORMATS.md §2; meta.json `"source": "api"`),
with blocks, steps, the context forward, decode and recache found from the call pattern
(docs/FORMATS.md §7, lltrace.capture.script). `target` is the root model (an nn.Module whose
forward takes a timestep) or the object that owns it (the pipeline: its decoder and recache
methods are found among its attributes); None finds the root among the modules called.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def profile(target: Any = None, *, out: str | Path | None = None,
            profile_blocks: Sequence[int] | None = (2, 4), regions: str = "op",
            regions_map: Sequence[tuple[str, str]] | None = None, block_fn: str | None = None,
            decode_fn: str | None = None, recache_fn: str | None = None, name: str | None = None,
            record_shapes: bool = False, kernel_map: bool = True) -> Iterator[Any]:
    """Capture everything the with-block runs into one run directory (module doc).

    `out`: the run directory (default traces/<run-id>/ as `lltrace run`); `profile_blocks`:
    blocks (start, stop) recorded by torch.profiler, counted in detected blocks, None for no
    window; `regions`: "off" | "block" | "layer" | "op"; `regions_map`: (module-name pattern,
    region) pairs tried before the built-in Wan names; `block_fn` / `decode_fn` / `recache_fn`:
    "module:qualname" boundaries where detection does not fit. Yields the session: after the
    block, `.result` is the RunResult (`run_dir`, `status`, `summary`). An exception in the
    block ends the run with status error and is re-raised; Ctrl-C finalizes the run directory
    (status interrupted) and is re-raised.
    """
    from lltrace.capture.hooks import DEFAULT_PATTERNS
    from lltrace.capture.script import Boundaries, ForeignSession

    patterns = tuple(regions_map or ()) + DEFAULT_PATTERNS
    kind = type(target).__name__ if target is not None else None
    session = ForeignSession({"source": "api", "target": kind, "preset": None},
                             name=name or (kind or "profile"), model=target, patterns=patterns,
                             boundaries=Boundaries(block_fn, decode_fn, recache_fn),
                             run_dir=Path(out) if out is not None else None,
                             profile_blocks=profile_blocks, regions_level=regions,
                             record_shapes=record_shapes, kernel_map=kernel_map)
    session.boundaries.check()
    with session.capturing(reraise_interrupt=True):
        yield session
