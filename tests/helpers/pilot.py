"""Waiting in Textual pilot tests: for a condition of the app, with a deadline."""
from __future__ import annotations

import time


async def wait_for(pilot, cond, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)
