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
    (NORM, (r"layer_?norm|rms_?norm|group_?norm|batch_?norm|instance_?norm|_norm_|rowwisemoments|welford|"
           r"native_layer_norm|cunn_layernorm|fusedlayernorm")),
    (COPY, (r"memcpy|memset|direct_copy|copy_kernel|catarraybatchedcopy|cat_?array|transpose_?copy|"
           r"nchwtonhwc|nhwctonchw|nchw2nhwc|nhwc2nchw|"
           r"contiguous|d2d_copy|fill_kernel|\bmemcpy")),
    (GEMM, (r"gemm|xmma|cutlass|cublas|nvjet|matmul|\bmm_|_mm\b|_mm_|bmm|addmm|s16816|s1688|h16816|hmma|wgmma|"
           r"splitkreduce|scaled_mm|fp8_linear|conv(olution|_|\d|fwd|bwd)|implicit_?convolve|sm90_|sm80_|sm100_")),
    (REDUCTION, (r"reduce|softmax|argmax|argmin|cumsum|scan_kernel|topk|sort|amax|"
                r"sum_kernel|mean_kernel|norm_kernel")),
    (ELEMENTWISE, (r"elementwise|unrolled|vectorized|pointwise|gelu|silu|relu|activation|"
                  r"rotary|rope|add_kernel|mul_kernel|index_kernel|index_put|scatter|gather|where|"
                  r"masked_fill|clamp|_to_copy|cast|quantize|dequant")),
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


# ----------------------------------------------------------------------------- short names
# Kernel names are C++ signatures hundreds of characters long, or library names that pack a
# dozen tuning parameters into one identifier. `short_name` keeps what tells kernels apart to
# a reader (the op, its dtype, a GEMM's tile and layout) and drops namespaces, argument lists,
# lambda scopes and launch parameters; `short_names` makes a set of them unique again. There
# is no library for this (cxxfilt demangles, it does not abbreviate), hence the rules below.

_TYPES = {"c10::BFloat16": "bf16", "__nv_bfloat16": "bf16", "c10::Half": "fp16", "__half": "fp16",
          "c10::Float8_e4m3fn": "fp8e4m3", "c10::Float8_e5m2": "fp8e5m2", "unsigned int": "uint",
          "unsigned long": "ulong", "long long": "int64"}
_NAMESPACE = re.compile(r"(?:\b[A-Za-z_]\w*::|\(anonymous namespace\)::)+(?=[A-Za-z_~{])")
_OPAQUE = re.compile(r"OpaqueType<(\d+)u?\s*>")
_LAMBDA_ARGS = re.compile(r"\{lambda\(([^(){}]*)\)#\d+\}")
_FUNCTION = re.compile(r"([A-Za-z_]\w*)(<[^()]*?>)?\(")       # a named function: `direct_copy_kernel_cuda(`
_FUNCTOR = re.compile(r"([A-Za-z_]\w*(?:Functor|Ops)\w*|CUDAFunctor\w*)<([^<>]*)>")
_WRAPPERS = ("BinaryFunctor", "AUnaryFunctor", "BUnaryFunctor", "func_wrapper_t", "ReduceOp")
_GENERIC_BASES = {"Kernel", "Kernel2", "kernel", "device_kernel"}
_FN_SUFFIX = re.compile(r"(?:_kernel|_impl|_cuda|_out)+$")
# functions that only launch the op's lambda or functor: the op is inside their template argument
_LAUNCHERS = re.compile(r"\b(?:gpu_kernel_impl_nocast|gpu_kernel_impl|gpu_index_kernel)<")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_XMMA = re.compile(r"^(sm\d+)_xmma_(gemm|fprop_implicit_gemm|dgrad_implicit_gemm|wgrad_implicit_gemm)_"
                   r"(bf16|f16|tf32|f32|f64|e4m3|e5m2|s8|i8)\w*?(?:_(nn|nt|tn|tt)_n)?_tilesize(\d+x\d+x\d+)")
_NVJET = re.compile(r"^nvjet_(?:(sm\d+)_)?(qq)?[a-z]*?tst_(\d+)x(\d+)_(\d+)x\d+_(\d+x\d+)_.*?_([TN]{3})$")
_CUDNN_SDPA = re.compile(r"^cudnn_generated_\w*?sdpa_(sm\d+)_(flash)?_?(fprop|bprop)\w*?_(f16|bf16|fp8)\w*?_(\d+x\d+x\d+)")


def _cut_arguments(s: str) -> str:
    """`f<T>(int, float)` -> `f<T>`: the first "(" outside template brackets starts the arguments."""
    s = s.replace("(anonymous namespace)::", "")
    depth = 0
    for i, ch in enumerate(s):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            return s[:i]
    return s


