"""A real profiled run of lltrace's tiny model on the CPU, through the capture session."""
from __future__ import annotations

from pathlib import Path


def make_tiny_run(preset: str, run_dir: Path, blocks: int = 6, switch_at: int | None = 4) -> Path:
    """A real profiled run of the tiny model on CPU (about a second)."""
    from lltrace.capture.session import run_session
    from lltrace.pipeline.generator import StreamingPipeline
    from lltrace.pipeline.presets import cpu_fallback, load_preset

    p, _ = cpu_fallback(load_preset(preset))
    pipe = StreamingPipeline(p, model="tiny", device="cpu")
    result = run_session(pipe, num_blocks=blocks, prompt="a cat", switches={switch_at: "a dog"} if switch_at else None,
                         run_dir=run_dir, profile_blocks=(0, blocks), handle_signals=False)
    assert result.status == "completed"
    return run_dir
