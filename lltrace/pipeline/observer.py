"""How the pipeline reports what it does, without knowing who listens.

The pipeline calls these methods at fixed points; `lltrace.capture` implements them with
NVTX + record_function regions and a CUDA-event frame clock. The default does nothing, so
the pipeline runs bare (and `lltrace bench` can measure it with no instrumentation).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager


class PipelineObserver:
    def region(self, name: str) -> ContextManager:
        """A named range around a stage, e.g. `ll/block[3]` (docs/FORMATS.md §1)."""
        return nullcontext()

    def graph_capture(self, index: int) -> ContextManager:
        """Around the capture of CUDA graph `index` (its replays run inside `ll/graph[index]`):
        an observer records the capture once, to map replayed kernels back to regions."""
        return nullcontext()

    def run_started(self) -> None:
        """The request arrived: first-frame latency is measured from here."""

    def text_encoded(self, prompt_index: int) -> None:
        """A prompt's embeddings are ready (enqueued on the device)."""

    def switch_requested(self, prompt_index: int, text: str) -> None:
        """A prompt switch was asked for; switch latency is measured from here."""

    def block_done(self, block_index: int, num_frames: int, prompt_index: int, after_switch: bool) -> None:
        """The block's decode is enqueued; its `num_frames` video frames are ready when the
        device reaches this point (an observer records a CUDA event here, no synchronize)."""

    def run_finished(self) -> None:
        """The stream is over: no more blocks come."""


NULL_OBSERVER = PipelineObserver()
