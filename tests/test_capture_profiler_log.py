"""Kineto's stderr lines (USDT: ... profiler_start / profiler_stop) go to the run directory's
profiler.log, not to the user's terminal: fd 2 is pointed at the log around each profiler call."""
from __future__ import annotations

import ctypes
import os

import pytest
import torch

from lltrace.capture.profiler import PROFILER_LOG, ProfilerWindow, native_stderr_to
from lltrace.capture.regions import region


def c_write_stderr(text: str) -> None:
    """A write to fd 2 from C (libc's write), as libkineto does: no Python stream involved."""
    data = text.encode()
    assert ctypes.CDLL(None).write(2, data, len(data)) == len(data)


def test_native_writes_inside_land_in_the_log_not_on_the_terminal(tmp_path, capfd):
    log = tmp_path / PROFILER_LOG
    os.write(2, b"before\n")
    with native_stderr_to(log):
        c_write_stderr("USDT: from C inside\n")
        os.write(2, b"from os.write inside\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    text = log.read_text()
    assert "USDT: from C inside" in text and "from os.write inside" in text
    assert "inside" not in err
    assert "before" in err and "after" in err      # the terminal's fd 2 is back


def test_fd_2_is_restored_when_the_section_raises(tmp_path, capfd):
    fd2 = os.fstat(2)
    with pytest.raises(RuntimeError), native_stderr_to(tmp_path / PROFILER_LOG):
        c_write_stderr("inside\n")
        raise RuntimeError("profiler failed")
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (fd2.st_dev, fd2.st_ino)
    c_write_stderr("after the error\n")
    assert "after the error" in capfd.readouterr().err
    assert (tmp_path / PROFILER_LOG).read_text() == "inside\n"


def test_nothing_written_leaves_no_log(tmp_path):
    with native_stderr_to(tmp_path / PROFILER_LOG):
        pass
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_log_leaves_stderr_alone(tmp_path, capfd):
    with native_stderr_to(tmp_path / "missing-dir" / PROFILER_LOG):
        c_write_stderr("still on the terminal\n")
    assert "still on the terminal" in capfd.readouterr().err


def test_kineto_start_stop_lines_of_a_window_go_to_the_run_directory(tmp_path, capfd):
    w = ProfilerWindow(tmp_path, blocks=(1, 2))
    w.start()
    for i in range(3):
        with region(f"ll/block[{i}]"):
            torch.randn(8, 8).matmul(torch.randn(8, 8))
        w.step()
    w.close()
    err = capfd.readouterr().err
    assert w.traces and "profiler_start" not in err and "profiler_stop" not in err
    text = (tmp_path / PROFILER_LOG).read_text()
    assert "profiler_start" in text and "profiler_stop" in text