def _bracketed(s: str, start: int) -> str:
    """The text from `start` (just after a "<") to its matching ">"."""
    depth = 1
    for i in range(start, len(s)):
        depth += {"<": 1, ">": -1}.get(s[i], 0)
        if depth == 0:
            return s[start:i]
    return s[start:]


def _types(s: str) -> str:
    for long, short in _TYPES.items():
        s = s.replace(long, short)
    s = _OPAQUE.sub(lambda m: f"{m.group(1)}B", _NAMESPACE.sub("", s))
    s = re.sub(r"\(\w+\)(\d+)", r"\1", s)          # `(cudnnKernelDataType_t)0` -> `0`
    s = re.sub(r"\bconst\b|[*&]", "", s)
    return re.sub(r"\s*([<>,])\s*", r"\1", s).strip(", ")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _template_op(args: str) -> str | None:
    """The distinguishing part of a TensorIterator kernel's template arguments: the function
    whose lambda it runs (with the lambda's dtype), else the innermost functor (with the
    dtype of its wrapper)."""
    launcher = _LAUNCHERS.search(args)
    if launcher is not None:
        args = _bracketed(args, launcher.end())
    m = _FUNCTION.search(args)
    while m is not None and m.group(1) in ("operator", "lambda"):
        m = _FUNCTION.search(args, m.end())
    if m is not None:
        op = _FN_SUFFIX.sub("", _snake(m.group(1))).removeprefix("launch_") or m.group(1)
        lambdas = [a for a in _LAMBDA_ARGS.findall(args) if a.strip()]
        dtype = _types(lambdas[-1]) if lambdas else _types((m.group(2) or "<>")[1:-1])
        dtype = ",".join(dict.fromkeys(t for t in dtype.split(",") if t and t != "char"))
        return f"{op}<{dtype}>" if dtype else op
    functors = list(_FUNCTOR.finditer(args))
    if not functors:
        return None
    inner = functors[-1]
    op = inner.group(1)
    if op.startswith("CUDAFunctor"):      # CUDAFunctor_add, CUDAFunctorOnSelf_add
        side, _, what = op[len("CUDAFunctor"):].partition("_")
        op = what + ("_" + _snake(side[2:]) if side.startswith("On") else "")
    else:
        op = _snake(re.sub(r"(Functor|Ops)$", "", op))
    dtype = _types(inner.group(2)).split(",")[0]
    head = args[:inner.start()]
    wrapper = next((w for w in _WRAPPERS if w + "<" in head), None)
    if wrapper is not None:               # the wrapper's first argument is the data type
        dtype = _types(head[head.rindex(wrapper + "<") + len(wrapper) + 1:]).split(",")[0] or dtype
        if wrapper in ("AUnaryFunctor", "BUnaryFunctor"):
            op = f"scalar_{op}" if wrapper[0] == "A" else f"{op}_scalar"
    return f"{op}<{dtype}>"


def _library(s: str) -> str | None:
    """cuBLAS / cuDNN / nvjet names: architecture, op, dtype, tile and layout."""
    m = _XMMA.match(s)
    if m:
        op = "gemm" if m.group(2) == "gemm" else m.group(2).split("_")[0]
        op = {"fprop": "conv", "dgrad": "conv dgrad", "wgrad": "conv wgrad"}.get(op, op)
        return " ".join(p for p in (m.group(1), op, m.group(3), m.group(5), m.group(4)) if p)
    m = _NVJET.match(s)
    if m:
        arch, fp8, tm, tn, tk, cluster, layout = m.groups()
        return " ".join(p for p in ("nvjet", arch, "fp8" if fp8 else None, f"{tm}x{tn}x{tk}", cluster,
                                    "bias" if "_bias_" in s else None, layout) if p)
    m = _CUDNN_SDPA.match(s)
    if m:
        arch, flash, direction, dtype, tile = m.groups()
        return " ".join(p for p in ("cudnn sdpa", flash, direction, arch, dtype, tile) if p)
    return None


