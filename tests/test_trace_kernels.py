"""Kernel classes from real kernel names (H100 / cuDNN / cuBLAS / Triton / NCCL) and op names."""
from __future__ import annotations

import pytest

from lltrace.trace.kernels import CLASSES, classify, classify_op

KERNELS = [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x128x128_4x1x1_kernel0_0", "attention"),
    (("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false, false, "
     "cutlass::bfloat16_t>, false, false, true>(pytorch_flash::Flash_fwd_params)"), "attention"),
    (("void fmha_cutlassF_bf16_aligned_64x128_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t, "
     "cutlass::arch::Sm80, true, 64, 128, 128, true, true>::Params)"), "attention"),
    ("triton_tem_fused_flex_attention_0", "attention"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off_kernel__5x_cublas",
     "gemm"),
    ("nvjet_tst_256x128_64x4_2x1_v_bz_coopB_TNT", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>(Params)", "gemm"),
    ("triton_tem_fused_addmm_0", "gemm"),
    ("sm80_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nchw_tilesize128x128x32", "gemm"),
    (("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase&, "
     "at::native::GeluType)::{lambda()#2}, at::detail::Array<char*, 2> >(int, ...)"), "elementwise"),
    ("triton_poi_fused__scaled_dot_product_cudnn_attention_add_mul_0", "elementwise"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float, false>(int, float)",
     "norm"),
    ("triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_0", "norm"),
    ("triton_red_fused_abs_amax_0", "reduction"),
    (("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float, float, "
     "float>, unsigned int, float, 4> >(at::native::ReduceOp<float>)"), "reduction"),
    (("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel_cuda"
     "(at::TensorIteratorBase&)::{lambda()#3}> >(int, ...)"), "copy/memset"),
    (("void at::native::(anonymous namespace)::CatArrayBatchedCopy<at::native::(anonymous namespace)::OpaqueType<2u>, "
     "unsigned int, 4, 64, 64>(...)"), "copy/memset"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "communication"),
    (("void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, false, true, "
     "(cudnnKernelDataType_t)2>(cudnn::engines_precompiled::nchw2nhwc_params_t<float>, __nv_bfloat16 const*, "
     "__nv_bfloat16*)"), "copy/memset"),
]


def test_short_kernel_names_keep_the_functor():
    from lltrace.trace.kernels import short_name, short_names

    name = ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float, false>"
            "(int, float, c10::BFloat16 const*)")
    assert short_name(name) == "vectorized_layer_norm_kernel<bf16,float,false>"
    assert short_names(["nvjet_sm90_tst_192x144_64x5_2x1_v_bz_coopB_bias_TNT"], 10) == ["nvjet …TNT"]


@pytest.mark.parametrize("name, cls", KERNELS)
def test_kernel_names(name, cls):
    assert classify(name) == cls


def test_memory_activities_are_copies_and_generic_kernels_use_the_op():
    assert classify("Memcpy HtoD (Pageable -> Device)", memory=True) == "copy/memset"
    assert classify("Memset (Device)", memory=True) == "copy/memset"
    assert classify("my_custom_kernel") == "other"
    assert classify("my_custom_kernel", "aten::mm") == "gemm"
    assert classify("my_custom_kernel", "aten::scaled_dot_product_attention") == "attention"
    assert classify("my_custom_kernel", "aten::native_layer_norm") == "norm"


@pytest.mark.parametrize("op, cls", [
    ("aten::linear", "gemm"), ("aten::addmm", "gemm"), ("aten::conv3d", "gemm"), ("aten::_convolution", "gemm"),
    ("aten::scaled_dot_product_attention", "attention"), ("aten::layer_norm", "norm"), ("aten::rms_norm", "norm"),
    ("aten::copy_", "copy/memset"), ("aten::cat", "copy/memset"), ("aten::sum", "reduction"),
    ("aten::softmax", "reduction"), ("aten::add", "elementwise"), ("aten::gelu", "elementwise"),
    ("c10d::allreduce_", "communication"), ("cudaGraphLaunch", "other"),
])
def test_op_names(op, cls):
    assert classify_op(op) == cls


def test_every_class_is_reachable():
    seen = {cls for _, cls in KERNELS} | {"other"}
    assert seen == set(CLASSES)
