"""SYNTHETIC Kineto-shaped GPU traces for unit tests of the correlation logic.

These traces are hand-made (no GPU here): they follow the layout torch.profiler writes
(libkineto output_json.cpp: cpu_op / user_annotation ranges on the host thread,
cuda_runtime launches with args.correlation, kernels on pid=device / tid=stream with the
same correlation and External id, ac2g flow pairs with id=correlation), and every kernel
records where it must be attributed, so tests can check the budget against the truth.
The acceptance tests on real H100 traces are in test_budget_real_traces.py.
"""
from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

HOST, GPU, STREAM = 4242, 0, 7

class SyntheticTrace:
    """Builds a trace with a host clock (µs) and a GPU stream clock; remembers, per kernel,
    the budget path and class it belongs to."""

    def __init__(self):
        self.events: list[dict] = [
            {"ph": "M", "name": "process_name", "pid": HOST, "tid": 0, "args": {"name": "python"}},
            {"ph": "M", "name": "thread_name", "pid": GPU, "tid": STREAM, "args": {"name": "stream 7"}},
        ]
        self.t = 1000.0          # host clock
        self.gpu_t = 0.0         # GPU stream free from
        self.ext = 0
        self.corr = 10_000
        self.stack: list[tuple[str, float, int]] = []
        self.expected: list[tuple[tuple[str, ...], str, float]] = []   # (path, class, µs)
        self.path: list[str] = []

    # host ranges
    def open(self, name: str, key: str | None = None, cat: str = "user_annotation"):
        self.ext += 1
        self.stack.append((name, self.t, self.ext, cat))
        if key is not None:
            self.path.append(key)
        self.t += 1.0
        return self.ext

    def close(self, key: bool = True):
        name, start, ext, cat = self.stack.pop()
        self.t += 1.0
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": HOST, "tid": HOST, "ts": start,
                            "dur": self.t - start, "args": {"External id": ext, "Record function id": 0}})
        if key and cat == "user_annotation" and self.path:
            self.path.pop()
        self.t += 1.0

    def region(self, name: str, key: str | None):
        outer = self

        class _Ctx:
            def __enter__(self_inner):
                outer.open(name, key)

            def __exit__(self_inner, *exc):
                outer.close(key is not None)
        return _Ctx()

    def kernel(self, op: str, kernel: str, dur: float, cls: str, *, n: int = 1, runtime: str = "cudaLaunchKernel",
               with_runtime: bool = True, with_flow: bool = True, with_corr: bool = True, with_ext: bool = True,
               cat: str = "kernel",
               expect_path: tuple[str, ...] | None = None):
        """A cpu_op that launches `n` kernels (n > 1: one graph launch) of `dur` µs each."""
        op_ext = self.open(op, None, cat="cpu_op")
        self.corr += 1
        corr = self.corr
        launch_ts = self.t
        if with_runtime:
            self.events.append({"ph": "X", "cat": "cuda_runtime", "name": runtime, "pid": HOST, "tid": HOST,
                                "ts": launch_ts, "dur": 4.0,
                                "args": {"External id": op_ext, "cbid": 211, "correlation": corr}})
        if with_flow:
            self.events.append({"ph": "s", "id": corr, "pid": HOST, "tid": HOST, "ts": launch_ts,
                                "cat": "ac2g", "name": "ac2g"})
        self.t += 5.0
        for _ in range(n):
            start = max(self.gpu_t, launch_ts + 3.0)
            args = {"device": 0, "stream": STREAM, "grid": [1, 1, 1]}
            if with_ext:
                args["External id"] = op_ext
            if with_corr:
                args["correlation"] = corr
            self.events.append({"ph": "X", "cat": cat, "name": kernel, "pid": GPU, "tid": STREAM,
                                "ts": start, "dur": dur, "args": args})
            if with_flow:
                self.events.append({"ph": "f", "id": corr, "pid": GPU, "tid": STREAM, "ts": start,
                                    "cat": "ac2g", "name": "ac2g", "bp": "e"})
            self.gpu_t = start + dur + 2.0
            self.expected.append((tuple(self.path) if expect_path is None else expect_path, cls, dur))
        self.close(key=False)

    def gpu_annotation(self, name: str, ext: int, start: float, dur: float):
        self.events.append({"ph": "X", "cat": "gpu_user_annotation", "name": name, "pid": GPU, "tid": STREAM,
                            "ts": start, "dur": dur, "args": {"External id": ext}})

    def to_json(self) -> dict:
        self.events.append({"name": "Record Window End", "ph": "i", "s": "g", "pid": "", "tid": "",
                            "ts": self.t + 10})
        return {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "SYNTHETIC GPU"}],
                "displayTimeUnit": "ms", "baseTimeNanoseconds": 1_700_000_000_000_000_000,
                "traceEvents": self.events, "traceName": "synthetic"}

    def expected_by_path(self) -> dict[tuple[str, ...], float]:
        """µs per path prefix (every ancestor gets its descendants' kernels)."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for path, _, dur in self.expected:
            for i in range(len(path) + 1):
                out[path[:i]] += dur
        return out


def lltrace_run(blocks: int = 2, steps: int = 2, layers: int = 3, slow_layer0: float = 2.0,
                extras: bool = True) -> SyntheticTrace:
    """A LongLive-shaped run: block[i] -> step[j] / context -> layer[k] -> self_attn (+kv_update) /
    cross_attn / ffn, plus residual adds in the layer; layer 0's attention is `slow_layer0`x slower.
    `extras` adds a CUDA-graph replay, a flow-only kernel, a gpu_user_annotation-only kernel
    and a memcpy outside every region."""
    s = SyntheticTrace()
    if extras:
        s.kernel("aten::copy_", "Memcpy HtoD (Pageable -> Device)", 30.0, "copy/memset", cat="gpu_memcpy",
                 runtime="cudaMemcpyAsync", expect_path=("(unattributed)",))
    for i in range(blocks):
        with s.region(f"ll/block[{i}]", "block"):
            with s.region("ll/noise", "noise"):
                s.kernel("aten::randn", "void at::native::(anonymous namespace)::distribution_elementwise_grid",
                         3.0, "elementwise")
            for j in list(range(steps)) + ["context"]:
                name, key = (f"ll/step[{j}]", f"step[{j}]") if j != "context" else ("ll/context", "context")
                with s.region(name, key):
                    for k in range(layers):
                        with s.region(f"ll/layer[{k}]", f"layer[{k}]"):
                            with s.region("ll/norm", "norm"):
                                s.kernel("aten::layer_norm", "void at::native::vectorized_layer_norm_kernel<float>",
                                         4.0, "norm")
                            with s.region("ll/self_attn", "self_attn"):
                                s.kernel("aten::linear", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64",
                                         20.0, "gemm")
                                with s.region("ll/kv_update", "kv_update"):
                                    s.kernel("aten::copy_", "void at::native::elementwise_kernel<128, 4, "
                                             "at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>",
                                             3.0, "copy/memset")
                                s.kernel("aten::_scaled_dot_product_cudnn_attention",
                                         "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x128x128",
                                         50.0 * (slow_layer0 if k == 0 else 1.0), "attention")
                            with s.region("ll/cross_attn", "cross_attn"):
                                s.kernel("aten::scaled_dot_product_attention",
                                         "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128>>",
                                         10.0, "attention")
                            with s.region("ll/ffn", "ffn"):
                                s.kernel("aten::linear", "nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT", 30.0, "gemm")
                                s.kernel("aten::gelu", "void at::native::vectorized_elementwise_kernel<4, "
                                         "at::native::GeluCUDAKernelImpl>", 6.0, "elementwise")
                                s.kernel("aten::linear", "nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT", 30.0, "gemm")
                            # residual add: in the layer but in no op region -> layer/(other)
                            s.kernel("aten::add", "triton_poi_fused_add_mul_0", 2.0, "elementwise")
            with s.region("ll/decode", "decode"):
                s.kernel("aten::cudnn_convolution", "sm80_xmma_fprop_implicit_gemm_bf16bf16_bf16f32", 40.0, "gemm")
                if extras and i == 0:
                    # a CUDA-graph replay: 3 kernels share the cudaGraphLaunch's correlation
                    s.kernel("ll-graph", "triton_red_fused_sum_1", 5.0, "reduction", n=3, runtime="cudaGraphLaunch")
                    # no runtime event: only the ac2g flow links it
                    s.kernel("aten::mul", "void at::native::vectorized_elementwise_kernel<4, MulFunctor>", 7.0,
                             "elementwise", with_runtime=False)
                    # only its External id links it (to the aten::sub op that launched it)
                    s.kernel("aten::sub", "void at::native::vectorized_elementwise_kernel<4, SubFunctor>", 8.0,
                             "elementwise", with_runtime=False, with_flow=False, with_corr=False)
                    # nothing links it but the gpu_user_annotation of ll/decode on its stream
                    decode_ext = s.stack[-1][2]
                    before = s.gpu_t
                    s.kernel("aten::add", "void at::native::vectorized_elementwise_kernel<4, AddFunctor>", 9.0,
                             "elementwise", with_runtime=False, with_flow=False, with_corr=False, with_ext=False)
                    s.gpu_annotation("ll/decode", decode_ext, before - 1, s.gpu_t - before + 1)
    return s


def write(tmp_path: Path, data, name: str = "trace.json", gz: bool = False) -> Path:
    p = tmp_path / (name + (".gz" if gz else ""))
    raw = json.dumps(data, indent=1).encode()
    p.write_bytes(gzip.compress(raw) if gz else raw)
    return p