def short_name(name: str) -> str:
    """A readable short form of one kernel name (not unique by itself: see short_names).

    `void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl<
    at::native::CUDAFunctor_add<float> >>(...)` -> `elementwise_kernel<add<float>>`;
    `sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_...` -> `sm90 gemm bf16
    128x128x64 tn`; Triton kernels (`triton_poi_fused_add_mul_0`) keep their name."""
    s = name.removeprefix("void ")
    s = _cut_arguments(s.strip())
    if "<" not in s:   # a library kernel name, or a host op (`aten::conv3d` keeps its namespace)
        return _library(s) or s
    i = s.index("<")
    base, args = _NAMESPACE.sub("", s[:i]), s[i + 1:s.rindex(">")] if s.endswith(">") else s[i + 1:]
    if base in _GENERIC_BASES:            # cutlass::Kernel2<cutlass_80_simt_sgemm_...>: the argument is the name
        inner = _cut_arguments(_NAMESPACE.sub("", args))
        return _library(inner) or inner
    op = _template_op(args)
    return f"{base}<{op}>" if op else f"{base}<{_types(args)}>"


def _detailed(name: str) -> str:
    """The next level of detail for names that collide: all template arguments, types shortened."""
    s = name.removeprefix("void ")
    s = _cut_arguments(s.strip())
    if "<" not in s:
        return s
    i = s.index("<")
    args = s[i:]
    op = _template_op(args[1:-1]) or ""
    numbers = re.findall(r"(?<=[<,])\s*(-?\d+|true|false)\s*(?=[,>])", args)
    variant = "nocast," if "_nocast<" in args else ""
    return f"{_NAMESPACE.sub('', s[:i])}<{variant}{','.join(numbers)}{',' if numbers and op else ''}{op}>"


# shorter kernel-family names for narrow tables, tried in order until the label fits
_COMPACT = ((re.compile(r"^triton_(poi|red|per|tem)_fused_"), r"triton_\1_"),
            (re.compile(r"^nvjet sm\d+ "), "nvjet "),
            (re.compile(r"^(\w+?)_kernel(?=<)"), r"\1"),
            (re.compile(r"^(vectorized|unrolled|index)_elementwise(?=<)"), r"\1"),
            (re.compile(r"^elementwise(?=<)"), "ew"),
            (re.compile(r"^vectorized(?=<)"), "vec"))


def _compact(label: str) -> str:
    """`vectorized_elementwise_kernel<add<bf16>>` -> `vec<add<bf16>>`: the family shortens, the op stays."""
    for rx, repl in _COMPACT:
        label = rx.sub(repl, label)
    return label


def fit(label: str, width: int) -> str:
    """`label` cut to `width` characters with "…" in the middle: the head names the kernel
    or region, the tail holds a Triton kernel's index or a path's leaf. Words of a spaced
    label (`nvjet 192x144x64 2x1 bias TNT`) are dropped whole, never cut inside a number."""
    if len(label) <= width:
        return label
    if width <= 1:
        return "…"[:width]
    m = re.match(r"^(.*?/.*?)( \d+%)?$", label)
    if m and " " not in m.group(1):                # a region path: keep its last segments
        segs, share = m.group(1).split("/"), m.group(2) or ""
        for keep in range(len(segs) - 1, 0, -1):
            s = "…/" + "/".join(segs[-keep:]) + share
            if len(s) <= width:
                return s
    words = label.split(" ")
    if len(words) > 2:
        for keep in range(len(words) - 2, 0, -1):     # the last word, and as many first ones as fit
            s = " ".join(words[:keep] + ["…", words[-1]])
            if len(s) <= width:
                return s
    tail = (width - 1) * 2 // 5
    return label[:width - 1 - tail] + "…" + (label[-tail:] if tail else "")


def short_names(names, width: int | None = None) -> list[str]:
    """Short names for a table: distinct full names get distinct short names. Colliding
    short names take more detail (the launch parameters), then a `#k` suffix; with `width`,
    every name fits in it and still stays distinct."""
    names = list(names)
    out = [short_name(n) for n in names]

    def collisions(labels: list[str]) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}
        for i, s in enumerate(labels):
            seen.setdefault(s, []).append(i)
        return {s: idx for s, idx in seen.items() if len({names[i] for i in idx}) > 1}

    for s, idx in collisions(out).items():
        for i in idx:
            out[i] = _detailed(names[i])
    if width is not None:
        if any(len(s) > width for s in out):   # one style for the whole table
            out = [_compact(s) for s in out]
        out = [fit(s, width) for s in out]
    for s, idx in collisions(out).items():
        distinct = list(dict.fromkeys(names[i] for i in idx))
        for i in idx:
            tag = f" #{distinct.index(names[i]) + 1}"
            out[i] = (fit(s, width - len(tag)) if width is not None else s) + tag
    # a tagged label can meet another label: then every one still shared ends with its own row number
    for s, idx in collisions(out).items():
        for i in idx:
            tag = f" #{i + 1}"
            out[i] = (fit(s.rsplit(" #", 1)[0], max(0, width - len(tag))) if width is not None else s) + tag
    return out
