"""Attention kernels for the DiT: PyTorch SDPA always, flash-attn 2 or flash-attn-4 when installed.

`attention(q, k, v, backend, mask)` takes [B, L, heads, head_dim] tensors (the layout the
model and the KV cache use) and returns the same layout.

- "sdpa": `torch.nn.functional.scaled_dot_product_attention`; PyTorch picks its kernel
  (cuDNN / flash / memory-efficient / math). A mask is passed through.
- "flash": flash-attn 2's `flash_attn.flash_attn_func` (pip install 'lltrace[flash]').
- "flash4": flash-attn-4's `flash_attn.cute.flash_attn_func`, the CuTe-DSL FlashAttention
  (pip install 'lltrace[flash4]'; on the device scripts/device/fetch_fa4.sh). Its forward
  has a Hopper (SM 9.0, flash_fwd_sm90.py) and a Blackwell kernel; it compiles each shape once
  per process (JIT), which a CUDA-graph capture's warm-up absorbs.
- "auto": on a GPU, flash-attn-4 where installed and the GPU is SM 9.0+, else flash-attn 2
  where installed, else SDPA; on a CPU always SDPA. flash4 comes first because it was measured
  faster than cuDNN's SDPA end to end on the H200 (BENCHMARKS.md, 2026-12-02: ultra 9.97 ->
  9.26 ms per frame, balanced 33.70 -> 31.75); flash-attn 2 was never measured against it.

"flash" and "flash4" run only where they can: CUDA, fp16/bf16 and no mask. Anything else (the
static KV cache's validity mask, float32, CPU tensors) goes to SDPA, so a masked self-attention
runs SDPA's masked kernels even when a flash backend was asked for. `flash_used(...)` says
which; `describe_backend(name)` is the line meta.json records (pipe.describe()["optimizations"]).

Both flash packages install into the `flash_attn` import package (FA4 as its `cute`
subpackage, with no `flash_attn/__init__.py` of its own), so each is found by its own module.
"""
from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

from lltrace.errors import LltraceError, NeedsCudaError

BACKENDS = ("auto", "sdpa", "flash", "flash4")
FLASH_BACKENDS = ("flash", "flash4")
_PACKAGES = {"flash": ("flash-attn", "flash-attn 2", "flash"),
             "flash4": ("flash-attn-4", "flash-attn-4", "flash4")}   # dist, name, lltrace extra


def _flash_attn_dirs() -> list[Path]:
    """The folders of the `flash_attn` import package, found without importing it (FA2's
    __init__ loads its CUDA extension)."""
    try:
        spec = importlib.util.find_spec("flash_attn")
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def flash_available() -> bool:
    """flash-attn 2: `flash_attn/__init__.py` with its flash_attn_func."""
    return any((d / "flash_attn_interface.py").is_file() for d in _flash_attn_dirs())


def flash4_available() -> bool:
    """flash-attn-4: `flash_attn/cute/interface.py`."""
    return any((d / "cute" / "interface.py").is_file() for d in _flash_attn_dirs())


_AVAILABLE = {"flash": flash_available, "flash4": flash4_available}


def resolve_backend(name: str, device) -> str:
    """"auto" | "sdpa" | "flash" | "flash4" -> the backend that runs: "sdpa", "flash" or "flash4"."""
    if name not in BACKENDS:
        raise LltraceError(f"unknown attention backend {name!r}", f"valid: {', '.join(BACKENDS)}")
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    if name == "sdpa":
        return "sdpa"
    if name == "auto":
        if on_cuda and flash4_available() and torch.cuda.get_device_capability(device) >= (9, 0):
            return "flash4"
        return "flash" if on_cuda and flash_available() else "sdpa"
    dist, label, extra = _PACKAGES[name]
    if not on_cuda:
        raise NeedsCudaError(f"attention backend {name!r} ({label})")
    if not _AVAILABLE[name]():
        raise LltraceError(f"attention backend {name!r} asked for, but {dist} is not installed",
                           f"pip install 'lltrace[{extra}]', or use attention: sdpa / auto")
    if name == "flash4" and torch.cuda.get_device_capability(device) < (9, 0):
        raise LltraceError(f"attention backend 'flash4' needs an SM 9.0+ GPU (Hopper/Blackwell); "
                           f"this is {torch.cuda.get_device_name(device)}", "use attention: sdpa / auto")
    return name


def describe_backend(backend: str) -> str:
    """What runs for a resolved backend, with the package version: for meta.json and bench JSON."""
    if backend not in FLASH_BACKENDS:
        return "sdpa: torch.nn.functional.scaled_dot_product_attention (PyTorch picks the kernel)"
    dist, label, _ = _PACKAGES[backend]
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = "unknown version"
    where = "flash_attn.cute.flash_attn_func" if backend == "flash4" else "flash_attn.flash_attn_func"
    return f"{backend}: {label} {version} ({where}); masked attention runs SDPA"


def flash_used(backend: str, q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether `attention` runs a flash-attn kernel for these inputs (else SDPA)."""
    return (backend in FLASH_BACKENDS and mask is None and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention, q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D].

    `mask`: boolean, True = may attend, broadcastable to [B, H, Lq, Lk].
    """
    if flash_used(backend, q, mask):
        if backend == "flash4":
            return torch.ops.lltrace.flash4_attention(q, k, v)
        from flash_attn import flash_attn_func
        return flash_attn_func(q, k, v)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask)
    return out.transpose(1, 2)


# FA4's flash_attn_func is a Python autograd.Function over the CuTe DSL: dynamo would trace into
# its JIT cache lookups (graph breaks that are the library's, and slow doctor compile checks).
# As a custom op it is one opaque node to dynamo, inductor and the doctor; eager calls and CUDA
# graph captures run the same kernel. The op is inference-only (no autograd formula).
@torch.library.custom_op("lltrace::flash4_attention", mutates_args=(), device_types="cuda")
def _flash4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from flash_attn.cute import flash_attn_func as flash4_attn_func
    out = flash4_attn_func(q, k, v)   # out, or (out, lse) in some betas
    return (out[0] if isinstance(out, tuple) else out).contiguous()   # the layout the fake promises


@_flash4_attention.register_fake
def _(q, k, v):
    return q.new_empty(q.shape)   # contiguous [B, Lq, H, D], q's dtype and device (head_dim of v = of q)
