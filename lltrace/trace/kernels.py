"""Kernel classes for any trace, from the kernel's name and the name of the op that launched it.

Rules are ordered: the first match wins, so the specific patterns (attention kernels also
contain "gemm"/"wgmma", norm kernels contain "elementwise"/"reduce") come first.
"""
from __future__ import annotations

import re

ATTENTION, GEMM, ELEMENTWISE, NORM, REDUCTION, COPY, COMM, OTHER = (
    "attention", "gemm", "elementwise", "norm", "reduction", "copy/memset", "communication", "other")
CLASSES = (ATTENTION, GEMM, ELEMENTWISE, NORM, REDUCTION, COPY, COMM, OTHER)

# Inductor kernels are named "<kind>_fused_<ops>": the kind says more than the fused op names
# (a pointwise prologue of SDPA is called "triton_poi_fused__scaled_dot_product_..._attention").
_TRITON = re.compile(r"triton_(poi|red|per|tem)_")
_TRITON_NORM = re.compile(r"norm|rsqrt|var_mean")
_TRITON_ATTN = re.compile(r"attention|flex|sdpa|flash")

# (class, regex over the kernel name, lower-cased)
_KERNEL_RULES = [
    (COMM, r"nccl|all_?reduce|all_?gather|reduce_?scatter|alltoall|all_to_all|cross_device_reduce|sendrecv"),
    (ATTENTION, r"flash|fmha|sdpa|attention|attn|flex|xformers|mha_fwd|mha_bwd|softmax_warp_forward_attn"),
    (NORM, r"layer_?norm|rms_?norm|group_?norm|batch_?norm|instance_?norm|_norm_|rowwisemoments|welford|"
           r"native_layer_norm|cunn_layernorm|fusedlayernorm"),
    (COPY, r"memcpy|memset|direct_copy|copy_kernel|catarraybatchedcopy|cat_?array|transpose_?copy|"
           r"nchwtonhwc|nhwctonchw|nchw2nhwc|nhwc2nchw|"
           r"contiguous|d2d_copy|fill_kernel|\bmemcpy"),
    (GEMM, r"gemm|xmma|cutlass|cublas|nvjet|matmul|\bmm_|_mm\b|_mm_|bmm|addmm|s16816|s1688|h16816|hmma|wgmma|"
           r"splitkreduce|scaled_mm|fp8_linear|conv(olution|_|\d|fwd|bwd)|implicit_?convolve|sm90_|sm80_|sm100_"),
    (REDUCTION, r"reduce|softmax|argmax|argmin|cumsum|scan_kernel|topk|sort|amax|"
                r"sum_kernel|mean_kernel|norm_kernel"),
    (ELEMENTWISE, r"elementwise|unrolled|vectorized|pointwise|gelu|silu|relu|activation|"
                  r"rotary|rope|add_kernel|mul_kernel|index_kernel|index_put|scatter|gather|where|"
                  r"masked_fill|clamp|_to_copy|cast|quantize|dequant"),
]
# Op names (aten::..., module-level) for kernels whose own name says nothing.
_OP_RULES = [
    (COMM, r"nccl|c10d::|all_reduce|allreduce|all_gather|reduce_scatter|record_param_comms"),
    (ATTENTION, r"attention|flash|sdpa|flex"),
    (NORM, r"norm"),
    (GEMM, r"aten::(mm|addmm|bmm|baddbmm|matmul|linear|_scaled_mm|einsum)\b|conv"),
    (COPY, r"aten::(copy_|to|_to_copy|contiguous|clone|cat|stack|fill_|zero_|zeros|empty|index_copy_)\b"),
    (REDUCTION, r"aten::(sum|mean|amax|amin|max|min|softmax|_softmax|log_softmax|argmax|cumsum|topk|sort)\b"),
    (ELEMENTWISE, r"aten::"),
]
_KERNEL_RE = [(c, re.compile(p)) for c, p in _KERNEL_RULES]
_OP_RE = [(c, re.compile(p)) for c, p in _OP_RULES]


def classify(kernel_name: str, op_name: str | None = None, memory: bool = False) -> str:
    """Class of one GPU activity. `memory` is True for gpu_memcpy / gpu_memset events."""
    if memory:
        return COPY
    name = kernel_name.lower()
    m = _TRITON.search(name)
    if m:
        kind = m.group(1)
        if kind == "poi":
            return ELEMENTWISE
        if kind == "tem":
            return ATTENTION if _TRITON_ATTN.search(name) else GEMM
        return NORM if _TRITON_NORM.search(name) else REDUCTION
    for cls, rx in _KERNEL_RE:
        if rx.search(name):
            return cls
    if op_name:
        return classify_op(op_name)
    return OTHER


def classify_op(op_name: str) -> str:
    """Class of a host op by its name (used for kernels with generic names and CPU-only traces)."""
    name = op_name.lower()
    for cls, rx in _OP_RE:
        if rx.search(name):
            return cls
    return OTHER
