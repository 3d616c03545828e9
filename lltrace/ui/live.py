"""Bridge between a capture Session (running in a worker thread) and the Textual app.

- `LiveControl`: what the UI asks of the run (pause, prompt switch, stop), read by the
  session between blocks through its `next_switch` hook. Thread-safe.
- `SessionBridge`: a Session listener that turns frames, events, switches, blocks and the
  end of the run into Textual messages posted to the app (`post_message` is thread-safe
  and never blocks the run's thread, unlike `call_from_thread`).
- The messages themselves, handled by `lltrace.ui.app.LltraceApp`.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from textual.message import Message

from lltrace.capture.events import RunEvent
from lltrace.capture.frame_clock import FrameRecord, SwitchRecord

# -- messages (posted from the run's threads, handled on the UI thread) ---------------------------

class FrameReady(Message):
    def __init__(self, record: FrameRecord) -> None:
        super().__init__()
        self.record = record


class EventArrived(Message):
    def __init__(self, event: RunEvent, t_s: float | None) -> None:
        super().__init__()
        self.event = event
        self.t_s = t_s          # seconds since the run's start (None before it started)


class SwitchShown(Message):
    def __init__(self, record: SwitchRecord, since_enter_ms: float | None) -> None:
        super().__init__()
        self.record = record
        self.since_enter_ms = since_enter_ms   # host time from Enter in the input box to the frames


class BlockFinished(Message):
    def __init__(self, index: int, num_frames: int) -> None:
        super().__init__()
        self.index = index
        self.num_frames = num_frames


class SessionStarted(Message):
    """The pipeline is built and the session object exists (its run directory comes next)."""

    def __init__(self, session: Any, describe: dict[str, Any]) -> None:
        super().__init__()
        self.session = session
        self.describe = describe


class DoctorChecked(Message):
    """The pre-flight `lltrace doctor` check of the built pipeline is done: its report, or the
    exception it raised (the run goes on either way)."""

    def __init__(self, report: Any | None, error: BaseException | None) -> None:
        super().__init__()
        self.report = report
        self.error = error


class RunEnded(Message):
    """The session returned (result) or raised (error); the run directory is final either way,
    unless the pipeline could not even be built (result None, run_dir None)."""

    def __init__(self, result: Any | None, error: BaseException | None) -> None:
        super().__init__()
        self.result = result
        self.error = error


# -- control ----------------------------------------------------------------------------------------

class LiveControl:
    """Pause / prompt switch / stop, set from the UI thread, obeyed between blocks."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._switches: deque[tuple[str, int]] = deque()   # (prompt, perf_counter_ns at Enter)
        self._entered: deque[int] = deque()                # Enter times of switches handed to the run
        self.clock: Any = None        # the session's FrameClock, once the run started
        self.paused_blocks: list[int] = []

    # UI thread
    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def pause(self) -> None:
        if not self._stopping.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def queue_switch(self, prompt: str) -> None:
        with self._lock:
            self._switches.append((prompt, time.perf_counter_ns()))

    def stop(self) -> None:
        """Stop waiting (a paused run resumes to its end); the caller asks the session to stop."""
        self._stopping.set()
        self._running.set()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._switches)

    # the run's thread
    def next_switch(self, block: int) -> str | None:
        """Session hook: wait while paused, then hand over the oldest queued prompt (one per block)."""
        resumed = 0
        if not self._running.is_set():
            self.paused_blocks.append(block)
            self._running.wait()
            resumed = time.perf_counter_ns()
            if self.clock is not None:
                # The next block's time starts now, not before the pause (FORMATS §2 block_ms).
                self.clock.boundary()
        with self._lock:
            if not self._switches or self._stopping.is_set():
                return None
            prompt, entered = self._switches.popleft()
            self._entered.append(max(entered, resumed))   # a prompt typed while paused waits from the resume
            return prompt

    def since_enter_ms(self) -> float | None:
        """Host ms from Enter (or the resume, if typed while paused) of the oldest switch handed to
        the run until now, when its frames are out."""
        with self._lock:
            if not self._entered:
                return None
            return (time.perf_counter_ns() - self._entered.popleft()) / 1e6


class SessionBridge:
    """Session listener -> app messages. `post` is the app's thread-safe `post_message`."""

    def __init__(self, post: Callable[[Message], Any], control: LiveControl) -> None:
        self.post = post
        self.control = control
        self.session: Any = None

    def on_frame(self, record: FrameRecord) -> None:
        self.post(FrameReady(record))

    def on_event(self, event: RunEvent) -> None:
        rd = getattr(self.session, "run_dir", None)
        base = getattr(rd, "time_base", None)
        self.post(EventArrived(event, base.seconds_since(event.perf_counter_ns) if base is not None else None))

    def on_switch(self, record: SwitchRecord) -> None:
        self.post(SwitchShown(record, self.control.since_enter_ms()))

    def on_block(self, out: Any) -> None:
        if self.control.clock is None and self.session is not None:
            self.control.clock = self.session.clock
        self.post(BlockFinished(int(getattr(out, "index", -1)), int(getattr(out, "num_frames", 0))))


def is_pipeline(obj: Any) -> bool:
    """A built pipeline (has generate_block), as opposed to a factory that builds one."""
    return callable(getattr(obj, "generate_block", None))
