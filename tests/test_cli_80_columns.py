"""CLI reports at 80 columns and piped (issue #13): budget, diff, doctor, presets.

Rendered from the committed real traces (traces/examples/h200-*, tests/data) and a doctor
report built on the CPU. What a user relies on: no line over the width, no number cut
(`1,67…`), no table row wrapping onto a second line, repeated layers folded into one row,
kernels told apart. Plain-text snapshots live in tests/__snapshots__/cli80/; after a change
that is meant to alter the output, rewrite them with LLTRACE_UPDATE_SNAPSHOTS=1.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from lltrace.commands.cli import main
from lltrace.trace.budget import build_budget
from lltrace.trace.events import KERNEL
from lltrace.trace.kernels import short_name, short_names
from lltrace.trace.loader import load_trace
from lltrace.ui import budget_report, diff_report

ROOT = Path(__file__).resolve().parents[1]
# relative to the repository root (the snapshots show these paths)
EXAMPLES = Path("traces") / "examples"
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "cli80"
REAL = [EXAMPLES / "h200-baseline", EXAMPLES / "h200-ultra",
        *sorted(p.relative_to(ROOT) for p in (ROOT / "tests" / "data").glob("*.json.gz"))]


@pytest.fixture(autouse=True, scope="module")
def in_the_repository():
    before = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(before)

# a number token holding an ellipsis: "1,67…", "…5.3", "-7…" (not a cut label such as "sm9…s")
CUT_NUMBER = re.compile(r"(?<![\w\[.])[-+]?\d[\d,.]*…|…[\d,.]*\d[\d,.]*%?(?![\w\]])")


def render(renderable_or_fn, width: int) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(width=width, record=True, file=sink, color_system=None)
        if callable(renderable_or_fn):
            renderable_or_fn(console)
        else:
            console.print(renderable_or_fn)
        return console.export_text()


def check_fits(text: str, width: int) -> None:
    lines = text.splitlines()
    too_long = [line for line in lines if len(line.rstrip()) > width]
    assert not too_long, too_long[:3]
    cut = [line for line in lines if CUT_NUMBER.search(line)]
    assert not cut, cut[:3]


def snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    if os.environ.get("LLTRACE_UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (LLTRACE_UPDATE_SNAPSHOTS=1 rewrites it)"


@pytest.fixture(scope="module")
def budgets():
    return {p.name: build_budget(load_trace(p)) for p in REAL}


def test_the_cut_number_check_catches_what_the_issue_saw():
    for bad in ("run   1,67…  100.0%", "837…", "-7…", "x …5.3 y"):
        assert CUT_NUMBER.search(bad), bad
    for fine in ("nvjet sm9…s TNT", "step[0..1]/laye…_attn 44%", "layer[0..29]", "1,675.0", "cudnn sdpa …28x128"):
        assert not CUT_NUMBER.search(fine), fine


# ----------------------------------------------------------------------------- kernel names

def test_short_names_of_the_issue():
    add = ("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl<at::native::CUDAFunctor_add"
           "<float> >(at::TensorIteratorBase&, at::native::CUDAFunctor_add<float> const&)::{lambda(int)#1}>(int, "
           "at::native::gpu_kernel_impl<at::native::CUDAFunctor_add<float> >(at::TensorIteratorBase&, "
           "at::native::CUDAFunctor_add<float> const&)::{lambda(int)#1})")
    assert short_name(add) == "elementwise_kernel<add<float>>"
    assert short_name("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_"
                      "execute_segment_k_off_kernel__5x_cublas") == "sm90 gemm bf16 128x128x64 tn"
    assert short_name("triton_poi_fused_add_mul_0") == "triton_poi_fused_add_mul_0"
    assert short_name("nvjet_sm90_qqtst_128x128_128x6_2x1_v_bz_ovscale_bias_TNT") == \
        "nvjet sm90 fp8 128x128x128 2x1 bias TNT"
    assert short_name("aten::conv3d") == "aten::conv3d"     # host ops keep their namespace


@pytest.mark.parametrize("source", REAL, ids=lambda p: p.name)
def test_distinct_kernels_keep_distinct_short_names(source):
    trace = load_trace(source)
    ids = {int(i) for i in trace.x["name"][trace.mask(KERNEL)]}
    full = sorted(trace.names[i] for i in ids)
    assert len(full) > 20
    for width in (None, 60, 30, 20):
        short = short_names(full, width)
        assert len(set(short)) == len(full), width
        if width is not None:
            assert max(map(len, short)) <= width
    # readable: no C++ signature noise left at full width
    for s in short_names(full):
        assert not s.startswith("void ") and "at::native::" not in s and "(anonymous" not in s, s
        assert len(s) <= 110, s


# ----------------------------------------------------------------------------- budget

def test_budget_of_a_wan_run_fits_80_columns_and_a_screen(budgets):
    b = budgets["h200-baseline"]
    text = render(lambda c: budget_report.render(b, c, depth=4), 80)
    check_fits(text, 80)
    lines = text.splitlines()
    # was 372 lines at --depth 3 (683 in the issue): the 30 layers are one row now
    assert len(lines) < 90, len(lines)
    assert any("layer[0..29]" in line for line in lines)
    assert not any("layer[17]" in line for line in lines)
    assert any(line.startswith("context/layer[0..29]: median") and "a call" in line for line in lines)
    assert "GPU activity" in text and "memcpy/memset" in text and "% of" in text and "parent" in text
    snapshot("budget-h200-baseline-80.txt", text)


@pytest.mark.parametrize("name", [p.name for p in REAL])
def test_budget_tree_rows_never_wrap_at_80(budgets, name):
    b = budgets[name]
    for depth in (3, 6):
        rows, _ = budget_report.tree_rows(b, depth)
        text = render(budget_report.tree_table(b, depth, 80, rows=rows), 80)
        check_fits(text, 80)
        assert len(text.splitlines()) == len(rows) + 2     # a two-line header, then one line per row


def test_repeated_siblings_fold_and_the_outliers_are_named():
    from lltrace.ui import siblings
    kids = [(f"layer[{i}]", 5.0 + 0.01 * i) for i in range(30)] + [("norm", 1.0)]
    kids[3] = ("layer[3]", 8.1)                     # 60% slower than the others
    items = siblings.group(kids, lambda c: c[0])
    assert [i if not isinstance(i, siblings.Group) else i.label for i in items] == ["layer[0..29]", ("norm", 1.0)]
    line = siblings.spread_line(items[0], lambda c: c[1])
    assert line.startswith("median 5.155 ms per layer, 5.000–8.100") and "layer[3] +57%" in line
    assert siblings.group(kids[:2], lambda c: c[0]) == kids[:2]       # two siblings stay as they are
    assert siblings.pool_paths([(("block", "step[2]"), 1.0), (("block", "step[3]"), 2.0)]) == [("step[2..3]", 3.0, 2)]


def test_budget_expand_lists_each_layer(budgets):
    b = budgets["h200-baseline"]
    rows, spreads = budget_report.tree_rows(b, 3, expand=True)
    assert not spreads and sum(r.node.name.startswith("layer[") for r in rows) == 30 * 5
    folded, spreads = budget_report.tree_rows(b, 3)
    assert len(folded) < len(rows) / 5 and spreads


def test_kernel_table_tells_the_elementwise_kernels_apart(budgets):
    b = budgets["h200-baseline"]
    text = render(budget_report.kernel_table(b, 20, 80), 80)
    check_fits(text, 80)
    lines = text.splitlines()
    names = [line[:30].strip() for line in lines[2:22]]
    assert len(set(names)) == 20, names
    assert sum(n.startswith(("ew<", "elementwise")) for n in names) >= 4
    # "mostly in" names the distribution, not one arbitrary layer
    assert any("layer[0..29]" in line for line in lines)
    snapshot("budget-kernels-h200-baseline-80.txt", text)


def test_budget_at_200_columns_shows_the_wide_columns(budgets):
    b = budgets["h200-ultra"]
    text = render(lambda c: budget_report.render(b, c, depth=4), 200)
    check_fits(text, 200)
    assert "p95" in text and "host" in text and "(% ceil)" in text
    wide = render(budget_report.kernel_table(b, 20, 200), 200)
    assert "class" in wide and "triton_red_fused_" in wide     # room for the whole Triton name


def test_budget_cli_piped_is_80_columns(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["budget", str(EXAMPLES / "h200-ultra")]) == 0
    out = capsys.readouterr().out
    check_fits(out, 80)
    assert "layer[0..29]" in out
    assert main(["budget", str(EXAMPLES / "h200-ultra"), "--expand", "--depth", "3"]) == 0
    assert "layer[29]" in capsys.readouterr().out


# ----------------------------------------------------------------------------- diff

@pytest.fixture(scope="module")
def example_diff():
    from lltrace.analysis.diff import diff
    from lltrace.analysis.side import load_side
    return diff(load_side(str(EXAMPLES / "h200-baseline")), load_side(str(EXAMPLES / "h200-ultra")))


def test_diff_fits_80_columns(example_diff):
    text = render(lambda c: diff_report.render(example_diff, c), 80)
    check_fits(text, 80)
    lines = text.splitlines()
    assert any("layer[0..29]" in line and "×30" in line for line in lines)
    assert not any(re.search(r"layer\[1[0-9]\]", line) for line in lines)
    assert any("step[2..3]" in line for line in lines)      # only in A, pooled
    assert len(lines) < 150, len(lines)
    snapshot("diff-h200-baseline-ultra-80.txt", text)


def test_diff_tree_rows_never_wrap_at_80(example_diff):
    spreads: list[str] = []
    rows = diff_report._visible(example_diff, 3, False, spreads)
    text = render(diff_report.tree_table(example_diff, 3, 80), 80)
    check_fits(text, 80)
    assert len(text.splitlines()) == len(rows) + 2


def test_diff_at_200_columns_and_expand(example_diff):
    text = render(lambda c: diff_report.render(example_diff, c, expand=True), 200)
    check_fits(text, 200)
    assert "layer[17]" in text and "within noise" in text or "n/a (too few instances)" in text
    md = diff_report.markdown(example_diff)
    assert "`layer[0..29]`" in md and "×30" in md


# ----------------------------------------------------------------------------- presets

def test_presets_keep_knob_names_whole_at_80(capsys, monkeypatch):
    from lltrace.pipeline.presets import KNOBS
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    check_fits(out, 80)
    firsts = {line.split()[0] for line in out.splitlines() if line.strip()}
    for knob in KNOBS:
        if knob != "description":
            assert knob in firsts, knob
    snapshot("presets-80.txt", out)


# ----------------------------------------------------------------------------- doctor

def _doctor_report(path: Path):
    """A DoctorReport back from `lltrace doctor --json` (tests/data/doctor/baseline-cpu.json:
    `lltrace doctor` of the baseline preset on the CPU, the tiny model, 2026-12-02)."""
    import json

    from lltrace.doctor.report import CompileHealth, DoctorReport, Finding, StageReport
    d = json.loads(path.read_text())

    def stage(s):
        c = s["compile"]
        health = None if c is None else CompileHealth(**{k: v for k, v in c.items()
                                                          if k not in ("recompile_risk", "summary")})
        return StageReport(stage=s["stage"], description=s["description"], verdict=s["verdict"],
                           capture=s["capture"], findings=[Finding(**f) for f in s["findings"]], fixes=s["fixes"],
                           compile=health, ops_per_call=s["ops_per_call"], seconds=s["seconds"])
    return DoctorReport(d["target"], d["device"], d["model"], [stage(s) for s in d["stages"]], d["notes"])


def test_doctor_is_one_block_per_stage_at_80_columns():
    from lltrace.ui.doctor_report import doctor_renderable
    report = _doctor_report(ROOT / "tests" / "data" / "doctor" / "baseline-cpu.json")
    text = render(doctor_renderable(report), 80)
    check_fits(text, 80)
    lines = [line.rstrip() for line in text.splitlines()]
    # each stage starts a block with its verdict, and its reasons carry file:line
    heads = [line for line in lines if line and not line.startswith(" ") and line.split()[0] in
             {s.stage for s in report.stages}]
    assert [h.split()[0] for h in heads] == [s.stage for s in report.stages]
    assert all(("INCOMPATIBLE" in h) or ("NOT RUN" in h) for h in heads)
    assert any(re.search(r"^ {4}lltrace/pipeline/kv_cache\.py:\d+", line) for line in lines)
    assert sum(line.lstrip().startswith("fix:") for line in lines) >= 5
    # the 5-column table was 392 lines of 9-character columns at 80 columns
    assert len(lines) < 160
    snapshot("doctor-baseline-cpu-80.txt", text)
    wide = render(doctor_renderable(report), 200)
    check_fits(wide, 200)
    assert len(wide.splitlines()) < len(lines)


# ----------------------------------------------------------------------------- bench

def test_bench_table_fits_80_columns_with_large_numbers():
    from lltrace.ui.bench_report import bench_table
    rows = [{"preset": "baseline", "ms_per_forward": 55.21, "ms_per_block": 1029.9, "ms_decode": 218.8,
             "ms_per_frame": 57.5, "fps": 17.4, "first_frame_ms": 30419.2, "prompt_switch_ms": 464.7,
             "peak_mem_bytes": 30 * 2**30, "error": None},
            {"preset": "turbo-fp8", "error": "fp8 needs CUDA"}]
    text = render(bench_table(rows, 80), 80)
    check_fits(text, 80)
    assert "30,419.2" in text and "1,029.9" in text
    assert "turbo-fp8: fp8 needs CUDA" in text
    table_lines = [line for line in text.splitlines() if line.startswith("baseline")]
    assert len(table_lines) == 1      # one line per preset: no wrapped row


def test_diff_cli_piped_is_80_columns(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["diff", str(EXAMPLES / "h200-baseline"), str(EXAMPLES / "h200-balanced")]) == 0
    out = capsys.readouterr().out
    check_fits(out, 80)
    assert "layer[0..29]" in out and "GPU ms per block (whole run)" in out
    assert main(["diff", str(EXAMPLES / "h200-baseline"), str(EXAMPLES / "h200-balanced"), "--expand"]) == 0
    assert "layer[29]" in capsys.readouterr().out


def test_a_diffs_spread_names_members_by_their_own_change():
    """Δ % per layer: +0.4% against a median of +0.1% is no outlier (a relative difference of
    the two percentages, "+300%", once read as the layer's own change); +16.5% is, as itself."""
    from lltrace.ui import siblings
    pct = [0.1] * 29 + [0.4]
    g = siblings.group([(f"step[{i}]", v) for i, v in enumerate(pct)], lambda c: c[0])[0]
    fmt = lambda v: f"{v:+.1f}%"   # noqa: E731 - the diff's own format
    line = siblings.spread_line(g, lambda c: c[1], unit="", fmt=fmt, off_by=5.0)
    assert line.endswith("; all within 5 points"), line
    g = siblings.group([(f"step[{i}]", v) for i, v in enumerate([4.6, 4.5, 4.7, 16.5, -1.6])], lambda c: c[0])[0]
    line = siblings.spread_line(g, lambda c: c[1], unit="", fmt=fmt, off_by=5.0)
    assert line.endswith("; step[3] +16.5%, step[4] -1.6%"), line
