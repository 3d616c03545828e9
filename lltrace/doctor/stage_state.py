"""Snapshot and restore the state a stage mutates, keeping every tensor at its address.

The doctor runs a stage more than once at one position (a capture attempt, a replay, a
compiled run, then the real call), so each extra run must leave the state as it found it:
KV-cache buffers and positions, cross-attention cache, decoder feature caches, Python flags.
Tensors are restored in place (`copy_`), never replaced: a captured graph keeps reading the
addresses it saw. Python attributes, lists and dicts are put back as they were (the same
objects). Parameters are not saved (inference does not change them).
Hand-written: torch has no snapshot of arbitrary Python object graphs holding tensors.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

MAX_DEPTH = 4
# nn.Module bookkeeping that inference never changes (hooks, parameters, the module tree itself)
_MODULE_INTERNALS = {"_parameters", "_modules", "_non_persistent_buffers_set", "_backward_pre_hooks",
                     "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
                     "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
                     "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks", "_is_full_backward_hook", "_compiled_call_impl"}
_LEAF_TYPES = (str, bytes, int, float, bool, type(None), torch.dtype, torch.device)


class StateSnapshot:
    """`snap = StateSnapshot([kv_cache, decoder]); ...; snap.restore()` (restorable many times)."""

    def __init__(self, roots: Iterable[Any]):
        self._attrs: list[tuple[Any, str, Any]] = []          # (object, attribute, value)
        self._lists: list[tuple[list, list]] = []
        self._dicts: list[tuple[dict, dict]] = []
        self._tensors: list[tuple[torch.Tensor, torch.Tensor]] = []  # (live tensor, saved clone)
        self._generators: list[tuple[torch.Generator, torch.Tensor]] = []
        self._seen: set[int] = set()
        for r in roots:
            self._visit(r, 0)

    def _visit(self, v: Any, depth: int) -> None:
        if isinstance(v, _LEAF_TYPES) or id(v) in self._seen or depth > MAX_DEPTH:
            return
        self._seen.add(id(v))
        if isinstance(v, nn.Parameter):
            return
        if isinstance(v, torch.Tensor):
            if v.device.type != "meta":
                self._tensors.append((v, v.detach().clone()))
            return
        if isinstance(v, torch.Generator):
            self._generators.append((v, v.get_state()))
            return
        if isinstance(v, list):
            self._lists.append((v, list(v)))
            for x in v:
                self._visit(x, depth + 1)
            return
        if isinstance(v, tuple):
            for x in v:
                self._visit(x, depth + 1)
            return
        if isinstance(v, dict):
            self._dicts.append((v, dict(v)))
            for x in v.values():
                self._visit(x, depth + 1)
            return
        if isinstance(v, nn.Module):
            for m in v.modules():  # every submodule's own state (buffers, Python attributes)
                self._seen.add(id(m))
                self._object(m, depth, module=True)
            return
        if hasattr(v, "__dict__") and not callable(v):
            self._object(v, depth, module=False)

    def _object(self, obj: Any, depth: int, module: bool) -> None:
        for k, val in list(vars(obj).items()):
            if module and k in _MODULE_INTERNALS:
                continue
            if module and k == "_buffers":
                self._dicts.append((val, dict(val)))
                for b in val.values():
                    if isinstance(b, torch.Tensor) and id(b) not in self._seen:
                        self._seen.add(id(b))
                        self._tensors.append((b, b.detach().clone()))
                continue
            if callable(val) and not isinstance(val, (nn.Module, torch.Tensor)):
                continue  # bound methods, functions (e.g. a wrapped update): not state
            self._attrs.append((obj, k, val))
            self._visit(val, depth + 1)

    @torch.no_grad()
    def restore(self) -> None:
        for obj, k, val in self._attrs:
            try:
                setattr(obj, k, val)
            except AttributeError:  # read-only property
                pass
        for live, saved in self._lists:
            live[:] = saved
        for live, saved in self._dicts:
            live.clear()
            live.update(saved)
        for live, saved in self._tensors:
            if live.shape != saved.shape:
                continue
            if live.is_inference() and not torch.is_inference_mode_enabled():
                with torch.inference_mode():
                    live.copy_(saved)
            else:
                live.copy_(saved)
        for gen, state in self._generators:
            gen.set_state(state)

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for _, s in self._tensors)
