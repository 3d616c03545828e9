"""Sync sites: while a profiler window records, every host sync leaves a marker in the trace
that names the Python line which made it (`ll/sync_site:<file>:<line> <function>`, lltrace.names).

A Kineto trace shows a sync as `cudaStreamSynchronize` under `aten::_local_scalar_dense`, and
with `with_stack` only the *definition* line of each Python function on the stack, never the line
that called `.item()`. So the line is taken where it is known, at the sync itself:
- CUDA: `torch.cuda.set_sync_debug_mode("warn")` makes every synchronizing call (item, nonzero,
  a blocking copy to the host, torch.cuda.synchronize) raise a Python warning from inside the op;
  torch raises it as the op returns to Python, and the handler walks the Python stack to the
  first frame outside torch and leaves a zero-length record_function
  marker there, right after the op. It costs nothing between syncs, so the recorded window
  keeps its launch gaps.
- CPU (no syncs exist, but the same code would sync on a GPU): a TorchFunctionMode wraps the
  calls that would (`Tensor.item`, `tolist`, `__bool__`, `__int__`, `__float__`, `nonzero`,
XX
lltrace.trace.idle matches each marker to the sync it sits in (docs/FORMATS.md §3).
Hand-written: no profiler or library records the calling line of a sync.
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import record_function

from lltrace import names

# torch's warning text for a synchronizing call under sync debug mode (c10/cuda/CUDAFunctions.cpp)
SYNC_WARNING = r".*called a synchronizing CUDA operation.*"
_TORCH_DIR = str(Path(torch.__file__).resolve().parent) + os.sep
# torch's frames and this module's (the warning handler) are never the cause. lltrace's other
# capture code is not skipped: its wrappers sit *outside* the user's frame that syncs, and a sync
# lltrace makes itself (`lltrace run --script` reading a timestep) must be named as lltrace's.
_SKIP = (_TORCH_DIR, str(Path(__file__).resolve()), str(Path(warnings.__file__).resolve()), "<frozen ")

_T = torch.Tensor
_WOULD_SYNC = frozenset({_T.item, _T.tolist, _T.__bool__, _T.__int__, _T.__float__, _T.__index__,
                         _T.nonzero, torch.nonzero, _T.masked_select, torch.masked_select})
_INDEXING = frozenset({_T.__getitem__, _T.__setitem__})


def _shown(path: str) -> str:
    """A frame's file as a report shows it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:          # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def user_site(frame) -> str | None:
    """The marker name for the first frame, from `frame` outwards, outside torch (and this
    module); None if the whole stack is theirs."""
    while frame is not None:
        f = frame.f_code.co_filename
        if not f.startswith(_SKIP):
            try:
                f = str(Path(f).resolve())
            except OSError:
                pass
            if not f.startswith(_SKIP):
                return names.sync_site(_shown(f), frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


def _mark(site: str | None) -> None:
    if site is not None:
        with record_function(site):
            pass


def _reads_index(args) -> bool:
    """Indexing that reads its index on the host: a boolean mask (nonzero), or a 0-dim integer
    tensor (taken as a Python int, through a scalar read)."""
    idx = args[1] if len(args) > 1 else None
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and (i.dtype == torch.bool or (i.dim() == 0 and not i.is_floating_point()))
               for i in items)


class _WouldSync(TorchFunctionMode):
    """CPU: the calls that would sync on a GPU run inside their sync-site marker."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _WOULD_SYNC or (func in _INDEXING and _reads_index(args)):
            site = user_site(sys._getframe(1))
            if site is not None:
                with record_function(site):
                    return func(*args, **kwargs)
        return func(*args, **kwargs)


def _compiled_anything() -> bool:
    dynamo = sys.modules.get("torch._dynamo.utils")
    return bool(dynamo is not None and dynamo.counters["stats"]["unique_graphs"])


class SyncSites:
    """start() when a profiler window starts recording, stop() when it ends; idempotent, and
    stop() restores torch's sync debug mode and the warning handler it found."""

    def __init__(self, cuda: bool | None = None):
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self._on = False
        self._mode: _WouldSync | None = None
        self._prev_debug = 0
        self._prev_show = None
        self._filter = None
        self._thread: int | None = None

    def start(self) -> None:
        if self._on:
            return
        self._on, self._thread = True, threading.get_ident()
        if self.cuda:
            self._prev_debug = torch.cuda.get_sync_debug_mode()
            warnings.filterwarnings("always", message=SYNC_WARNING)
            self._filter = warnings.filters[0]
            self._prev_show = warnings.showwarning
            warnings.showwarning = self._on_warning
            torch.cuda.set_sync_debug_mode("warn")
        elif not _compiled_anything():
            self._mode = _WouldSync()
            self._mode.__enter__()

    def stop(self) -> None:
        if not self._on:
            return
        self._on = False
        if self.cuda:
            torch.cuda.set_sync_debug_mode(self._prev_debug)
            if warnings.showwarning is self._on_warning:
                warnings.showwarning = self._prev_show
            if self._filter in warnings.filters:
                warnings.filters.remove(self._filter)
                # the warnings module caches its filter list (the hook's name varies by Python)
                for hook in ("_filters_mutated", "_filters_mutated_lock_held"):
                    if callable(getattr(warnings, hook, None)):
                        getattr(warnings, hook)()
                        break
        elif self._mode is not None:
            # a TorchFunctionMode belongs to the thread that entered it: the profiler window is
            # driven from the pipeline's thread, so this is the same one
            self._mode.__exit__(None, None, None)
            self._mode = None

    def _on_warning(self, message, category, filename, lineno, file=None, line=None):
        if self._on and "synchronizing CUDA operation" in str(message):
            _mark(user_site(sys._getframe(1)))
            return                               # counted in the trace; not printed per sync
        show = self._prev_show or warnings._showwarning_orig
        show(message, category, filename, lineno, file, line)
