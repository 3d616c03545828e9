"""Roofline column: model FLOPs per lltrace region and achieved TFLOP/s against the ceiling."""
from __future__ import annotations

import pytest

from lltrace.trace import roofline
from lltrace.errors import NeedsCudaError
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.presets import load_preset
from lltrace.trace.budget import build_budget
from lltrace.trace.loader import load_trace
from lltrace.ui.budget_report import tree_table
from helpers.synthetic_trace import lltrace_run, write


def _meta(model: str = "wan-1.3b", ceiling: float | None = 774.0, **knobs):
    preset = load_preset("baseline", {k: str(v) for k, v in knobs.items()})
    return {"model": load_model_config(model).to_dict(), "knobs": preset.to_dict(),
            "ceilings": {"bf16_tflops": ceiling}}


def test_forward_flops_match_the_floor_in_design_notes():
    """docs/DESIGN.md §3: one 4680-token forward at a 15-frame window is 32.3 TFLOP."""
    shapes = roofline.WanShapes.from_meta(_meta(local_attn_size=15))
    lq, lk = shapes.step_tokens(block_index=10)
    assert (lq, lk) == (4680, 15 * 1560)
    assert shapes.parts(lq, lk)["forward"] == pytest.approx(32.3e12, rel=0.005)


def test_kv_window_grows_with_the_block_index_until_full():
    shapes = roofline.WanShapes.from_meta(_meta(local_attn_size=12))
    ks = [shapes.step_tokens(i)[1] // 1560 for i in range(6)]
    assert ks == [3, 6, 9, 12, 12, 12]
    path = [("block", 0), ("step", 0), ("layer", 3), ("self_attn", None)]
    f0 = roofline.region_flops(shapes, path, None)
    f3 = roofline.region_flops(shapes, [("block", 3)] + path[1:], None)
    assert f3 > f0 > 0
    assert roofline.region_flops(shapes, path[:-1] + [("norm", None)], None) == 0.0
    assert roofline.region_flops(shapes, [("block", 0), ("decode", None)], None) is None
    # a recache runs its 12 frames chunk by chunk: chunk j's 3 frames attend to 3(j+1) frames
    chunks = [roofline.region_flops(shapes, [("recache", None), ("layer", 0)], 30, j) for j in range(4)]
    assert chunks == [shapes.parts(3 * 1560, 3 * (j + 1) * 1560)["layer"] for j in range(4)]
    assert sum(chunks) < shapes.parts(12 * 1560, 12 * 1560)["layer"]   # not one full-window forward
    assert roofline.region_flops(shapes, [("recache", None)], 30, None) is None   # sums its chunks


def test_no_region_runs_above_its_ceiling_on_the_committed_runs():
    """A roofline above 100% is a FLOP-count or ceiling bug (recache ops once counted 4x their
    layer's FLOPs; fp8 layers were held against the bf16 ceiling)."""
    from pathlib import Path

    from lltrace.trace.budget import load_budget
    ex = Path(__file__).resolve().parent.parent / "traces" / "examples"
    for run in sorted(p for p in ex.iterdir() if (p / "meta.json").is_file()):
        b = load_budget(run)
        if not b.ceiling_tflops:
            continue
        knobs = (b.run or {}) and __import__("json").loads((run / "meta.json").read_text()).get("knobs", {})
        if knobs.get("fp8") and b.ceiling_dtype != "fp8":
            assert any("no fp8 matmul ceiling" in w for w in b.warnings), run.name
            continue
        worst = max(((n.tflops or 0.0) / b.ceiling_tflops, "/".join(p)) for p, n in b.tree.walk())
        assert worst[0] <= 1.0, (run.name, worst)


def test_missing_model_config_means_no_flops():
    assert roofline.WanShapes.from_meta(None) is None
    assert roofline.WanShapes.from_meta({"model": {"dim": 8}, "knobs": {}}) is None
    assert roofline.ceiling_tflops({"ceilings": {"bf16_tflops": None}}) is None
    assert roofline.ceiling_tflops(_meta()) == 774.0


def test_budget_nodes_carry_flops_and_achieved_tflops(tmp_path):
    syn = lltrace_run(blocks=2, steps=2, layers=3)
    trace = load_trace(write(tmp_path, syn.to_json()))
    meta = _meta(model="tiny")
    shapes = roofline.WanShapes.from_meta(meta)
    budget = build_budget(trace, meta)
    block = budget.tree.find("block")
    # ffn of layer 1 in step 0: one instance per block, same shapes (ffn does not see the cache)
    ffn = block.find("step[0]", "layer[1]", "ffn")
    lq = shapes.step_tokens(0)[0]
    assert ffn.flops == pytest.approx(2 * 4 * lq * shapes.dim * shapes.ffn_dim)
    assert ffn.tflops == pytest.approx(ffn.flops / (ffn.gpu_ms / 1e3) / 1e12)
    # self-attention sees a longer cache in block 1 than in block 0
    attn = block.find("step[0]", "layer[1]", "self_attn")
    expected = sum(shapes.parts(*shapes.step_tokens(i))["self_attn"] for i in range(2))
    assert attn.flops == pytest.approx(expected)
    # decode is not modeled; the block counts the FLOPs of its forwards
    assert block.child("decode").flops is None
    forwards = [block.child(n).flops for n in ("step[0]", "step[1]", "context")]
    assert block.flops == pytest.approx(sum(forwards))
    assert budget.tree.flops == pytest.approx(block.flops)
    assert budget.ceiling_tflops == 774.0
    header = [c.header for c in tree_table(budget).columns]
    assert "TFLOP/s\n(% ceil)" in header


def test_measuring_the_ceiling_needs_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        assert roofline.measure_matmul_tflops(n=1024, iters=3) > 0
    else:
        with pytest.raises(NeedsCudaError, match="needs CUDA"):
            roofline.measure_matmul_tflops()


def test_a_part_recorded_in_pieces_counts_its_flops_once_per_forward(tmp_path):
    """The capture wraps patch, text and time embedding each in ll/embed: three ranges, one embed."""
    from helpers.synthetic_trace import SyntheticTrace

    syn = SyntheticTrace()
    for i in range(2):
        with syn.region(f"ll/block[{i}]", "block"):
            with syn.region("ll/step[0]", "step[0]"):
                for _ in range(3):
                    with syn.region("ll/embed", "embed"):
                        syn.kernel("aten::linear", "nvjet_tst_64x8_64x16_4x1_v_bz_TNT", 5.0, "gemm")
    meta = _meta(model="tiny")
    shapes = roofline.WanShapes.from_meta(meta)
    budget = build_budget(load_trace(write(tmp_path, syn.to_json())), meta)
    embed = budget.tree.find("block", "step[0]", "embed")
    assert embed.count == 6
    assert embed.flops == pytest.approx(sum(shapes.parts(*shapes.step_tokens(i))["embed"] for i in range(2)))
