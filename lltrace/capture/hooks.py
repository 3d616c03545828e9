"""Put layer- and op-level regions on any nn.Module by module-name pattern (forward hooks).

The same instrumentation works on lltrace's own CausalWanModel and on someone else's LongLive
model object: patterns match the *end* of a module's qualified name, so `blocks.{k}` matches
`blocks.3` and `model.blocks.3` alike.

Pattern syntax (one pattern = dot-separated segments, matched against the last segments of
the name): `{k}` an integer index, captured for the region template; `*` any one segment;
`a|b|c` any of these names; anything else literally.

torch.compile: a hook on a module *inside* a compiled module would be traced by dynamo; the
hooks turn themselves off while compiling, and instrument_module does not install op-level
hooks inside compiled modules at all (inductor fuses across their boundaries, so the region
would not mean what it says). A compiled module itself still gets its region: hooks on an
`OptimizedModule` wrapper run eagerly, for `Module.compile()` (in place) the compiled call is
wrapped, and a module whose methods were compiled (regional compile) is called eagerly.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from lltrace.capture import regions
from lltrace.capture.patterns import DEFAULT_PATTERNS, check_patterns, first_match
from lltrace.capture.regions import LEVELS, Region, check_level, enabled_at, level_of
from lltrace.errors import LltraceError

_COMPILED_WRAPPER = "_orig_mod"  # torch.compile(module) keeps the original under this name
_is_compiling = torch.compiler.is_compiling
_profiler_on = torch._C._autograd._profiler_enabled
LEVEL_RANK = {lv: i for i, lv in enumerate(LEVELS)}


@dataclass
class InstrumentHandle:
    """What was instrumented; `remove()` takes every hook and wrapper off again."""

    installed: list[tuple[str, str]] = field(default_factory=list)  # (module name, region)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (module name, why)
    _removers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def add(self, other: "InstrumentHandle") -> "InstrumentHandle":
        self.installed += other.installed
        self.skipped += other.skipped
        self._removers += other._removers
        other._removers = []
        return self

    def remove(self) -> None:
        while self._removers:
            self._removers.pop()()

    def __enter__(self) -> "InstrumentHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _below(norm: str, root: str) -> bool:
    return norm.startswith(root + ".") if root else norm != ""


def _normalize(qualname: str) -> str:
    return ".".join(s for s in qualname.split(".") if s != _COMPILED_WRAPPER)


def _is_wrapper(module: nn.Module) -> bool:
    return type(module).__name__ == "OptimizedModule" and hasattr(module, _COMPILED_WRAPPER)


def _compiled_in_place(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def _has_compiled_methods(module: nn.Module) -> bool:
    """torch.compile'd methods set on the instance (lltrace's regional compile of a block's
    halves): dynamo traces the submodules they call, hooks included, and guards on each hook's
    id, so a hook in there recompiles the shared code for every layer. The module's own call is
    eager: its hooks are fine."""
    return any(callable(v) and hasattr(v, "_torchdynamo_orig_callable") for v in vars(module).values())


def _validate_patterns(patterns: Sequence[tuple[str, str]]) -> None:
    check_patterns(patterns)


def _hooks(name: str):
    """Pre/post forward hooks opening and closing region `name`; a per-thread stack pairs them.
    When nothing records (no profiler, no nsys) they only push/pop a None: ~1 us less per module."""
    local = threading.local()

    def pre(module, args):
        if _is_compiling():
            return None
        r = Region(name).__enter__() if (regions._nvtx_on or _profiler_on()) else None
        try:
            local.stack.append(r)
        except AttributeError:
            local.stack = [r]
        return None

    def post(module, args, output):
        if _is_compiling():
            return None
        stack = getattr(local, "stack", None)
        if stack:
            r = stack.pop()
            if r is not None:
                r.__exit__(None, None, None)
        return None

    return pre, post


def _install(module: nn.Module, qualname: str, name: str, handle: InstrumentHandle) -> None:
    if _compiled_in_place(module):
        # Module.compile() compiles _call_impl, hooks included: wrap the compiled call instead.
        compiled = module._compiled_call_impl

        @functools.wraps(compiled)
        def call(*args, **kwargs):
            with Region(name):
                return compiled(*args, **kwargs)

        module._compiled_call_impl = call

        def restore(module=module, compiled=compiled, call=call):
            if module._compiled_call_impl is call:
                module._compiled_call_impl = compiled

        handle._removers.append(restore)
    elif "forward" not in vars(module) and not _is_wrapper(module):
        # The module's own forward, wrapped on the instance: nn.Module keeps its fast path (no
        # hooks: measured ~6 us less per call than a pre/post hook pair when nothing records,
        # which host-bound code calling .item() per layer pays in full, issue #15).
        forward = module.forward

        @functools.wraps(forward)
        def wrapped(*args, **kwargs):
            if _is_compiling() or not (regions._nvtx_on or _profiler_on()):
                return forward(*args, **kwargs)
            with Region(name):
                return forward(*args, **kwargs)

        module.forward = wrapped

        def unwrap(module=module, wrapped=wrapped):
            if vars(module).get("forward") is wrapped:
                del module.forward

        handle._removers.append(unwrap)
    else:
        # a forward set on the instance (a compiled wrapper, a regionally compiled block that
        # others look up by identity): hooks leave it as it is
        pre, post = _hooks(name)
        h1 = module.register_forward_pre_hook(pre)
        h2 = module.register_forward_hook(post, always_call=True)  # closes the range on exceptions too
        handle._removers += [h1.remove, h2.remove]
    handle.installed.append((qualname, name))


def instrument_module(model: nn.Module, level: str = "op",
                      patterns: Sequence[tuple[str, str]] = DEFAULT_PATTERNS, *,
                      min_level: str = "block") -> InstrumentHandle:
    """Install region hooks on the submodules of `model` whose names match `patterns`.

    Only regions enabled at `level` ("off" | "block" | "layer" | "op") and not already at a
    level below `min_level` are installed (`level="op", min_level="op"`: the op regions alone,
    which lltrace.capture.script puts on only while a profiler window is open); the first
    matching pattern wins; a module whose ancestor already has the same region is skipped
    (e.g. Wan's `head.head` inside `head`). Returns a handle listing what was installed and
    skipped; `handle.remove()` undoes it.
    """
    check_level(level)
    check_level(min_level)
    _validate_patterns(patterns)
    handle = InstrumentHandle()
    if level == "off":
        return handle
    compiled_roots: list[str] = []   # normalized names of compiled modules
    regions_at: dict[str, str] = {}  # normalized name -> region installed there
    for qualname, module in model.named_modules():
        if qualname.split(".")[-1] == _COMPILED_WRAPPER:
            continue  # the same module as its OptimizedModule wrapper, which gets the hooks
        norm = _normalize(qualname)
        match = first_match(patterns, norm)
        if any(_below(norm, root) for root in compiled_roots):
            if match is not None and enabled_at(match, level):
                handle.skipped.append((qualname, "inside a torch.compile'd module: inductor fuses "
                                                 "across its boundaries, so no region is put here"))
            continue
        if _is_wrapper(module) or _compiled_in_place(module) or _has_compiled_methods(module):
            compiled_roots.append(norm)
        if match is None or not enabled_at(match, level):
            continue
        if LEVEL_RANK[level_of(match)] < LEVEL_RANK[min_level]:
            continue  # below the asked-for range: a caller installs that part separately
        segs = norm.split(".")
        if match in (regions_at.get(".".join(segs[:i])) for i in range(len(segs))):
            continue  # an ancestor already opens this region (Wan's head.head inside head)
        _install(module, qualname, match, handle)
        regions_at[norm] = match
    return handle


def set_attr(obj: object, attr: str, value: Any) -> Callable[[], None]:
    """Set `obj.attr = value`; returns the undo: the object's own previous value back, or the
    attribute deleted when it had none of its own (so a class attribute shows through again)."""
    own = vars(obj) if hasattr(obj, "__dict__") else {}
    had_own, previous = attr in own, own.get(attr)
    setattr(obj, attr, value)

    def restore() -> None:
        if had_own:
            setattr(obj, attr, previous)
        else:
            delattr(obj, attr)
    return restore


def wrap_method(obj: object, attr: str, name: str, level: str = "op") -> InstrumentHandle:
    """Wrap `obj.attr` (a method of an object or of a class) in region `name`.

    For cache writes that are not modules, e.g. `wrap_method(kv_cache, "update", "ll/kv_update")`.
    """
    check_level(level)
    handle = InstrumentHandle()
    if not enabled_at(name, level):
        return handle
    original = getattr(obj, attr, None)
    if not callable(original):
        raise LltraceError(f"cannot instrument {type(obj).__name__}.{attr}: not a method")
    target = original
    if isinstance(obj, type):
        # On a class, wrap the plain function so that `self` is passed through.
        target = obj.__dict__.get(attr, original)
        if isinstance(target, (staticmethod, classmethod)):
            raise LltraceError(f"cannot instrument {obj.__name__}.{attr}: static/class methods are not supported")

    @functools.wraps(target)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():
            return target(*args, **kwargs)
        with Region(name):
            return target(*args, **kwargs)

    if getattr(target, "_torchdynamo_disable", False):
        # Kept out of compiled regions on purpose (e.g. the KV-cache update under regional
        # compile): keep the wrapper out too, so it runs eagerly and its region is recorded.
        wrapper = torch.compiler.disable(wrapper, recursive=True)
    handle._removers.append(set_attr(obj, attr, wrapper))
    owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    handle.installed.append((f"{owner}.{attr}", name))
    return handle


def instrument_all(objs: Iterable[object], attr: str, name: str, level: str = "op") -> InstrumentHandle:
    """wrap_method on each object (e.g. one KV cache per layer)."""
    handle = InstrumentHandle()
    for obj in objs:
        handle.add(wrap_method(obj, attr, name, level))
    return handle
