"""Small modules with (and without) CUDA-graph hazards for the doctor's tests, and where their
lines are (the doctor names `file:line` relative to the repository root)."""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def source_path(fn) -> str:
    """The file `fn` is defined in, relative to the repository root, as the doctor writes it."""
    return Path(inspect.getsourcefile(fn)).resolve().relative_to(ROOT).as_posix()


def line_of(fn, needle: str) -> int:
    """The line number of the source line of `fn` containing `needle`."""
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, ln in enumerate(lines) if needle in ln)


def where(fn, needle: str) -> str:
    """`path:line` of the line of `fn` containing `needle`."""
    return f"{source_path(fn)}:{line_of(fn, needle)}"


class ItemScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        scale = x.abs().max().item()
        return self.lin(x) / scale


class IntPositionCache(nn.Module):
    """A growing cache sliced by a Python int: LongLive's pattern in miniature."""

    def __init__(self):
        super().__init__()
        self.register_buffer("buf", torch.zeros(1, 64, 4))
        self.end = 0

    def forward(self, x):
        n = x.shape[1]
        self.buf[:, self.end:self.end + n] = x
        self.end += n
        return self.buf[:, :self.end].sum(1)


class TensorPositionCache(nn.Module):
    """The capturable version: fixed shapes, positions in a device tensor, in-place writes."""

    def __init__(self):
        super().__init__()
        self.register_buffer("buf", torch.zeros(1, 64, 4))
        self.register_buffer("end", torch.zeros((), dtype=torch.long))
        self.register_buffer("slots", torch.arange(64))

    def forward(self, x):
        n = x.shape[1]
        self.buf.index_copy_(1, self.slots[:n] + self.end, x)
        self.end += n
        mask = (self.slots < self.end).to(x.dtype)
        return (self.buf * mask[None, :, None]).sum(1)
