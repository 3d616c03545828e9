"""Which module each torch.compile'd kernel came from, recorded in-process while the run compiles.

Inductor's provenance tracking (the artifacts tlparse shows) maps every kernel it generates or
calls (`triton_poi_fused_add_0:1`, `extern_kernels.mm:2`: name and debug handle, in the order
the compiled wrapper calls them) to the post-grad FX nodes it computes, and those back to
the pre-grad (dynamo) nodes. A pre-grad node carries `nn_module_stack`: the module call path
that produced it. This recorder joins the two, per compile id (`0/0`, the id that the trace's
`Torch-Compiled Region: 0/0` range names), and writes `provenance.json` into the run directory
(docs/FORMATS.md §2): for each kernel, the modules of its nodes with their node counts. Which
region a kernel is credited to is decided when the trace is read (lltrace.trace.compiled).

Only what no library does is written here: the join. The sources are inductor's own
(`config.trace.provenance_tracking_level`, the `torch.__trace` structured log, a pre-grad
custom pass to read the nodes' module stacks). Compile-time cost only; nothing runs per call.
Caches are turned off while recording: a cache hit skips inductor, and with it the artifacts.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from typing import Any, Sequence

from lltrace.capture.patterns import DEFAULT_PATTERNS, kernel_region

TRACE_LOGGER = "torch.__trace"
FORMAT = "lltrace-provenance/1"
_ARTIFACTS = ("inductor_provenance_tracking_node_mappings", "inductor_provenance_tracking_kernel_stack_traces")
_ROOT = re.compile(r"^L\['[^']*'\]\.?")          # dynamo's name for the compiled function's `self`
_MODULES = re.compile(r"_modules\['([^']*)'\]")   # older spelling of a submodule step
# Nodes that move no data of their own: they say where a tensor came from, not who computes.
_NO_WORK = frozenset({"view", "reshape", "permute", "transpose", "t", "unsqueeze", "squeeze", "expand",
                      "flatten", "unflatten", "chunk", "split", "getitem", "select", "slice", "contiguous",
                      "size", "dim", "type_as", "to", "float", "type", "detach", "view_as", "_unsafe_view"})


def module_path(fqn: str) -> str:
    """`L['self'].self_attn.q` -> `self_attn.q` (relative to the compiled function's module);
    `""` for the module itself."""
    s = _MODULES.sub(r"\1", _ROOT.sub("", fqn or ""))
    return ".".join(p for p in s.split(".") if p)


def _compile_id_now() -> str | None:
    try:
        from torch._guards import CompileContext
        cid = CompileContext.current_compile_id()
    except Exception:
        return None
    return str(cid) if cid is not None else None


class _Handler(logging.Handler):
    def __init__(self, recorder: "ProvenanceRecorder"):
        super().__init__(level=logging.DEBUG)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "metadata", None)
        if not isinstance(meta, dict):
            return
        name = (meta.get("artifact") or {}).get("name") if isinstance(meta.get("artifact"), dict) else None
        if name not in _ARTIFACTS or "frame_id" not in meta:
            return
        payload = getattr(record, "payload", None)
        try:
            data = json.loads(payload) if isinstance(payload, str) else None
        except ValueError:
            data = None
        if isinstance(data, dict):
            self.recorder._artifact(f"{meta['frame_id']}/{meta['frame_compile_id']}", name, data)


class ProvenanceRecorder:
    """Collects, per compile id, pre-grad node -> module path and kernel -> post-grad nodes.

    `start()` before anything compiles, `stop()` after; `to_json()` is provenance.json.
    """

    def __init__(self, patterns: Sequence[tuple[str, str]] = DEFAULT_PATTERNS) -> None:
        self.patterns = patterns
        self._lock = threading.Lock()
        self._modules: dict[str, dict[str, str]] = {}      # compile id -> pre-grad node -> module path
        self._mappings: dict[str, dict[str, Any]] = {}     # compile id -> node mappings artifact
        self._stacks: dict[str, dict[str, Any]] = {}       # compile id -> kernel stack traces
        self._saved: dict[str, Any] = {}
        self._handler: _Handler | None = None
        self.available = False
        self.note: str | None = None

    # -- install / remove -------------------------------------------------------------------
    def start(self) -> "ProvenanceRecorder":
        try:
            import torch._inductor.config as ic
            import torch._functorch.config as fc
        except Exception as exc:   # a torch without inductor: nothing compiles with it either
            self.note = f"no inductor ({type(exc).__name__})"
            return self
        trace_cfg = ic.trace
        if hasattr(trace_cfg, "provenance_tracking_level"):
            self._set(trace_cfg, "provenance_tracking_level", 1)
        elif hasattr(trace_cfg, "provenance_tracking"):
            self._set(trace_cfg, "provenance_tracking", True)
        else:
            self.note = "this torch has no inductor provenance tracking"
            return self
        self._set(ic, "fx_graph_cache", False)
        if hasattr(fc, "enable_autograd_cache"):
            self._set(fc, "enable_autograd_cache", False)
        self._set(ic, "pre_grad_custom_pass", self._pass(ic.pre_grad_custom_pass))
        self._handler = _Handler(self)
        log = logging.getLogger(TRACE_LOGGER)
        self._saved["log_level"] = log.level
        log.addHandler(self._handler)
        if log.getEffectiveLevel() > logging.DEBUG:
            log.setLevel(logging.DEBUG)
        self.available = True
        return self

    def stop(self) -> None:
        if self._handler is not None:
            log = logging.getLogger(TRACE_LOGGER)
            log.removeHandler(self._handler)
            log.setLevel(self._saved.pop("log_level", log.level))
            self._handler = None
        for (obj, attr), value in reversed(list(self._saved.get("config", {}).items())):
            setattr(obj, attr, value)
        self._saved.pop("config", None)

    def _set(self, obj: Any, attr: str, value: Any) -> None:
        self._saved.setdefault("config", {}).setdefault((obj, attr), getattr(obj, attr))
        setattr(obj, attr, value)

    def _pass(self, previous):
        """A pre-grad pass that reads each node's module stack (and runs any pass set before)."""
        recorder = self

        def read(graph) -> None:
            cid = _compile_id_now()
            if cid is not None:
                mods = {}
                for node in graph.nodes:
                    if node.op not in ("call_function", "call_method", "call_module"):
                        continue
                    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
                    if target.rsplit(".", 1)[-1] in _NO_WORK:
                        continue
                    stack = node.meta.get("nn_module_stack") or {}
                    inner = list(stack.values())[-1] if stack else None
                    mods[node.name] = module_path(inner[0]) if inner else ""
                with recorder._lock:
                    recorder._modules.setdefault(cid, {}).update(mods)
            if previous is not None:
                previous(graph)

        try:   # a CustomGraphPass with a uuid keeps inductor from warning about an unknown pass
            from torch._inductor.custom_graph_pass import CustomGraphPass

            class _ReadModules(CustomGraphPass):
                def __call__(self, graph) -> None:
                    read(graph)

                def uuid(self) -> Any:
                    return "lltrace-provenance-1"

            return _ReadModules()
        except Exception:
            return read

    def _artifact(self, cid: str, name: str, data: dict[str, Any]) -> None:
        with self._lock:
            (self._mappings if name.endswith("node_mappings") else self._stacks)[cid] = data

    # -- result -----------------------------------------------------------------------------
    def compiles(self) -> dict[str, Any]:
        """compile id -> {"kernels": [{"kernel", "handle", "modules": {path: nodes}, "where"}]},
        kernels in debug-handle order (the order the compiled code calls them)."""
        out: dict[str, Any] = {}
        with self._lock:
            ids = sorted(set(self._mappings) | set(self._modules))
            for cid in ids:
                maps = self._mappings.get(cid) or {}
                mods = self._modules.get(cid, {})
                post_to_pre = maps.get("postToPre") or {}
                kernels = []
                for key, nodes in maps.items():
                    if not (key.endswith("CodeToPost") and isinstance(nodes, dict)):
                        continue
                    for kname, post in nodes.items():
                        name, _, handle = str(kname).rpartition(":")
                        if not name or not handle.isdigit():
                            name, handle = str(kname), "-1"
                        pre = {p for n in (post or []) for p in (post_to_pre.get(n) or [n])}
                        counts = Counter(mods[p] for p in pre if p in mods)
                        stack = (self._stacks.get(cid) or {}).get(kname) or []
                        kernels.append({"kernel": name, "handle": int(handle),
                                        "region": kernel_region(counts, self.patterns),
                                        "modules": dict(counts.most_common()),
                                        "where": _last_frame(stack[0]) if stack else None})
                kernels.sort(key=lambda k: k["handle"])
                out[cid] = {"kernels": kernels, "nodes": len(mods), "mapped": bool(maps)}
        return out

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "available": self.available, "note": self.note, "compiles": self.compiles()}


def _last_frame(stack: Any) -> str | None:
    """`file:line` of the innermost frame of an inductor stack-trace string."""
    if not isinstance(stack, str):
        return None
    hits = re.findall(r'File "([^"]+)", line (\d+)', stack)
    return f"{hits[-1][0]}:{hits[-1][1]}" if hits else None


_recorder: ProvenanceRecorder | None = None


def recording() -> ProvenanceRecorder:
    """The process's recorder, started on first use. Call it before anything compiles (a run's
    pre-flight doctor compiles too); it stays on for the process: a CLI run is one process."""
    global _recorder
    if _recorder is None:
        _recorder = ProvenanceRecorder().start()
    return _recorder
