"""Record the aten ops of one call of a stage, with the Python line behind each; diff two calls.

A CUDA graph replays the kernels of one captured call: the same ops, reading the same
addresses, with the same shapes and the scalar arguments of that call baked in. So recording
the dispatcher's ops of two consecutive calls (a TorchDispatchMode) and diffing them predicts
what a replay at the second call would get wrong, on any device, a CPU included:
- an op whose scalar arguments differ (a slice bound, an added int) -> a Python value that
  changes between calls; the Python values visible in the frames running that op (locals and
  attributes of `self` and other objects) are compared too, to name it ("DynamicKVCache.global_end");
- input shapes that differ -> dynamic shapes;
- a tensor that existed before the call (state, parameters, inputs) read at another address
  -> a new allocation where a graph keeps reading the old one;
- a different op sequence -> Python control flow that depends on a changing value.
Single-call hazards are flagged as they happen: host syncs (`.item()`, `int(t)`, `bool(t)`,
data-dependent output shapes, `.tolist()`), host data turned into tensors (`torch.tensor`),
host<->device copies, random ops (RNG).
Hand-written: no library diffs dispatcher traces by source line (torch.compile's guards are
the nearest thing, and compile.py reports those too).
"""
from __future__ import annotations

import hashlib
import linecache
import os
import sys
import sysconfig
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType, FunctionType, MethodType, ModuleType
from typing import Any, Iterable, Iterator, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from lltrace.doctor.report import KINDS, Finding

_LLTRACE_DIR = Path(__file__).resolve().parent.parent          # .../lltrace
_REPO_ROOT = _LLTRACE_DIR.parent
_paths = sysconfig.get_paths()
_SITE = tuple({os.path.join(_paths[k], "") for k in ("purelib", "platlib")})
_STDLIB = tuple({os.path.join(_paths[k], "") for k in ("stdlib", "platstdlib")})
# Frames in these are never "the line responsible": torch itself, the doctor, lltrace's hooks.
_SKIP_DIRS = (os.path.join(os.path.dirname(torch.__file__), ""),
              os.path.join(str(_LLTRACE_DIR / "doctor"), ""),
              os.path.join(str(_LLTRACE_DIR / "capture"), ""))
VALUE_FRAMES = 1      # innermost user frames whose Python values are compared (outer ones blame unrelated values)
MAX_FRAMES = 12
_SYNC_WARNING = "synchronizing CUDA operation"
_HOST_READ_APIS = {"tolist": ".tolist()", "numpy": ".numpy()"}


def _tag(name: str):
    return getattr(torch.Tag, name, None)


_TAG_DATA_DEP = _tag("data_dependent_output")
_TAG_DYN_SHAPE = _tag("dynamic_output_shape")
_TAG_RNG = _tag("nondeterministic_seeded")
_TAG_GRAPH_UNSAFE = _tag("cudagraph_unsafe")


def display_path(filename: str) -> str:
    """A file name as a report shows it: relative to the checkout or the working directory."""
    p = Path(filename)
    for base in (_REPO_ROOT, Path.cwd()):
        try:
            return p.resolve().relative_to(base.resolve()).as_posix()
        except (ValueError, OSError):
            continue
    return filename


def is_user_file(filename: str) -> bool:
    """Code whose lines a report points at: not torch, the standard library or the doctor."""
    if filename.startswith("<"):
        return False
    if filename.startswith(_SKIP_DIRS):
        return False
    return not (filename.startswith(_STDLIB) and not filename.startswith(_SITE))


class FrameInfo(NamedTuple):
    file: str
    line: int
    func: str

    @property
    def where(self) -> str:
        return f"{display_path(self.file)}:{self.line}"

    @property
    def code(self) -> str:
        return linecache.getline(self.file, self.line).strip()


class TensorId(NamedTuple):
    """A tensor attribute as a value: changes when it is rebound to a new tensor."""
    ptr: int
    shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"tensor{list(self.shape)}@{self.ptr:#x}"


@dataclass
class TensorLeaf:
    shape: tuple[int, ...]
    dtype: str
    device: str
    ptr: int | None
    external: bool      # existed before the call (state, parameter, input), not made by it
    storage: int | None = None

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


