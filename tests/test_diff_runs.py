"""`lltrace diff` on real runs: the tiny pipeline through the capture session on CPU, two presets
that differ (baseline: 4 steps, Wan VAE decoder; ultra: 2 steps, window 6, the small fast
decoder), plus the real H100 traces of tests/data/ and traces/examples/ when present."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lltrace.commands.cli import main
from lltrace.analysis import noise
from lltrace.analysis.diff import diff
from lltrace.analysis.side import load_side
from lltrace.analysis.gate import gate, parse_pct
from lltrace.errors import LltraceError
from helpers.tiny_run import make_tiny_run

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted(p for p in (ROOT / "tests" / "data").glob("*.json*") if p.is_file()) + \
    sorted(p for p in (ROOT / "traces" / "examples").glob("*") if p.is_dir() and any(p.glob("trace.json*")))


BLOCKS = 10   # 8 steady blocks per run: the headline's U test stays significant with an outlier or two


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("diffruns")
    return (make_tiny_run("baseline", base / "baseline", blocks=BLOCKS, switch_at=5),
            make_tiny_run("ultra", base / "ultra", blocks=BLOCKS, switch_at=5))


@pytest.fixture(scope="module")
def sides(runs):
    return load_side(runs[0]), load_side(runs[1])


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def cli(capsys, *args):
    code = main(["diff", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


# -- the region that changed, in the expected direction --------------------------------------

@pytest.mark.slow
def test_different_presets_show_the_expected_directions(sides):
    A, B = sides
    d = diff(A, B)
    assert d.unit == "block" and d.units == (BLOCKS, BLOCKS) and d.metric == "cpu"
    # the decoder is the change that dominates: Wan VAE -> the small fast decoder
    decode = d.tree.find(("block", "decode"))
    assert decode.delta < 0 and decode.pct < -50
    assert decode.judgement.verdict == noise.FASTER and decode.judgement.n_a == BLOCKS
    block = d.tree.find(("block",))
    assert block.judgement.verdict == noise.FASTER
    # 4 denoising steps -> 2: steps 2 and 3 exist only in A
    only_a = {"/".join(n.path) for n in d.only_in_a}
    assert {"block/step[2]", "block/step[3]"} <= only_a
    assert not any(p.startswith("block/step[0]") or p.startswith("block/step[1]") for p in only_a)
    steps = next(n for n in d.by_name if n.name == "step")
    assert (steps.a_count, steps.b_count) == (4 * BLOCKS, 2 * BLOCKS)     # 4 vs 2 steps per block
    # siblings are sorted by impact: decode first under block
    assert d.tree.find(("block",)).children[0].name == "decode"
    # headline from summary.json / frames.jsonl
    mpf = d.metric_named("ms_per_frame")
    assert mpf.b < mpf.a and mpf.judgement.verdict == noise.FASTER
    fps = d.metric_named("fps")
    assert fps.b > fps.a and fps.judgement.verdict == noise.FASTER and fps.regression_pct < 0
    assert d.metric_named("first_frame_ms").judgement.verdict == noise.TOO_FEW
    assert d.metric_named("prompt_switch_ms") is not None
    # host ops: the Wan VAE's 3-D convolutions are gone (the generator's patch embedding keeps a few)
    ops = {r["name"]: r for r in d.kernels.changed + d.kernels.disappeared}
    assert d.kernels.kind == "op"
    conv3d = ops["aten::conv3d"]
    assert conv3d["b_ms"] is None or conv3d["b_ms"] < 0.5 * conv3d["a_ms"]


@pytest.mark.slow
def test_reverse_direction_is_slower(sides):
    A, B = sides
    d = diff(B, A)
    assert d.tree.find(("block", "decode")).judgement.verdict == noise.SLOWER
    assert {"block/step[2]", "block/step[3]"} <= {"/".join(n.path) for n in d.only_in_b}


@pytest.mark.slow
def test_a_trace_against_itself_reports_no_change(sides):
    A, _ = sides
    d = diff(A, A)
    assert {n.judgement.verdict for n in d.tree.walk()} == {noise.SAME}
    assert all(n.delta == 0 for n in d.tree.walk())
    assert {m.judgement.verdict for m in d.headline} == {noise.SAME}
    assert not d.only_in_a and not d.only_in_b
    assert all(r["delta_ms"] == 0 for r in d.kernels.changed) and not d.kernels.appeared
    assert not gate(d, 0.0).failed


# -- the CLI: report, JSON, markdown, exit codes ---------------------------------------------

@pytest.mark.slow
def test_report_puts_the_headline_first(capsys, runs):
    code, out, err = cli(capsys, *runs, "--depth", "2")
    assert code == 0
    assert out.index("ms per video frame") < out.index("region") < out.index("host ops")
    for text in ("decode", "only in A", "step[2..3]", "faster", "aten::conv3d", "Mann-Whitney"):
        assert text in out
    assert "Traceback" not in out + err


@pytest.mark.slow
def test_json_and_markdown(capsys, runs):
    code, out, _ = cli(capsys, *runs, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "lltrace-diff/1" and data["unit"] == "block"
    assert data["a"]["preset"] == "baseline" and data["b"]["preset"] == "ultra"
    block = next(c for c in data["tree"]["children"] if c["name"] == "block")
    decode = next(c for c in block["children"] if c["name"] == "decode")
    assert decode["verdict"] == "faster" and decode["delta_ms"] < 0 and decode["p"] < 0.05
    assert {"path": "block/step[3]", "ms": pytest.approx(
        next(c for c in block["children"] if c["name"] == "step[3]")["a_ms"])} in data["only_in_a"]
    assert data["gate"] is None
    code, out, _ = cli(capsys, *runs, "--markdown")
    assert code == 0
    assert out.startswith("## lltrace diff") and "| metric | A | B |" in out and "`decode`" in out


@pytest.mark.slow
def test_fail_above_exit_codes(capsys, runs):
    base, ultra = runs
    code, out, err = cli(capsys, base, ultra, "--fail-above", "5%")
    assert code == 0 and "ok ms_per_frame" in out
    code, out, err = cli(capsys, ultra, base, "--fail-above", "5%")
    assert code == 1 and "REGRESSION ms_per_frame" in out
    code, out, err = cli(capsys, ultra, base, "--fail-above", "5%", "--json")
    assert code == 1 and json.loads(out)["gate"]["failed"] is True and "REGRESSION" in err
    # any metric, including a region path; FPS regresses when it drops
    assert cli(capsys, ultra, base, "--fail-above", "20", "--metric", "block/decode")[0] == 1
    assert cli(capsys, base, ultra, "--fail-above", "20", "--metric", "block/decode")[0] == 0
    assert cli(capsys, ultra, base, "--fail-above", "5%", "--metric", "fps")[0] == 1
    # a trace against itself never fails, even at 0%
    assert cli(capsys, base, base, "--fail-above", "0%")[0] == 0
    # bad input: exit 2 with a one-line message
    for args, message in (((base, ultra, "--fail-above", "five"), "bad --fail-above"),
                          ((base, ultra, "--fail-above", "-3%"), "bad --fail-above"),
                          ((base, ultra, "--fail-above", "5%", "--metric", "nope"), "--metric nope"),
                          ((base, ultra, "--metric", "fps"), "give --fail-above"),
                          ((base, ultra, "--min-effect", "big"), "bad --min-effect"),
                          ((base, ultra, "--json", "--markdown"), "exclusive")):
        code, out, err = cli(capsys, *args)
        assert code == 2 and message in err and "Traceback" not in out + err, args


def test_parse_pct():
    assert parse_pct("5%") == 5.0 and parse_pct(" 0.5 ") == 0.5
    with pytest.raises(LltraceError):
        parse_pct("x%")


@pytest.mark.slow
def test_budget_json_inputs(capsys, tmp_path, runs):
    base, ultra = runs
    assert main(["budget", str(base), "--json"]) == 0
    saved = tmp_path / "base-budget.json"
    saved.write_text(capsys.readouterr().out)
    code, out, err = cli(capsys, saved, ultra, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["a"]["kind"] == "budget"
    # the run directory next to the budget's source gives the headline
    assert next(m for m in data["headline"] if m["name"] == "ms_per_frame")["a"] is not None
    block = next(c for c in data["tree"]["children"] if c["name"] == "block")
    assert block["delta_ms"] < 0 and block["verdict"] == noise.NO_DATA
    assert any("budget JSON" in w for w in data["warnings"])
    # a budget JSON against the trace it came from: no change
    code, out, _ = cli(capsys, saved, base, "--json")
    data = json.loads(out)
    assert all(c["verdict"] in (noise.SAME,) for c in data["tree"]["children"])


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(capsys, tmp_path, runs):
    base, _ = runs
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    empty = tmp_path / "empty.json.gz"
    empty.write_bytes(b"")
    for args, message in (((tmp_path / "missing", base), "A: no such file"),
                          ((base, junk), "B: "),
                          ((empty, base), "A: "),
                          ((base, tmp_path), "B: ")):
        code, out, err = cli(capsys, *args)
        assert code == 2, args
        assert message in err and "Traceback" not in out + err
        assert len(err.strip().splitlines()) == 1


# -- real H100 traces (tests/data/, traces/examples/) ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_trace_against_itself(capsys, path):
    code, out, err = cli(capsys, path, path, "--json", "--fail-above", "0%")
    assert code == 0, err
    data = json.loads(out)

    def verdicts(node):
        yield node["verdict"]
        for c in node["children"]:
            yield from verdicts(c)
    assert set(verdicts(data["tree"])) == {noise.SAME}
    assert data["kernels"] is not None and not data["kernels"]["appeared"] and not data["kernels"]["disappeared"]


@pytest.mark.slow
def test_damaged_run_files_are_warnings(capsys, tmp_path, runs):
    """A killed run leaves a half-written line; a broken summary.json loses the headline, not the diff."""
    import shutil

    base, ultra = runs
    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    (broken / "summary.json").write_text("{")
    with open(broken / "frames.jsonl", "a") as f:
        f.write('{"frame": 99, "blo')
    code, out, err = cli(capsys, broken, ultra, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert any("summary.json is unreadable" in w for w in data["warnings"])
    assert any("frames.jsonl: 1 unreadable line" in w for w in data["warnings"])
    names = {m["name"]: m for m in data["headline"]}
    assert names["ms_per_frame"]["verdict"] == noise.ONLY_B and names["host_ms"]["a"] is not None


def test_the_gate_does_not_fail_open_on_too_few_instances(capsys):
    """ultra against baseline is a 4x regression with only 4 frames-blocks a side: the noise
    test cannot decide there, so the point estimate does, and the gate fails."""
    ex = Path(__file__).resolve().parent.parent / "traces" / "examples"
    code = main(["diff", str(ex / "h100-ultra"), str(ex / "h100-baseline"), "--fail-above", "5%"])
    out = capsys.readouterr()
    assert code == 1
    assert "REGRESSION" in out.out + out.err and "too few instances" in out.out + out.err


EXAMPLES = ROOT / "traces" / "examples"


@pytest.mark.skipif(not (EXAMPLES / "h200-baseline-2").is_dir(), reason="example runs not in this checkout")
def test_two_identical_h200_baseline_runs_differ_only_within_noise(capsys):
    """Two runs of the same command on the H200 (the noise calibration of BENCHMARKS.md): no
    region is called faster or slower, and the CI gate passes."""
    a, b = str(EXAMPLES / "h200-baseline"), str(EXAMPLES / "h200-baseline-2")
    assert main(["diff", a, b, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)

    def walk(n):
        yield n
        for c in n.get("children", []):
            yield from walk(c)
    moved = [(n["path"], n["verdict"]) for n in walk(d["tree"]) if n["verdict"] in (noise.FASTER, noise.SLOWER)]
    assert moved == []
    assert main(["diff", a, b, "--fail-above", "5%"]) == 0
