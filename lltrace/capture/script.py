"""Profile code lltrace did not write: a user's script (`lltrace run --script`) or a with-block
(`lltrace.profile`), into the same run directory as `lltrace run --preset`.

Control is inverted: the user's code drives, lltrace observes. The structure (blocks, steps,
context forward, decode, recache) is found from the call pattern of the root model and of the
decoder; docs/FORMATS.md §7 states the rules. In short:
- root model: the first `nn.Module` called with a timestep-like argument (a forward parameter
  named `timestep`, `timesteps`, `t`, `sigma` or `sigmas`, given a tensor or a number). Until
  it is found, `nn.Module.__call__` is wrapped for every module (the only global hook; a
  registered global forward pre-hook would not see keyword arguments, and LongLive passes
  `timestep=` by name); then it is put back and the root gets hooks of its own.
- a root call with a noisy timestep (> 0) is a denoising step `ll/step[j]`; one at timestep 0
  is the context forward `ll/context` (it writes the KV cache); a block ends at its context
  forward: it closes at the next step, at a decode that is not its own, at a recache, or at
  the end. A step whose timestep is not lower than the one before also starts a block (steps
  count down), so pipelines without a clean call still split into blocks.
- decoder: a module found as an attribute named like `vae` / `decoder` (or of such a class)
  on the objects whose methods called the root (the pipeline); its `forward` and `decode*`
  methods are `ll/decode`. A decode right after a block's context, of no more latent values
  than the block has, is the block's own: the block ends after it and its frames are the
  decoded ones. Any other decode (LongLive v1.0 decodes the whole video at the end) is a
  run-level `ll/decode`, and blocks count the video frames their latent frames make.
- `ll/recache`: methods of those objects whose name holds `recache` (LongLive's
  `_recache_after_switch`): a prompt switch, the next block its first.
- `--block-fn`, `--decode-fn`, `--recache-fn` (`module:qualname`) name a boundary where the
  rules do not fit.

Cost (issue #15: host-bound code pays for every hook microsecond): the root's hook pair and the
layer hooks are always on (about a microsecond per call when nothing records, see
`lltrace.capture.hooks`); op hooks (below the layer) are installed only while a profiler window
is open, or for the whole run when nsys records NVTX.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import inspect
import os
import re
import runpy
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lltrace import names
from lltrace.capture.events import RunEvent
from lltrace.capture.hooks import (
    DEFAULT_PATTERNS,
    LEVEL_RANK,
    InstrumentHandle,
    instrument_module,
    set_attr,
)
from lltrace.capture.regions import nvtx_enabled
from lltrace.capture.session import RunResult, Session
from lltrace.errors import LltraceError
from lltrace.inputs import open_regular
from lltrace.pipeline.vae import video_frames

TIMESTEP_NAMES = ("timestep", "timesteps", "t", "sigma", "sigmas")
DECODER_NAME = re.compile(r"vae|decoder", re.IGNORECASE)
RECACHE_NAME = re.compile(r"recache", re.IGNORECASE)
_LLTRACE_DIR = str(Path(__file__).resolve().parents[1])
_WRAPPER = "_lltrace_wrapper"   # set on our method wrappers: an owner seen twice is wrapped once


class Boundaries:
    """`--block-fn` / `--decode-fn` / `--recache-fn`: `module:qualname` strings, resolved when
    the run starts (after the script's directory is on sys.path)."""

    def __init__(self, block: str | None = None, decode: str | None = None, recache: str | None = None):
        self.block, self.decode, self.recache = block, decode, recache

    def check(self) -> None:
        """LltraceError now (before any run directory exists) for one that does not resolve."""
        for spec, flag in ((self.block, "--block-fn"), (self.decode, "--decode-fn"), (self.recache, "--recache-fn")):
            if spec:
                resolve(spec, flag)


def resolve(spec: str, flag: str) -> tuple[Any, str]:
    """`pkg.mod:Class.method` -> (owner object, attribute) to wrap; one-line error if missing."""
    module_name, sep, qualname = spec.rpartition(":")
    if not sep or not module_name or not all(p.isidentifier() for p in qualname.split(".")):
        raise LltraceError(f"{flag} {spec!r}: use MODULE:QUALNAME, e.g. mypkg.pipeline:Pipeline.inference")
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LltraceError(f"{flag} {spec!r}: cannot import {module_name}: {exc}") from None
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            raise LltraceError(f"{flag} {spec!r}: {module_name} has no {qualname}")
    if not callable(getattr(owner, attr, None)):
        raise LltraceError(f"{flag} {spec!r}: {module_name}.{qualname} is not a function")
    return owner, attr


@functools.lru_cache(maxsize=4096)
def _timestep_param(cls: type) -> tuple[int, str] | None:
    """(positional index after self, name) of the forward's timestep parameter, or None."""
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    for i, p in enumerate(params):
        if p.name in TIMESTEP_NAMES and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            return (i if p.kind is p.POSITIONAL_OR_KEYWORD else -1), p.name
    return None


def _timestep_arg(spec: tuple[int, str], args: tuple, kwargs: dict) -> Any:
    index, name = spec
    if name in kwargs:
        return kwargs[name]
    return args[index] if 0 <= index < len(args) else None


def _timestep_value(t: Any) -> float | None:
    """The largest timestep of the call (a host sync when it lives on a GPU: see _Timesteps)."""
    if isinstance(t, torch.Tensor):
        return float(t.detach().max()) if t.numel() else None
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return float(t)
    return None


def _has_timestep(t: Any) -> bool:
    """_timestep_value(t) is not None, without reading a value (no sync)."""
    if isinstance(t, torch.Tensor):
        return t.numel() > 0
    return isinstance(t, (int, float)) and not isinstance(t, bool)


class _Timesteps:
    """Step or context, for each root call, without draining the GPU queue (FORMATS.md §7).

    A timestep on the host (a number, a CPU tensor) is read as it is. One on a GPU would cost a
    host sync per root call (5 a block), so after the first block, read exactly, has taught the
    block's pattern (S noisy calls, then a clean one or none), each call is classified by its
    place in the block, and its timestep is copied to pinned memory without blocking (one copy
    launch and an event); the copy is checked when its event has completed (polled at each root
    call and block end, waited for only at the end of the run). A timestep that breaks the
    pattern (the wrong clean flag, or steps not counting down) ends the prediction: a note says
    which block may be misnamed, and every later call is read exactly again."""

    LAZY_DEVICES = frozenset({"cuda"})   # tests add "cpu" to run the predicting path on a CPU
    COPY_MAX = 1024                      # a larger tensor is reduced on the device first

    def __init__(self, on_break: Callable[[int, int, float, str], None]):
        self.on_break = on_break           # (block, place, t, note): the pattern broke there
        self.pattern: tuple[int, bool] | None = None   # (noisy calls S, ends with a clean call)
        self.exact = False                 # the pattern broke: read every call
        self.pending: collections.deque = collections.deque()
        self.last: tuple[int, int, float] | None = None   # (block, place, t) of the last checked call
        self.copies = 0

    def lazy(self, t: Any) -> bool:
        return (self.pattern is not None and not self.exact and isinstance(t, torch.Tensor)
                and t.device.type in self.LAZY_DEVICES and t.numel() > 0)

    def learn(self, steps: int, clean: bool) -> None:
        """A block closed that was read exactly: its shape is the pattern (the first one only)."""
        if self.pattern is None and not self.exact and steps > 0:
            self.pattern = (steps, clean)

    def predict(self, place: int) -> bool | None:
        """Whether the call at `place` in its block is the clean one; None: past the pattern's
        end (the block is over: this call starts the next one)."""
        steps, clean = self.pattern
        if place < steps:
            return False
        if place == steps and clean:
            return True
        return None

    def copy(self, t: torch.Tensor, block: int, place: int, clean: bool) -> None:
        t = t.detach().reshape(-1)
        if t.numel() > self.COPY_MAX:
            t = t.max().reshape(1)
        if t.device.type == "cpu":
            host, event = t.clone(), None
        else:
            host = t.to("cpu", non_blocking=True)   # pinned by torch, no sync
            event = torch.cuda.Event()
            event.record()
        self.copies += 1
        self.pending.append((host, event, block, place, clean))
        self.check()

    def check(self, wait: bool = False) -> None:
        """Confirm the copies whose events completed (all of them with `wait`), in order."""
        while self.pending:
            host, event, block, place, clean = self.pending[0]
            if event is not None and not event.query():
                if not wait:
                    return
                event.synchronize()
            self.pending.popleft()
            self._confirm(float(host.max()), block, place, clean)

    def _confirm(self, t: float, block: int, place: int, clean: bool) -> None:
        if self.exact:
            return
        last, self.last = self.last, (block, place, t)
        actual = t <= 1e-6
        ok = actual == clean
        if ok and not actual and last is not None:
            if last[0] == block and place > 0:
                ok = t < last[2]                 # steps count down inside a block
            elif last[0] == block - 1 and place == 0 and not self.pattern[1]:
                ok = t >= last[2]                # no clean call: a block starts where t goes up
        if not ok:
            self.exact = True
            self.pending.clear()
            steps, ctx = self.pattern
            self.on_break(block, place, t, f"root call {place} of block {block} had timestep {t:g}, off the "
                          f"pattern of block 0 ({steps} steps{' and a clean call' if ctx else ''}): block "
                          f"{block} may be misnamed; timesteps are read exactly from here on (a host sync "
                          "per root call)")


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


def _latent_frames(x: torch.Tensor | None) -> int | None:
    """Latent frames of a [B, F, C, H, W] or [B, C, F, H, W] latent: the smaller of dims 1, 2
    (a block has fewer frames than channels in every Wan-family model)."""
    if x is None or x.dim() != 5:
        return None
    return int(min(x.shape[1], x.shape[2]))


def _video_frames_of(out: Any) -> int | None:
    """Frames of a decoded [B, T, 3, H, W] or [B, 3, T, H, W] video; None if not one."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 5:
        return None
    if out.shape[2] == 3:
        return int(out.shape[1])
    if out.shape[1] == 3:
        return int(out.shape[2])
    return None


class _Wrapped:
    """Method wrappers and hooks put on the user's objects, taken off by `remove()`."""

    def __init__(self):
        self.removers: list[Callable[[], None]] = []
        self.names: list[str] = []

    def wrap(self, owner: Any, attr: str, before: Callable, after: Callable, label: str) -> None:
        """Call `token = before(args, kwargs)` and `after(token, out, ok)` around owner.attr
        (`ok`: it returned; after runs when it raised too)."""
        current = getattr(owner, attr)
        if getattr(current, _WRAPPER, False):
            return
        # on a class, the plain function (so `self` passes through); on an instance, the bound method
        target = owner.__dict__.get(attr, current) if isinstance(owner, type) else current

        @functools.wraps(target)
        def wrapper(*args, **kwargs):
            token = before(args, kwargs)
            out, ok = None, False
            try:
                out = target(*args, **kwargs)
                ok = True
                return out
            finally:
                after(token, out, ok)

        setattr(wrapper, _WRAPPER, True)
        self.removers.append(set_attr(owner, attr, wrapper))
        self.names.append(label)

    def remove(self) -> None:
        removers, self.removers = self.removers[::-1], []
        _each(removers)


def _each(functions) -> None:
    """Call every function, even when some raise: one failing must not leave the others on the
    user's objects. The first error is raised after all ran (the session records it as a
    finalize note)."""
    first: Exception | None = None
    for fn in functions:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the rest
            first = first or exc
    if first is not None:
        raise first


class Detector:
    """Finds the root model, instruments it, and turns its calls into lltrace's regions and the
    frame clock's block boundaries (module doc). Lives inside a ForeignSession."""

    def __init__(self, session: ForeignSession, *, patterns: Sequence[tuple[str, str]],
                 boundaries: Boundaries, owners: Sequence[Any] = ()):
        self.s = session
        self.level = session.regions_level
        self.patterns = patterns
        self.boundaries = boundaries
        self.owners = list(owners)
        self.root: nn.Module | None = None
        self.root_name = ""
        self.wrapped = _Wrapped()
        self.handle = InstrumentHandle()       # layer hooks (and op hooks with nsys)
        self.op_handle: InstrumentHandle | None = None
        self._finder_on = False
        self._saved_call: Any = None
        self._root_hooks: list[Any] = []
        # structure state
        self.block: Any = None                 # the open ll/block[i] region (entered context manager)
        self.block_index = 0
        self.block_latent: torch.Tensor | None = None
        self.block_frames: int | None = None   # latent frames of the open block
        self.block_decoded: int | None = None  # video frames its own decodes gave
        self.context_done = False
        self.step = 0
        self.last_t: float | None = None
        self.forward: list[Any] = []           # stack of open step/context regions (None: plain call)
        self.decode_depth = 0
        self.decode_region: Any = None
        self.decode_own = False                # the decode running is the open block's own
        self.recache_depth = 0
        self.recache_region: Any = None
        self.block_fn_depth = 0
        self.prompt_index = 0
        self.after_switch = False
        self.frames_from: set[str] = set()     # "decode" | "latent"
        self.decoders: list[str] = []
        self.recaches: list[str] = []
        self.meta: dict[str, Any] | None = None   # meta.json keys, written at the end
        self.timesteps = _Timesteps(self._timestep_break)
        self.place = 0                         # root calls of the open block so far
        self.block_exact = True                # every timestep of the open block was read, none predicted
        self._spec: tuple[int, str] | None = None
        self._regions: dict[str, Any] = {}     # step/context regions, reused (root calls do not nest)

    # -- setup ----------------------------------------------------------------------------------
    def install(self, model: Any = None) -> None:
        b = self.boundaries
        if b.block:
            owner, attr = resolve(b.block, "--block-fn")
            self.wrapped.wrap(owner, attr, self._block_fn_start, self._block_fn_end, f"block: {b.block}")
        if b.decode:
            owner, attr = resolve(b.decode, "--decode-fn")
            self.wrapped.wrap(owner, attr, self._decode_start, self._decode_end, f"decode: {b.decode}")
            self.decoders.append(b.decode)
        if b.recache:
            owner, attr = resolve(b.recache, "--recache-fn")
            self.wrapped.wrap(owner, attr, self._recache_start, self._recache_end, f"recache: {b.recache}")
            self.recaches.append(b.recache)
        if isinstance(model, nn.Module) and _timestep_param(type(model)) is not None:
            self._adopt(model, "")
        else:
            self._start_finder()

    def _start_finder(self) -> None:
        detector, original = self, nn.Module.__call__

        def finder_call(module, *args, **kwargs):
            if detector._finder_on:
                spec = _timestep_param(type(module))
                if spec is not None and _has_timestep(_timestep_arg(spec, args, kwargs)):
                    detector._adopt(module, sys._getframe(1))   # the frame that called the module
            return original(module, *args, **kwargs)

        self._finder_on, self._saved_call = True, original
        nn.Module.__call__ = finder_call

    def _stop_finder(self) -> None:
        if self._finder_on:
            self._finder_on = False
            nn.Module.__call__ = self._saved_call

    def _adopt(self, root: nn.Module, frame: Any) -> None:
        """The root model is found: hooks on it (before this very call runs through them)."""
        self._stop_finder()
        self.root = root
        self.root_name = f"{type(root).__module__}.{type(root).__qualname__}"
        spec = self._spec = _timestep_param(type(root))
        self._hook_root(root)
        level = self.level
        if LEVEL_RANK[level] >= LEVEL_RANK["layer"]:
            # op regions only while something records (or for the whole run under nsys)
            top = level if nvtx_enabled() else "layer"
            self.handle.add(instrument_module(root, top, self.patterns))
        owners = list(self.owners)
        f = frame if isinstance(frame, types.FrameType) else None
        for _ in range(64):
            if f is None:
                break
            if not f.f_code.co_filename.startswith(_LLTRACE_DIR):
                obj = f.f_locals.get("self")
                if obj is not None and obj is not root and not any(obj is o for o in owners):
                    owners.append(obj)
            f = f.f_back
        for owner in owners:
            self._scan_owner(owner)
        # meta.json gets these at the end (an atomic rewrite with fsync is ~20 ms on a slow disk,
        # in the middle of the user's first block); events.jsonl has them now
        self.meta = {"root": {"class": self.root_name, "timestep_arg": spec[1] if spec else None},
                     "decoders": self.decoders, "recache": self.recaches}
        found = f"root model {type(root).__qualname__} (forward's {spec[1] if spec else '?'!r})"
        extra = (f"; decode: {', '.join(self.decoders)}" if self.decoders else "; no decoder found") + \
            (f"; recache: {', '.join(self.recaches)}" if self.recaches else "")
        self.s._event(RunEvent("note", found + extra, {"source": "script", "root": self.root_name,
                                                        "decoders": self.decoders, "recache": self.recaches}))
        self.sync_op_hooks()

    def _hook_root(self, root: nn.Module) -> None:
        """The root's calls -> _root_enter / _root_leave. Its own forward wrapped on the instance
        where it can be, as hooks.py does for layers: nn.Module's hook path (with kwargs) costs
        ~5 us a call more, idle or not. Hooks where forward is already set on the instance."""
        if "forward" in vars(root) or hasattr(root, "_orig_mod"):
            self._root_hooks = [root.register_forward_pre_hook(self._root_pre, with_kwargs=True),
                                root.register_forward_hook(self._root_post, always_call=True)]
            return
        forward, enter, leave = root.forward, self._root_enter, self._root_leave
        compiling = torch.compiler.is_compiling

        @functools.wraps(forward)
        def root_forward(*args, **kwargs):
            if compiling():
                return forward(*args, **kwargs)
            enter(args, kwargs)
            try:
                return forward(*args, **kwargs)
            finally:
                leave()

        undo = set_attr(root, "forward", root_forward)
        self._root_hooks = [types.SimpleNamespace(remove=undo)]

    def _scan_owner(self, owner: Any) -> None:
        if isinstance(owner, nn.Module):
            items = list(owner._modules.items()) + [(k, v) for k, v in vars(owner).items() if k != "_modules"]
        else:
            items = list(vars(owner).items()) if hasattr(owner, "__dict__") else []
        for attr, value in items:
            if not isinstance(value, nn.Module) or value is self.root or self._inside_root(value):
                continue
            if DECODER_NAME.search(attr) or DECODER_NAME.search(type(value).__name__):
                methods = ["forward"] + sorted(n for n in dir(type(value)) if n.startswith("decode")
                                               and callable(getattr(type(value), n, None)))
                for m in methods:
                    self.wrapped.wrap(value, m, self._decode_start, self._decode_end, f"decode: {attr}.{m}")
                self.decoders.append(f"{attr} ({type(value).__name__}: {', '.join(methods)})")
        for m in dir(type(owner)):
            if RECACHE_NAME.search(m) and inspect.isfunction(getattr(type(owner), m, None)):
                self.wrapped.wrap(owner, m, self._recache_start, self._recache_end, f"recache: {m}")
                self.recaches.append(f"{type(owner).__name__}.{m}")

    def _inside_root(self, module: nn.Module) -> bool:
        return self.root is not None and any(module is m for m in self.root.modules())

    def sync_op_hooks(self) -> None:
        """Op regions on exactly while the profiler is warming up or recording (block boundaries)."""
        if self.root is None or self.level != "op" or nvtx_enabled():
            return
        want = self.s.profiler.state() != "idle"
        if want and self.op_handle is None:
            self.op_handle = instrument_module(self.root, "op", self.patterns, min_level="op")
        elif not want and self.op_handle is not None:
            self.op_handle.remove()
            self.op_handle = None

    def remove(self) -> None:
        """Everything off again; regions still open (an exception, Ctrl-C) are closed."""
        open_regions = [r for r in [*reversed(self.forward), self.decode_region, self.recache_region, self.block]
                        if r is not None]
        self.forward, self.decode_region, self.recache_region, self.block = [], None, None, None
        op_handle, self.op_handle = self.op_handle, None
        hooks, self._root_hooks = self._root_hooks, []
        steps = [self._stop_finder, *(h.remove for h in hooks), self.handle.remove,
                 *([op_handle.remove] if op_handle is not None else []), self.wrapped.remove,
                 *(functools.partial(r.__exit__, None, None, None) for r in open_regions)]
        _each(steps)

    # -- blocks ---------------------------------------------------------------------------------
    def _open_block(self) -> None:
        s = self.s
        if s._signalled is not None:   # a Ctrl-C the user's code swallowed still ends the run
            raise s._interrupt(s._signalled)
        # the live TUI's hook: waits here while paused (a block boundary of the user's code)
        if s.next_switch is not None and self.block_index and s.next_switch(self.block_index) is not None:
            s._event(RunEvent("note", "prompt switch ignored: a --script run's prompts are its own",
                              {"source": "script"}))
        if s._stop.is_set():           # q in the live TUI: the run ends at this block boundary
            s._stopped = True
            raise Stopped()
        self.sync_op_hooks()           # a window may have opened since (one at block 0: at the start)
        s.clock.profiled_next = s.profiler.state() != "idle" or s._saved_before < len(s.profiler.windows)
        s._saved_before = len(s.profiler.windows)
        self.block = s.observer.region(names.name(names.BLOCK, self.block_index))
        self.block.__enter__()
        self.context_done, self.step, self.last_t = False, 0, None
        self.place, self.block_exact = 0, True
        self.block_frames, self.block_latent, self.block_decoded = None, None, None

    def close_block(self) -> None:
        """The open block is complete: its region ends, the frame clock gets its frames (of its
        own decodes, else those its latent frames make), the profiler its step."""
        if self.block is None:
            return
        s = self.s
        block, self.block = self.block, None
        block.__exit__(None, None, None)
        if self.block_exact:
            self.timesteps.learn(self.step, self.context_done)
        self.timesteps.check()
        decoded_frames, self.block_decoded = self.block_decoded, None
        if decoded_frames is not None:
            frames = decoded_frames
            self.frames_from.add("decode")
        else:
            frames = video_frames(self.block_frames or 1, first_block=self.block_index == 0)
            self.frames_from.add("latent")
        s.observer.block_done(self.block_index, frames, self.prompt_index, self.after_switch)
        s._notify("on_block", types.SimpleNamespace(index=self.block_index, num_frames=frames))
        self.block_index += 1
        self.after_switch = False
        with s._deferred():   # a window opening or being saved is not cut in half
            s.profiler.step()
        self.sync_op_hooks()

    def finish(self) -> None:
        """The user's code returned: the last block is complete."""
        self.close_block()
        self.timesteps.check(wait=True)   # the end of the run: the last copies are confirmed

    def settle(self) -> None:
        """The user's code raised (or was interrupted): a block whose context forward ran, with
        no forward or decode of it still open, is complete; one cut mid-way is not."""
        if self.block is not None and self.context_done and not self.forward and not self.decode_depth:
            self.close_block()
        with contextlib.suppress(Exception):   # a failed device: the run's own error is what counts
            self.timesteps.check(wait=True)

    # -- root calls -----------------------------------------------------------------------------
    def _root_pre(self, module, args, kwargs):
        if not torch.compiler.is_compiling():
            self._root_enter(args, kwargs)

    def _root_post(self, module, args, output):
        if not torch.compiler.is_compiling():
            self._root_leave()

    def _root_enter(self, args: tuple, kwargs: dict) -> None:
        if self.forward or self.recache_depth or self.decode_depth:
            self.forward.append(None)   # nested, or part of a recache / decode: its layers only
            return
        spec = self._spec
        raw = _timestep_arg(spec, args, kwargs) if spec else None
        ts = self.timesteps
        if ts.pending:
            ts.check()   # earlier calls' copies, before this one is classified
        by_fn = self.boundaries.block is not None
        if ts.lazy(raw):   # classified by its place in the block; the value is checked later
            if not by_fn:
                if self.block is not None and ts.predict(self.place) is None:
                    self.close_block()
                if self.block is None:
                    self._open_block()
            clean = bool(ts.predict(self.place))
            t = None
        else:
            t = _timestep_value(raw)
            clean = t is not None and t <= 1e-6
            if not by_fn:
                if not clean and self.block is not None and (
                        self.context_done or (self.last_t is not None and t is not None and t >= self.last_t)):
                    self.close_block()
                if self.block is None:
                    self._open_block()
        if self.block is not None and self.block_frames is None:
            x = _first_tensor(args, kwargs)
            self.block_frames, self.block_latent = _latent_frames(x), x
        name = names.name(names.CONTEXT) if clean else names.name(names.STEP, self.step)
        place = self.place
        self.place += 1
        if not clean:
            self.step += 1
        r = self._regions.get(name)
        if r is None:
            r = self._regions[name] = self.s.observer.region(name)
        r.__enter__()
        self.forward.append(r)
        self.last_t = t
        if clean:
            self.context_done = True
            if self.block_exact:   # the block's pattern is complete: any noisy call next ends it
                ts.learn(self.step, True)
        if t is None and raw is not None:   # predicted: checked once its copy lands (last: a break repairs state)
            self.block_exact = False
            ts.copy(raw, self.block_index, place, clean)

    def _root_leave(self) -> None:
        if not self.forward:
            return
        r = self.forward.pop()
        if r is not None:
            r.__exit__(None, None, None)

    def _timestep_break(self, block: int, place: int, t: float, text: str) -> None:
        """A predicted call was not what its timestep says: if it was the open block's latest,
        its state is put right, so the exact rules close the block where they would have."""
        if block == self.block_index and self.block is not None and place == self.place - 1:
            self.context_done = self.context_done or t <= 1e-6
            self.last_t = t
        self.s._event(RunEvent("note", text, {"source": "script", "block": block, "call": place}))

    # -- decode ---------------------------------------------------------------------------------
    def _decode_start(self, args, kwargs):
        self.decode_depth += 1
        if self.decode_depth > 1:
            return
        x = _first_tensor(args, kwargs)
        own = self.block is not None and (self.block_fn_depth > 0 or (
            self.context_done and x is not None and self.block_latent is not None
            and x.numel() <= self.block_latent.numel()))
        if not own:
            self.close_block()
        self.decode_own = own
        self.decode_region = self.s.observer.region(names.name(names.DECODE))
        self.decode_region.__enter__()
        return

    def _decode_end(self, token, out, ok):
        self.decode_depth -= 1
        if self.decode_depth:
            return
        r, self.decode_region = self.decode_region, None
        if r is not None:
            r.__exit__(None, None, None)
        if self.decode_own:
            self.decode_own = False
            if not ok:
                return   # a decode that raised: its block is not complete
            frames = _video_frames_of(out)
            if frames is not None:
                self.block_decoded = (self.block_decoded or 0) + frames
            if self.block_fn_depth == 0:
                self.close_block()   # detected blocks end with their own decode

    # -- recache --------------------------------------------------------------------------------
    def _recache_start(self, args, kwargs):
        self.recache_depth += 1
        if self.recache_depth > 1:
            return
        self.close_block()
        self.prompt_index += 1
        self.s._script_switch(self.block_index)
        self.s.observer.switch_requested(self.prompt_index, "")
        self.recache_region = self.s.observer.region(names.name(names.RECACHE))
        self.recache_region.__enter__()
        return

    def _recache_end(self, token, out, ok):
        self.recache_depth -= 1
        if self.recache_depth:
            return
        r, self.recache_region = self.recache_region, None
        if r is not None:
            r.__exit__(None, None, None)   # a frame-clock boundary: the next block starts here
        self.after_switch = True

    # -- --block-fn -----------------------------------------------------------------------------
    def _block_fn_start(self, args, kwargs):
        self.block_fn_depth += 1
        if self.block_fn_depth == 1:
            self.close_block()
            self._open_block()

    def _block_fn_end(self, token, out, ok):
        self.block_fn_depth -= 1
        if self.block_fn_depth == 0 and self.block is not None and ok:
            self.close_block()   # frames: of the decodes inside it, else latent-derived


class Stopped(KeyboardInterrupt):
    """Raised into the user's code at a block boundary after `request_stop()` (q in the live
    TUI): it unwinds their code as Ctrl-C would; the run ends "interrupted", reason "stopped"."""


class _Target:
    """What a Session calls its pipeline: meta.json's description of the foreign code."""

    def __init__(self, describe: dict[str, Any], device: torch.device):
        self._describe = describe
        self.device = device
        self.observer = None

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)


