"""`lltrace diff` on GPU traces: kernels replaced (bf16 GEMM -> fp8 GEMM), noise on jittered
instances, the noise-aware --fail-above, and traces that do not match (GPU vs CPU-only,
different layer counts). SYNTHETIC Kineto-shaped traces (tests/test_trace_synthetic.py)
because this machine has no GPU; the real H100 traces are covered in test_diff_runs.py."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lltrace.commands.cli import main
from lltrace.analysis import noise
from lltrace.analysis.diff import diff
from lltrace.analysis.side import load_side
from lltrace.analysis.gate import gate
from lltrace.analysis.kernel_diff import precision
from helpers.synthetic_trace import lltrace_run, write

BF16_GEMM = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64"
FP8_GEMM = "sm90_xmma_gemm_e4m3e4m3_bf16f32_f32_tn_n_tilesize128x128x128"


def jittered(data: dict, seed: int, scale: float = 1.0, spread: float = 0.05) -> dict:
    """Every GPU activity's duration times scale * U(1 - spread, 1 + spread)."""
    data = copy.deepcopy(data)
    rng = np.random.default_rng(seed)
    for e in data["traceEvents"]:
        if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy"):
            e["dur"] = e["dur"] * scale * float(rng.uniform(1 - spread, 1 + spread))
    return data


def fp8(data: dict) -> dict:
    """The self-attention projection GEMM swapped for an fp8 one taking 60% of the time."""
    data = copy.deepcopy(data)
    for e in data["traceEvents"]:
        if e.get("name") == BF16_GEMM:
            e["name"], e["dur"] = FP8_GEMM, e["dur"] * 0.6
    return data


@pytest.fixture(scope="module")
def base():
    return lltrace_run(blocks=8, steps=2, layers=2, slow_layer0=2.0).to_json()


def side(tmp_path, data, name):
    return load_side(write(tmp_path, data, name))


def test_kernels_replaced_and_the_region_that_got_faster(tmp_path, base):
    A = side(tmp_path, jittered(base, 1), "a.json")
    B = side(tmp_path, fp8(jittered(base, 2)), "b.json")
    d = diff(A, B)
    assert d.metric == "gpu" and d.unit == "block" and d.units == (8, 8)
    k = d.kernels
    assert k.kind == "kernel"
    assert [r["name"] for r in k.disappeared] == [BF16_GEMM] and [r["name"] for r in k.appeared] == [FP8_GEMM]
    assert k.disappeared[0]["precision"] == "bf16" and k.appeared[0]["precision"] == "fp8"
    prec = {(r["class"], r["precision"]): r for r in k.precision}
    assert prec[("gemm", "bf16")]["delta_ms"] < 0 and prec[("gemm", "fp8")]["a_ms"] == 0
    # the self-attention of every layer got faster; the FFN did not change beyond the jitter
    sa = d.tree.find(("block", "step[0]", "layer[1]", "self_attn"))
    assert sa.judgement.verdict == noise.FASTER and sa.delta < 0
    ffn = d.tree.find(("block", "step[0]", "layer[1]", "ffn"))
    assert ffn.judgement.verdict == noise.NOISE
    pooled = next(n for n in d.by_name if n.name == "self_attn")
    assert pooled.judgement.verdict == noise.FASTER and pooled.judgement.n_a == 8 * 3 * 2


def test_jitter_alone_is_within_noise(tmp_path, base):
    d = diff(side(tmp_path, jittered(base, 1), "a.json"), side(tmp_path, jittered(base, 2), "b.json"))
    verdicts = [n.judgement.verdict for n in d.tree.walk() if n.kind == "region"]
    # no region moves by more than the 2% minimum effect with +-5% uniform jitter over 8 blocks
    assert noise.FASTER not in verdicts and noise.SLOWER not in verdicts
    assert verdicts.count(noise.NOISE) > 20


def test_fail_above_respects_noise_unless_strict(tmp_path, capsys, base):
    a = write(tmp_path, jittered(base, 1), "a.json")
    b = write(tmp_path, jittered(base, 1, scale=1.015), "b.json")     # +1.5%: under the 2% minimum effect
    d = diff(load_side(a), load_side(b))
    g = gate(d, 1.0)
    assert g.metric == "gpu_ms" and g.regression_pct == pytest.approx(1.5, abs=0.05)
    assert g.verdict == noise.NOISE and not g.failed
    assert gate(d, 1.0, strict=True).failed
    assert main(["diff", str(a), str(b), "--fail-above", "1%"]) == 0
    assert "within noise" in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--fail-above", "1%", "--strict"]) == 1
    assert main(["diff", str(a), str(b), "--fail-above", "1%", "--min-effect", "1%"]) in (0, 1)   # p decides
    assert main(["diff", str(a), str(b), "--fail-above", "2%"]) == 0
    capsys.readouterr()


def test_gpu_trace_against_cpu_only_trace(tmp_path, base):
    cpu = copy.deepcopy(base)
    cpu["traceEvents"] = [e for e in cpu["traceEvents"]
                          if e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation")]
    d = diff(side(tmp_path, base, "gpu.json"), side(tmp_path, cpu, "cpu.json"))
    assert d.metric == "cpu" and d.kernels is None
    assert any("comparing host ms" in w for w in d.warnings)
    assert all(n.kind not in ("class", "other") for n in d.tree.walk())
    # same host ranges on both sides: the region tree matches name for name, but for the row
    # that groups the GPU side's graph-replayed kernels (no host range of its own)
    assert [n.name for n in d.only_in_a] == ["graph_launch"] and not d.only_in_b


def test_different_depths_match_what_matches(tmp_path):
    a = lltrace_run(blocks=4, steps=3, layers=3).to_json()
    b = lltrace_run(blocks=2, steps=2, layers=2).to_json()
    d = diff(side(tmp_path, a, "a.json"), side(tmp_path, b, "b.json"))
    assert d.units == (4, 2) and any("per block" in w for w in d.warnings)
    only_a = {"/".join(n.path) for n in d.only_in_a}
    assert "block/step[2]" in only_a and "block/step[0]/layer[2]" in only_a
    assert "block/step[0]/layer[1]" not in only_a
    # per block, a layer costs the same in both: the per-unit normalization makes them comparable
    layer = d.tree.find(("block", "step[0]", "layer[1]"))
    assert layer.delta == pytest.approx(0.0, abs=1e-9) and layer.judgement.verdict == noise.SAME


def test_precision_tags():
    assert precision("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn") == "bf16"
    assert precision("sm90_xmma_gemm_e4m3e4m3_bf16f32_f32") == "fp8"
    assert precision("void cutlass::Kernel<cutlass_80_tensorop_s16816gemm_f16_256x128>") == "fp16"
    assert precision("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT") == "?"


def test_markdown_lists_replaced_kernels(tmp_path, capsys, base):
    a = write(tmp_path, base, "a.json")
    b = write(tmp_path, fp8(base), "b.json")
    assert main(["diff", str(a), str(b), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "only in A (disappeared)" in out and "`sm90 gemm e4m3 128x128x128 tn`" in out and "| gemm | fp8 |" in out
    assert main(["diff", str(a), str(b), "--json", "--top", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["kernels"]["changed"]) == 1