@dataclass
class OpRecord:
    name: str
    leaves: list[tuple[str, Any]]           # (argument name, TensorLeaf | Python value)
    frames: tuple[FrameInfo, ...]           # innermost user frame first
    module: str | None
    values: dict[str, Any]                  # Python values visible where it ran (label -> value)
    flags: frozenset[str] = frozenset()     # sync, rng, rng_explicit, host_data, h2d, d2h, graph_unsafe
    digest: str | None = None               # contents of host data (torch.tensor)

    @property
    def top(self) -> FrameInfo | None:
        return self.frames[0] if self.frames else None


@dataclass
class HostRead:
    api: str
    frames: tuple[FrameInfo, ...]
    module: str | None


@dataclass
class Recording:
    ops: list[OpRecord] = field(default_factory=list)
    host_reads: list[HostRead] = field(default_factory=list)
    keep: list[torch.Tensor] = field(default_factory=list, repr=False)   # tensors read, kept alive
    _produced: set[int] = field(default_factory=set, repr=False)
    _external: set[int] = field(default_factory=set, repr=False)


# --------------------------------------------------------------------------- recording
def _storage_key(t: torch.Tensor) -> int | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:  # tensor subclasses, meta tensors
        return None
    return ptr or None


def _data_ptr(t: torch.Tensor) -> int | None:
    try:
        return t.data_ptr()
    except Exception:
        return None


