"""`lltrace budget`: output for people and scripts, and one-line errors for bad input."""
from __future__ import annotations

import gzip
import json
import sys

import pytest

from lltrace.commands.cli import main
from lltrace.analysis import hta
from helpers.synthetic_trace import lltrace_run, write


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    return write(tmp_path_factory.mktemp("cli"), lltrace_run(blocks=2, steps=2, layers=2).to_json(), gz=True)


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def run(capsys, *args):
    code = main(["budget", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_for_scripts(capsys, trace_file):
    code, out, err = run(capsys, trace_file, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "lltrace-budget/1" and data["partial"] is False
    assert [c["name"] for c in data["tree"]["children"]][:1] == ["block"]
    assert len(data["kernels"]) > 5


def test_json_depth_and_top_trim_the_output(capsys, trace_file):
    code, out, _ = run(capsys, trace_file, "--json", "--depth", "1", "--top", "3")
    data = json.loads(out)
    assert all(not c["children"] for c in data["tree"]["children"])
    assert len(data["kernels"]) == 3


def test_tree_report(capsys, trace_file):
    code, out, _ = run(capsys, trace_file, "--depth", "3")
    assert code == 0
    for text in ("GPU", "% of", "parent", "p95", "host", "block", "step[1]", "layer[0]", "context", "(unattributed)"):
        assert text in out
    assert "self_attn" not in out        # below --depth 3
    assert "Traceback" not in out


def test_kernel_report(capsys, trace_file):
    code, out, _ = run(capsys, trace_file, "--by", "kernel", "--top", "2")
    assert code == 0
    # the short name (lltrace.trace.kernels.short_names) and its class at 200 columns
    assert "cudnn sdpa flash fprop sm90 f16" in out and "attention" in out
    assert "(" in out and "more)" in out


def test_run_directory_and_run_id(capsys, tmp_path, monkeypatch):
    run_dir = tmp_path / "20261123-101010-baseline"
    run_dir.mkdir()
    write(run_dir, lltrace_run(blocks=1, steps=1, layers=1).to_json(), "trace.json", gz=True)
    from lltrace.pipeline.config import load_model_config
    from lltrace.pipeline.presets import load_preset
    (run_dir / "meta.json").write_text(json.dumps({
        "run_id": run_dir.name, "preset": "baseline", "knobs": load_preset("baseline").to_dict(),
        "model": load_model_config("tiny").to_dict(), "ceilings": {"bf16_tflops": 500.0}}))
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path))
    code, out, _ = run(capsys, run_dir.name, "--json")
    data = json.loads(out)
    assert code == 0 and data["run"]["preset"] == "baseline" and data["ceiling_tflops"] == 500.0
    assert data["tree"]["children"][0]["flops"] > 0
    code, out, _ = run(capsys, run_dir, "--ceiling", "250")
    assert code == 0 and "TFLOP/s" in out and "(% ceil)" in out and "250 TFLOP/s (bf16" in out


def test_budget_json_in_budget_out(capsys, tmp_path, trace_file):
    _, out, _ = run(capsys, trace_file, "--json")
    saved = tmp_path / "b.json"
    saved.write_text(out)
    code, again, _ = run(capsys, saved, "--json")
    assert code == 0 and json.loads(again)["tree"] == json.loads(out)["tree"]


def _bad_inputs(tmp_path):
    good = json.dumps(lltrace_run(blocks=1, steps=1, layers=1).to_json(), indent=1).encode()
    cases = {
        "empty.json": b"",
        "notatrace.json": b'{"hello": "world"}',
        "array.json": b"[1, 2, 3]",
        "early-cut.json.gz": gzip.compress(good)[:20],
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    return cases


@pytest.mark.parametrize("name", ["empty.json", "notatrace.json", "array.json", "early-cut.json.gz", "missing.json"])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, name):
    _bad_inputs(tmp_path)
    code, out, err = run(capsys, tmp_path / name)
    assert code == 2 and out == ""
    assert err.startswith("lltrace: error:") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("gz", [False, True])
def test_cut_off_trace_is_a_clearly_marked_partial_budget(capsys, tmp_path, gz):
    good = json.dumps(lltrace_run(blocks=2, steps=1, layers=1).to_json(), indent=1).encode()
    raw = gzip.compress(good)[: len(gzip.compress(good)) * 2 // 3] if gz else good[: len(good) * 2 // 3]
    p = tmp_path / ("cut.json.gz" if gz else "cut.json")
    p.write_bytes(raw)
    code, out, _ = run(capsys, p)
    assert code == 0 and out.startswith("PARTIAL BUDGET:")
    code, out, _ = run(capsys, p, "--json")
    data = json.loads(out)
    assert data["partial"] is True and data["trace"]["stop_reason"]


def test_trace_without_gpu_events_says_so(capsys, tmp_path):
    events = [e for e in lltrace_run(blocks=1, steps=1, layers=1, extras=False).to_json()["traceEvents"]
              if e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset")]
    p = write(tmp_path, {"traceEvents": events})
    code, out, _ = run(capsys, p)
    assert code == 0 and "host time only" in out and "no GPU events" in out


def test_hta_missing_is_a_clear_error(capsys, trace_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "hta", None)   # as if not installed
    monkeypatch.setitem(sys.modules, "hta.trace_analysis", None)
    code, out, err = run(capsys, trace_file, "--hta")
    assert code == 2
    assert err.strip() == f"lltrace: error: {hta.NOT_INSTALLED}"
    assert hta.NOT_INSTALLED == "HTA is not installed: pip install 'lltrace[hta]'"


def test_progress_bar_on_a_terminal(tmp_path, trace_file, monkeypatch):
    from rich.console import Console

    import lltrace.commands.budget as cmd
    from lltrace.trace.loader import load_trace, resolve_source

    monkeypatch.setattr(cmd, "PROGRESS_ABOVE", 0)
    console = Console(file=open(tmp_path / "err.txt", "w"), force_terminal=True, width=100)
    trace = cmd._load_with_progress(load_trace, resolve_source(trace_file), console)
    console.file.close()
    assert len(trace) > 0
    assert "reading" in (tmp_path / "err.txt").read_text()


def test_broken_budget_json_is_a_one_line_error(capsys, tmp_path):
    p = tmp_path / "b.json"
    p.write_text('{"format": "lltrace-budget/1", "tree": {"name": ')
    code, out, err = run(capsys, p)
    assert code == 2 and err.startswith("lltrace: error:") and err.count("\n") == 1
    p.write_text('{"format": "lltrace-budget/1", "tree": {"name": "run", "children": [{"gpu_ms": "x"}]}}')
    code, out, err = run(capsys, p)
    assert code == 2 and "not a budget JSON" in err