def _device_of(obj: Any) -> torch.device:
    for m in ([obj] if isinstance(obj, nn.Module) else [v for v in vars(obj).values() if isinstance(v, nn.Module)]
              if hasattr(obj, "__dict__") else []):
        for p in m.parameters():
            return p.device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class ForeignSession(Session):
    """A Session whose blocks are found in code it does not drive (module doc). `capturing()`
    wraps the user's code; `run_script()` runs a file under it."""

    def __init__(self, describe: dict[str, Any], *, name: str, model: Any = None,
                 patterns: Sequence[tuple[str, str]] = DEFAULT_PATTERNS,
                 boundaries: Boundaries | None = None, **kwargs: Any):
        device = _device_of(model) if model is not None else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        super().__init__(_Target(describe, device), num_blocks=None, prompt=None, patterns=patterns, **kwargs)
        self.name = name
        self.model = model
        self.boundaries = boundaries or Boundaries()
        self.detector: Detector | None = None
        self._saved_before = 0
        self._script_switches: list[int] = []
        self._stopped = False

    def _run_name(self) -> str:
        return self.name

    def _prompts_meta(self) -> dict[str, Any]:
        return {"prompts": None, "switches": {str(b): "" for b in getattr(self, "_script_switches", [])} or None}

    def _script_switch(self, block: int) -> None:
        self._script_switches.append(block)
        self.run_dir.write_meta(**self._prompts_meta())

    def _instrument(self, pipeline: Any) -> InstrumentHandle:
        handle = InstrumentHandle()
        self.detector = Detector(self, patterns=self.patterns, boundaries=self.boundaries,
                                 owners=[self.model] if self.model is not None and
                                 not isinstance(self.model, nn.Module) else [])
        handle._removers.append(self.detector.remove)
        self.detector.install(self.model)
        return handle

    def _finalize(self, status, reason, message, handle, previous_observer, spy, mid_block) -> RunResult:
        d = self.detector
        if self._stopped and status == "interrupted":
            reason = "stopped"
            message = f"stopped after {d.block_index if d is not None else 0} blocks"
        if d is not None:
            try:
                self.run_dir.write_meta(num_blocks=d.block_index, frames_from=sorted(d.frames_from) or None,
                                        **(d.meta or {"root": None}))
            except Exception as exc:  # noqa: BLE001 - the rest of the finalize must run
                self._event(RunEvent("note", f"meta: {exc}", {"source": "finalize"}))
            if d.root is None:
                self._event(RunEvent("note", "no root model was called (no nn.Module forward with a "
                                             f"timestep argument named {', '.join(TIMESTEP_NAMES)})",
                                     {"source": "script"}))
        return super()._finalize(status, reason, message, handle, previous_observer, spy, mid_block)

    @contextlib.contextmanager
    def capturing(self, *, reraise_interrupt: bool = False):
        with super().capturing(reraise_interrupt=reraise_interrupt):
            self.observer.run_started()   # the request: first-frame latency counts from here
            try:
                yield self
            except BaseException:
                self.detector.settle()
                raise
            self.detector.finish()

    def notes(self) -> list[str]:
        """Lines for the summary: how the structure was found, what it could not find."""
        d = self.detector
        out: list[str] = []
        if d is None or d.root is None:
            out.append("no root model found: no nn.Module was called with a timestep argument "
                       f"({', '.join(TIMESTEP_NAMES)}); no blocks")
            return out
        out.append(f"root model: {d.root_name}")
        if d.frames_from == {"latent"} or not d.frames_from:
            out.append("frames are latent-derived (no per-block decode): blocks are timed to their "
                       "context forward" + ("; the video's decode is a run-level ll/decode" if d.decoders else ""))
        if self.regions_level == "op" and not nvtx_enabled():
            out.append("op regions are hooked only inside profiler windows (zero cost elsewhere)")
        return out