def _is_scalar(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    return isinstance(v, tuple) and 0 < len(v) <= 8 and all(isinstance(x, (bool, int, float)) for x in v)


_OPAQUE = (torch.Tensor, nn.Parameter, ModuleType, type, FunctionType, MethodType, CodeType, FrameType)


def _frame_values(frames: list[FrameType]) -> dict[str, Any]:
    """Python values in the innermost user frames: scalars and tensors (as TensorId) held in
    locals, and in the attributes (and registered buffers) of objects held in locals."""
    out: dict[str, Any] = {}
    seen: set[int] = set()

    def put(label: str, v: Any) -> None:
        if _is_scalar(v):
            out.setdefault(label, v)
        elif isinstance(v, torch.Tensor):
            ptr = _data_ptr(v)
            if ptr is not None:
                out.setdefault(label, TensorId(ptr, tuple(v.shape)))

    for f in frames[:VALUE_FRAMES]:
        func = getattr(f.f_code, "co_qualname", f.f_code.co_name)
        for name, v in list(f.f_locals.items()):
            try:
                if _is_scalar(v) or isinstance(v, torch.Tensor):
                    put(f"{func}: {name}", v)
                elif not isinstance(v, _OPAQUE) and id(v) not in seen and hasattr(v, "__dict__"):
                    seen.add(id(v))
                    owner = type(v).__name__
                    attrs = list(vars(v).items())
                    if isinstance(v, nn.Module):   # registered buffers live in _buffers, not in __dict__
                        attrs += list(v._buffers.items())
                    for attr, av in attrs:
                        if not attr.startswith("__"):
                            put(f"{owner}.{attr}", av)
            except Exception:  # exotic objects (proxies, lazy configs): their values are not needed
                continue
    return out


class _Stack:
    """The user frames of the current Python stack, up to the stage's entry (the boundary)."""

    def __init__(self, boundary: Iterable[CodeType]):
        self.boundary = set(boundary)

    def frames(self) -> list[FrameType]:
        out = []
        f = sys._getframe(2)
        depth = 0
        while f is not None and depth < 200:
            if f.f_code in self.boundary:
                break
            if is_user_file(f.f_code.co_filename):
                out.append(f)
                if len(out) >= MAX_FRAMES:
                    break
            f = f.f_back
            depth += 1
        return out


def _info(frames: list[FrameType]) -> tuple[FrameInfo, ...]:
    return tuple(FrameInfo(f.f_code.co_filename, f.f_lineno, getattr(f.f_code, "co_qualname", f.f_code.co_name))
                 for f in frames)


def _named_leaves(func, args, kwargs) -> list[tuple[str, Any]]:
    try:
        names = [a.name for a in func._schema.arguments]
    except Exception:
        names = []
    out: list[tuple[str, Any]] = []

    def add(name, v):
        if isinstance(v, (list, tuple)):
            for j, x in enumerate(v):
                add(f"{name}[{j}]", x)
        else:
            out.append((name, v))

    for i, a in enumerate(args):
        add(names[i] if i < len(names) else f"arg{i}", a)
    for k, v in kwargs.items():
        add(k, v)
    return out


def _digest(t: torch.Tensor) -> str | None:
    try:
        if t.numel() > 1 << 20:
            return None
        return hashlib.blake2b(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes(),
                               digest_size=8).hexdigest()
    except Exception:
        return None


def _data_dependent_shape(name: str, leaves: list[tuple[str, Any]]) -> bool:
    """Ops tagged dynamic_output_shape whose output shape really depends on the data: indexing
    only with boolean masks (integer indices give a static shape)."""
    if name == "aten.index":
        return any(isinstance(v, torch.Tensor) and v.dtype in (torch.bool, torch.uint8)
                   for n, v in leaves if n.startswith("indices"))
    return True


def _draws_random(func, leaves: list[tuple[str, Any]]) -> bool:
    """Ops tagged nondeterministic_seeded that draw nothing: attention/dropout with p = 0, eval mode."""
    given = {n for n, _ in leaves}
    try:  # arguments left at their schema default
        defaults = [(a.name, a.default_value) for a in func._schema.arguments
                    if a.name not in given and a.has_default_value()]
    except Exception:
        defaults = []
    for n, v in list(leaves) + defaults:
        if n in ("dropout_p", "p") and isinstance(v, (int, float)) and v == 0:
            return False
        if n == "train" and v is False:
            return False
    return True


class _DispatchRecorder(TorchDispatchMode):
    def __init__(self, rec: Recording, stack: _Stack, modules: "_ModuleTracker", catch_sync_warnings: bool):
        super().__init__()
        self.rec, self.stack, self.modules, self.catch_sync = rec, stack, modules, catch_sync_warnings

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = self.rec
        raw = _named_leaves(func, args, kwargs)
        leaves: list[tuple[str, Any]] = []
        in_devices = set()
        for name, v in raw:
            if isinstance(v, torch.Tensor):
                key = _storage_key(v)
                external = key is not None and key not in rec._produced
                if external:
                    if key not in rec._external:
                        rec.keep.append(v)
                    rec._external.add(key)
                leaves.append((name, TensorLeaf(tuple(v.shape), str(v.dtype).removeprefix("torch."),
                                                v.device.type, _data_ptr(v), external, key)))
                if v.numel() > 1 or v.dim() > 0:
                    in_devices.add(v.device.type)
            elif isinstance(v, torch.Generator):
                leaves.append((name, "<generator>"))
            elif isinstance(v, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
                leaves.append((name, str(v)))
            elif _is_scalar(v) or isinstance(v, (torch.SymInt, torch.SymFloat)):
                leaves.append((name, v))
            else:
                leaves.append((name, type(v).__name__))

        frames = self.stack.frames()
        if self.catch_sync:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = func(*args, **kwargs)
            synced = any(_SYNC_WARNING in str(w.message) for w in caught)
        else:
            out = func(*args, **kwargs)
            synced = False

        out_devices = set()
        for o in (out if isinstance(out, (list, tuple)) else (out,)):
            if isinstance(o, torch.Tensor):
                key = _storage_key(o)
                if key is not None and key not in rec._external:
                    rec._produced.add(key)
                out_devices.add(o.device.type)

        tags = set(getattr(func, "tags", ()))
        flags = set()
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        if synced or (_TAG_DATA_DEP in tags) or (_TAG_DYN_SHAPE in tags and _data_dependent_shape(name, raw)):
            flags.add("sync")
        if _TAG_GRAPH_UNSAFE is not None and _TAG_GRAPH_UNSAFE in tags:
            flags.add("graph_unsafe")
        if _TAG_RNG in tags and _draws_random(func, raw):
            flags.add("rng")
            if isinstance(kwargs.get("generator"), torch.Generator) or any(
                    isinstance(a, torch.Generator) for a in args):
                flags.add("rng_explicit")
        if "cuda" in out_devices and "cpu" in in_devices:
            flags.add("h2d")
        if "cpu" in out_devices and "cuda" in in_devices:
            flags.add("d2h")
        digest = None
        if name in ("aten.lift_fresh", "aten.lift_fresh_copy"):
            flags.add("host_data")
            if args and isinstance(args[0], torch.Tensor):
                digest = _digest(args[0])
                key = _storage_key(args[0])
                if key is not None:   # made from Python data in this call: not state
                    rec._external.discard(key)
                    rec._produced.add(key)
        rec.ops.append(OpRecord(name, leaves, _info(frames), self.modules.current(), _frame_values(frames),
                                frozenset(flags), digest))
        return out


class _FunctionRecorder(TorchFunctionMode):
    """Host reads that never reach the dispatcher (`.tolist()`, `.numpy()`)."""

    def __init__(self, rec: Recording, stack: _Stack, modules: "_ModuleTracker"):
        super().__init__()
        self.rec, self.stack, self.modules = rec, stack, modules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        api = _HOST_READ_APIS.get(getattr(func, "__name__", ""))
        if api is not None:
            self.rec.host_reads.append(HostRead(api, _info(self.stack.frames()), self.modules.current()))
        return func(*args, **(kwargs or {}))


class _ModuleTracker:
    """The qualified name of the innermost running module, via global forward hooks
    (the pattern lltrace.capture.hooks uses, for every module of the given roots)."""

    def __init__(self, roots: dict[str, nn.Module]):
        self.names: dict[int, str] = {}
        for prefix, root in roots.items():
            for qual, m in root.named_modules():
                self.names.setdefault(id(m), ".".join(x for x in (prefix, qual) if x) or type(m).__name__)
        self.stack: list[int] = []

    def current(self) -> str | None:
        return self.names.get(self.stack[-1]) if self.stack else None

    @contextmanager
    def active(self) -> Iterator[None]:
        if not self.names:
            yield
            return
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        def pre(module, args):
            if id(module) in self.names:
                self.stack.append(id(module))

        def post(module, args, output):
            if self.stack and self.stack[-1] == id(module):
                self.stack.pop()

        h1 = register_module_forward_pre_hook(pre)
        h2 = register_module_forward_hook(post, always_call=True)
        try:
            yield
        finally:
            h1.remove()
            h2.remove()
            self.stack.clear()


class OpRecorder:
    """`with recorder.record() as rec: stage(...)` records the ops of that call.

    `roots`: modules whose submodule names label the ops ({"": model} or {"generator": g}).
    `boundary`: code objects where the stage is entered; the stack walk stops there.
    `cuda_sync_debug`: also catch the syncs CUDA's sync debug mode reports (CUDA only).
    """

    def __init__(self, roots: dict[str, nn.Module] | None = None, boundary: Iterable[CodeType] = (),
                 cuda_sync_debug: bool = False):
        self.modules = _ModuleTracker(roots or {})
        self.stack = _Stack(boundary)
        self.cuda_sync_debug = cuda_sync_debug and torch.cuda.is_available()

    @contextmanager
    def record(self) -> Iterator[Recording]:
        rec = Recording()
        with ExitStack() as es:
            if self.cuda_sync_debug:
                prev = torch.cuda.get_sync_debug_mode()
                torch.cuda.set_sync_debug_mode("warn")
                es.callback(torch.cuda.set_sync_debug_mode, prev)
            es.enter_context(self.modules.active())
            es.enter_context(_FunctionRecorder(rec, self.stack, self.modules))
            es.enter_context(_DispatchRecorder(rec, self.stack, self.modules, self.cuda_sync_debug))
            yield rec


# --------------------------------------------------------------------------- comparing
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _changed(a: dict[str, Any], b: dict[str, Any], tensors: bool) -> list[tuple[str, Any, Any]]:
    out = []
    for label, va in a.items():
        if label not in b:
            continue
        vb = b[label]
        if isinstance(va, TensorId) != tensors:
            continue
        try:
            differs = bool(va != vb)
        except Exception:
            differs = False
        if differs:
            out.append((label, va, vb))
    return out


class _Findings:
    """Findings keyed by (kind, where, subject): repeated sightings count instead of repeating."""

    def __init__(self):
        self.items: dict[tuple, Finding] = {}
        self.counting = True   # off while a second call repeats the first one's single-call findings

    def add(self, kind: str, subject: str, message: str, op: OpRecord | HostRead | None, blocking: bool = True):
        top = op.frames[0] if op is not None and op.frames else None
        key = (kind, subject)
        f = self.items.get(key)
        if f is not None:
            if self.counting:
                f.count += 1
            return
        self.items[key] = Finding(kind, message, top.where if top else None, top.code if top else None,
                                  blocking, getattr(op, "module", None))

    def sorted(self) -> list[Finding]:
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(self.items.values(), key=lambda f: (not f.blocking, order.get(f.kind, 99)))


def _single_call(rec: Recording, found: _Findings, device_is_cuda: bool) -> None:
    for op in rec.ops:
        top = op.top
        at = top.where if top else op.name
        if "sync" in op.flags:
            what = {"aten._local_scalar_dense": "reads a tensor value on the host (.item() / int() / bool())",
                    "aten.nonzero": "has a data-dependent output shape (nonzero)"}.get(
                op.name, f"synchronizes with the host ({op.name})")
            found.add("host_sync", f"sync@{at}", f"host sync: {what}", op)
        if "graph_unsafe" in op.flags:
            found.add("capture", f"unsafe@{at}", f"{op.name} is tagged cudagraph_unsafe", op)
        if "d2h" in op.flags:
            found.add("host_sync", f"d2h@{at}", f"device->host copy ({op.name}): a host sync", op)
        if "h2d" in op.flags:
            found.add("cpu_tensor", f"h2d@{at}",
                      f"a CPU tensor feeds a CUDA op ({op.name}): a graph replays the copy of the first "
                      "call's host memory", op)
        if "rng" in op.flags:
            if "rng_explicit" in op.flags:
                found.add("rng", f"rng@{at}",
                          f"random op {op.name} with its own torch.Generator: graph-safe only if the "
                          "generator is registered (graph.register_generator_state) or the noise is "
                          "drawn outside the graph", op, blocking=False)
            else:
                found.add("rng", f"rng@{at}",
                          f"random op {op.name} on the default generator: graph-safe on CUDA "
                          "(replays advance the Philox offset)", op, blocking=False)
    for hr in rec.host_reads:
        top = hr.frames[0] if hr.frames else None
        note = "" if device_is_cuda else " (on CUDA: a host sync)"
        found.add("host_sync", f"read@{top.where if top else hr.api}",
                  f"host read: {hr.api} copies a tensor to Python{note}", hr)


def compare_recordings(a: Recording, b: Recording, *, device_is_cuda: bool = False) -> list[Finding]:
    """Findings of one call (`a`) and of what differs at the next call (`b`): see the module doc."""
    found = _Findings()
    _single_call(a, found, device_is_cuda)
    found.counting = False
    _single_call(b, found, device_is_cuda)
    found.counting = True

    culprits: dict[str, str] = {}     # Python value label -> the line it was first seen changing at
    by_line: dict[str, tuple[OpRecord, list]] = {}
    line_ops: dict[str, int] = {}
    n = min(len(a.ops), len(b.ops))
    diverge = next((i for i in range(n) if a.ops[i].name != b.ops[i].name), n)
    for i in range(diverge):
        oa, ob = a.ops[i], b.ops[i]
        if "host_data" in oa.flags and oa.digest != ob.digest:
            found.add("host_data", f"hostdata@{oa.top.where if oa.top else i}",
                      "host data (torch.tensor) changes between calls: a graph keeps the first call's "
                      "values; build it outside the stage and copy it into a static input", oa)
        scalar_diffs, shape_diffs, addr_diffs = [], [], []
        if len(oa.leaves) != len(ob.leaves):
            scalar_diffs.append(("arguments", len(oa.leaves), len(ob.leaves)))
        for (name, va), (_, vb) in zip(oa.leaves, ob.leaves):
            if "host_data" in oa.flags:
                break   # a fresh tensor from Python data: judged by its contents above
            if isinstance(va, TensorLeaf) and isinstance(vb, TensorLeaf):
                if va.shape != vb.shape or va.dtype != vb.dtype or va.device != vb.device:
                    shape_diffs.append((name, va, vb))
                elif va.external and vb.external and va.ptr != vb.ptr:
                    addr_diffs.append((name, va, vb))
            elif isinstance(va, TensorLeaf) != isinstance(vb, TensorLeaf):
                scalar_diffs.append((name, va, vb))
            else:
                try:
                    differs = bool(va != vb)
                except Exception:
                    differs = False
                if differs:
                    scalar_diffs.append((name, va, vb))
        if not (scalar_diffs or shape_diffs or addr_diffs):
            continue
        named = _changed(oa.values, ob.values, tensors=False)
        at = oa.top.where if oa.top else oa.name
        fresh = [(label, va, vb) for label, va, vb in named if label not in culprits]
        for label, va, vb in fresh:
            culprits[label] = at
        if fresh:
            by_line.setdefault(at, (oa, []))[1].extend(fresh)
        if named:
            line_ops[at] = line_ops.get(at, 0) + 1
        if scalar_diffs and not named:
            name, va, vb = scalar_diffs[0]
            found.add("python_scalar", f"scalar@{at}",
                      f"{oa.name} gets a different {name} ({_fmt(va)} -> {_fmt(vb)}): "
                      "a graph keeps the first call's value", oa)
        if shape_diffs:
            name, va, vb = shape_diffs[0]
            found.add("shape", f"shape@{at}",
                      f"shape changes between calls: {oa.name} {name} {va} -> {vb}", oa)
        if addr_diffs:
            name, va, vb = addr_diffs[0]
            # The variable holding that tensor (a local, or an attribute rebound to a new tensor).
            names = [label for label, x, y in _changed(oa.values, ob.values, tensors=True)
                     if x.ptr == va.ptr and y.ptr == vb.ptr][:3]
            who = f" ({', '.join(names)}: a new tensor)" if names else ""
            if va.storage is not None and va.storage == vb.storage:
                msg = (f"{oa.name} uses {name} at another offset of the same buffer (a slice by a changing "
                       "index): a graph keeps using the first call's slice")
            else:
                msg = (f"{oa.name} uses {name} at another address than in the last call{who}: "
                       "a graph keeps using the old one")
            found.add("address", f"addr@{at}", msg, oa)
    for at, (op, values) in by_line.items():
        # Attributes (state kept across calls) before locals derived from them.
        values.sort(key=lambda v: ": " in v[0])
        shown = [f"{label} ({_fmt(va)} -> {_fmt(vb)})" for label, va, vb in values[:4]]
        more = f" and {len(values) - 4} more" if len(values) > 4 else ""
        found.add("python_scalar", f"values@{at}",
                  f"{shown[0].replace(' (', ' changes between calls (', 1)}"
                  + (f"; also {', '.join(shown[1:])}{more}" if len(shown) > 1 else "")
                  + ": a graph keeps the first call's values", op)
        found.items[("python_scalar", f"values@{at}")].count = line_ops.get(at, 1)
    if diverge < max(len(a.ops), len(b.ops)):
        oa = a.ops[diverge] if diverge < len(a.ops) else None
        ob = b.ops[diverge] if diverge < len(b.ops) else None
        def desc(o):
            return "nothing" if o is None else f"{o.name} at {o.top.where if o.top else '?'}"
        named = _changed(oa.values, ob.values, tensors=False) if oa is not None and ob is not None else []
        why = "; values that changed there: " + ", ".join(
            f"{l} ({_fmt(x)} -> {_fmt(y)})" for l, x, y in named[:3]) if named else ""
        found.add("control_flow", "diverge",
                  f"the calls run different ops from op #{diverge} ({len(a.ops)} vs {len(b.ops)} ops): "
                  f"first {desc(oa)}, then {desc(ob)}{why}", oa or ob)
    return found.sorted()
