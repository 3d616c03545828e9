"""CaptureObserver: the pipeline's observer callbacks -> regions, frame clock and run events."""
from __future__ import annotations

from contextlib import contextmanager
from typing import ContextManager, Iterable, Iterator

from lltrace import names
from lltrace.capture.events import EventSink, RunEvent
from lltrace.capture.frame_clock import FrameClock
from lltrace.capture.graph_capture import GraphCaptureRecorder, capture_region
from lltrace.capture.regions import check_level, enabled_at, region
from lltrace.pipeline.observer import PipelineObserver

# Regions whose end starts the next block's time (FORMATS.md §2 `block_ms`).
BOUNDARY_REGIONS = frozenset({names.name(names.TEXT_ENCODE), names.name(names.RECACHE)})


class _Boundary:
    """Wraps a region; marks a frame-clock boundary when it closes (whatever the level)."""

    __slots__ = ("inner", "clock")

    def __init__(self, inner: ContextManager, clock: FrameClock):
        self.inner = inner
        self.clock = clock

    def __enter__(self):
        return self.inner.__enter__()

    def __exit__(self, *exc):
        try:
            return self.inner.__exit__(*exc)
        finally:
            self.clock.boundary()


class CaptureObserver(PipelineObserver):
    """Implements the PipelineObserver protocol with lltrace's capture layer.

    `level` ("off" | "block" | "layer" | "op") picks which regions the pipeline's own
    `observer.region(...)` calls emit; the frame clock is fed at every level.
    """

    def __init__(self, clock: FrameClock, *, level: str = "op", sinks: Iterable[EventSink] = (),
                 graphs: GraphCaptureRecorder | None = None):
        self.clock = clock
        self.graphs = graphs
        self.level = check_level(level)
        self.sinks = list(sinks)
        self.blocks_done = 0
        self.in_block = False       # between a block's region opening and block_done
        self.prompt_index = 0

    def region(self, name: str) -> ContextManager:
        r = region(name, self.level)
        if names.index_of(name, names.BLOCK) is not None:
            self.in_block = True
        if name in BOUNDARY_REGIONS:
            return _Boundary(r, self.clock)
        return r

    @contextmanager
    def graph_capture(self, index: int) -> Iterator[None]:
        # the frame clock times it (cold start: the block is not steady); the recorder keeps it
        with self.clock.cold_work("graph_capture"):
            if self.graphs is None or not enabled_at(capture_region(index), self.level):
                yield
            else:
                with self.graphs.record(index):
                    yield

    def run_started(self) -> None:
        self.clock.run_started()

    def text_encoded(self, prompt_index: int) -> None:
        self.clock.boundary()

    def switch_requested(self, prompt_index: int, text: str) -> None:
        self.clock.switch_requested(prompt_index)
        self.prompt_index = prompt_index
        self._emit(RunEvent("prompt_switch", f"switch to prompt {prompt_index}: {text!r}",
                            {"phase": "requested", "prompt": prompt_index, "text": text,
                             "before_block": self.blocks_done}))

    def block_done(self, block_index: int, num_frames: int, prompt_index: int, after_switch: bool) -> None:
        self.clock.block_done(block_index, num_frames, prompt_index, after_switch)
        self.blocks_done += 1
        self.in_block = False

    def run_finished(self) -> None:
        pass

    def _emit(self, event: RunEvent) -> None:
        for sink in self.sinks:
            sink(event)