def script_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "script"


def check_script(path: str | os.PathLike) -> Path:
    """The script to run: a readable regular file (a FIFO would block runpy forever), else a
    one-line error."""
    p = Path(path)
    if not p.exists():
        raise LltraceError(f"--script {p}: no such file")
    if p.is_dir():
        raise LltraceError(f"--script {p}: is a directory", "give a .py file")
    try:
        with open_regular(p):
            pass
    except LltraceError as exc:
        raise LltraceError(f"--script: {exc}") from None
    return p


def run_script(path: str | os.PathLike, args: Sequence[str] = (), *,
               on_session: Callable[[ForeignSession], None] | None = None, **session_kwargs: Any
               ) -> tuple[RunResult, ForeignSession, BaseException | None]:
    """Run the Python file `path` in this process as `__main__` (sys.argv = [path, *args], its
    directory first on sys.path, as `python path args` does) under a ForeignSession. Returns
    (result, session, error): `error` is the script's own exception (the run directory is
    final, status error), None for a completed or interrupted run. `sys.exit(0)` is a normal
    end. lltrace's own errors (a bad --block-fn) are raised. `on_session(session)` is called
    before the run starts (the live TUI's bridge)."""
    p = check_script(path)
    describe = {"source": "script", "script": {"path": str(p), "args": list(args)}, "preset": None}
    session = ForeignSession(describe, name=script_name(p), **session_kwargs)
    if on_session is not None:
        on_session(session)
    argv, path0 = sys.argv[:], list(sys.path)
    sys.argv = [str(p), *args]
    sys.path.insert(0, str(p.resolve().parent))
    error: BaseException | None = None
    started = False
    try:
        session.boundaries.check()
        with session.capturing():
            started = True
            try:
                runpy.run_path(str(p), run_name="__main__")
            except SystemExit as exc:
                if exc.code not in (None, 0):
                    raise
    except LltraceError:
        if not started:   # lltrace's own (a bad --block-fn), before the script ran
            raise
        error = sys.exc_info()[1]
    except BaseException as exc:  # noqa: BLE001 - the script's: the caller shows it
        error = exc
    finally:
        sys.argv = argv
        sys.path[:] = path0
    return session.result, session, error
