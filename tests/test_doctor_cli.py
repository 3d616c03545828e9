"""`lltrace doctor` on the command line: table and JSON output, one-line errors for bad flags."""
from __future__ import annotations

import json
import re

import pytest
import torch

from lltrace.commands.cli import main
from lltrace.doctor.graph import diagnose_module
from lltrace.ui.doctor_report import panel_lines, panel_verdict

CASE = '''\
import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        peak = float(x.abs().max())
        return self.lin(x) / peak


def make():
    return Scaled(), [(torch.randn(2, 4),), (torch.randn(2, 4),)]
'''


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")


@pytest.fixture
def case_file(tmp_path):
    f = tmp_path / "doctor_case.py"
    f.write_text(CASE)
    return f


def run(capsys, *args):
    code = main(["doctor", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,message", [
    (["--stage", "denoize"], "unknown stage 'denoize'"),
    (["--module", "nocolon"], "Invalid value for '--module': 'nocolon'"),
    (["--module", "no_such_pkg_xyz:make"], "cannot import 'no_such_pkg_xyz'"),
    (["--module", "json:make", "--preset", "ultra"], "--preset do not apply"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_flags_are_one_line_errors(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lltrace: error:") and message in lines[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU behaviour")
def test_cuda_device_without_cuda_is_a_one_line_error(capsys):
    code, _, err = run(capsys, "--device", "cuda", "--stage", "denoise")
    assert code == 2 and "no CUDA device is available" in err and len(err.strip().splitlines()) == 1


def test_user_module_json_names_the_host_sync_line(capsys, case_file):
    code, out, _ = run(capsys, "--module", f"{case_file}:make", "--json", "--no-compile")
    assert code == 0
    data = json.loads(out)
    (stage,) = data["stages"]
    assert stage["verdict"] == "INCOMPATIBLE" and data["verdict"] == "INCOMPATIBLE"
    sync = [f for f in stage["findings"] if f["kind"] == "host_sync"]
    assert sync and sync[0]["where"].endswith("doctor_case.py:11") and "float(x.abs().max())" in sync[0]["code"]
    assert stage["compile"] is None
    if not torch.cuda.is_available():
        assert stage["capture"] == "capture needs CUDA"


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU behaviour (capture needs CUDA)")
def test_pipeline_table_on_cpu(capsys):
    code, out, err = run(capsys, "--preset", "baseline", "--stage", "kv_update", "--no-compile", "--strict")
    assert code == 1                          # --strict: an INCOMPATIBLE stage fails the command
    assert "capture needs CUDA" in err        # said up front, before the model is built
    assert "lltrace doctor: baseline on cpu, model tiny" in out
    assert "kv_update" in out and "INCOMPATIBLE" in out
    assert "DynamicKVCache.global_end changes between calls" in out
    assert "lltrace/pipeline/kv_cache.py:" in out and "use kv_cache: static" in out


def test_panel_lines_show_verdict_and_first_reason(case_file):
    from lltrace.doctor.graph import load_module_factory

    module, calls = load_module_factory(str(case_file), "make")
    report = diagnose_module(module, calls, compile_check=False)
    (line,) = panel_lines(report)
    assert line.plain.startswith("module") and "INCOMPATIBLE" in line.plain
    assert "doctor_case.py:11" in line.plain
    assert panel_verdict(report).startswith("INCOMPATIBLE (module): host sync")


@pytest.fixture(scope="module")
def denoise_json_run():
    """`lltrace doctor --stage denoise --json` once, with stdout and stderr apart (no TTY)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["doctor", "--preset", "baseline", "--stage", "denoise", "--json"])
    return code, out.getvalue(), err.getvalue()


def test_progress_is_a_line_per_check_on_stderr_and_json_stays_clean(denoise_json_run):
    code, out, err = denoise_json_run
    assert code == 0
    data = json.loads(out)                      # stdout is the report, nothing else
    assert [s["stage"] for s in data["stages"]] == ["denoise"]
    lines = err.strip().splitlines()
    timed = [line for line in lines if re.match(r"^ +\d+\.\d s  ", line)]
    checks = [line.split(" s  ", 1)[1] for line in timed]
    assert "denoise: recording the ops (position A)" in checks
    assert "denoise: torch.compile check (dynamo at A, then at B)" in checks
    assert "denoise: recording the ops (position B)" in checks
    assert checks.index("denoise: recording the ops (position A)") < \
        checks.index("denoise: torch.compile check (dynamo at A, then at B)")
    seconds = [float(line.split()[0]) for line in timed]
    assert seconds == sorted(seconds)           # elapsed since the start
    assert all(len(line) <= 80 for line in lines)
    if not torch.cuda.is_available():
        assert "denoise: CUDA-graph capture and replay (position A)" not in checks


def test_the_report_names_the_attention_kernel_that_ran(denoise_json_run, capsys):
    from lltrace.pipeline.attention import describe_backend, resolve_backend
    want = describe_backend(resolve_backend("auto", "cuda" if torch.cuda.is_available() else "cpu"))
    assert json.loads(denoise_json_run[1])["attention"] == want
    code, out, _ = run(capsys, "--preset", "baseline", "--stage", "denoise", "--no-compile")
    assert code == 0 and f"attention: {want}" in " ".join(out.split())   # the text report, wrapped at 80


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU behaviour")
def test_what_graphs_would_save_needs_cuda_on_cpu(denoise_json_run, capsys):
    _, out, _ = denoise_json_run
    (stage,) = json.loads(out)["stages"]
    g = stage["graph_savings"]
    assert g["note"] == "needs CUDA" and g["text"] == "needs CUDA"
    assert g["ms"] is None and g["share"] is None and g["call_ms"] is None
    # the report's line for the stage
    from rich.console import Console

    from lltrace.doctor.report import GraphSavings, StageReport
    from lltrace.ui.doctor_report import stage_block

    console = Console(width=80, record=True, color_system=None)
    for item in stage_block(StageReport("denoise", graph_savings=GraphSavings(**{
            k: v for k, v in g.items() if k != "text"}))):
        console.print(item)
    assert "  CUDA graphs would save: needs CUDA" in console.export_text().splitlines()
    capsys.readouterr()


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU behaviour")
def test_the_text_report_says_needs_cuda_per_stage(capsys):
    code, out, _ = run(capsys, "--preset", "baseline", "--stage", "denoise,decode", "--no-compile")
    assert code == 0
    lines = out.splitlines()
    assert lines.count("  CUDA graphs would save: needs CUDA") == 2


def test_a_stage_that_raises_still_prints_the_report(capsys, monkeypatch):
    """The stream raising at the second block (an OOM on a GPU, say): the stages checked before
    are reported, the error is named, the command exits 1."""
    from lltrace.pipeline.generator import StreamingPipeline

    real, calls = StreamingPipeline.generate_block, []

    def generate_block(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (planted)")
        return real(self, *a, **kw)

    monkeypatch.setattr(StreamingPipeline, "generate_block", generate_block)
    code, out, _ = run(capsys, "--preset", "baseline", "--stage", "denoise", "--no-compile", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["stopped"] == "at block 2/3: RuntimeError: CUDA out of memory (planted)"
    (st,) = data["stages"]
    assert any("not called at two positions" in f["message"] for f in st["findings"])
    calls.clear()
    code, out, _ = run(capsys, "--preset", "baseline", "--stage", "denoise", "--no-compile")
    assert code == 1 and "the doctor stopped at block 2/3: RuntimeError" in out
