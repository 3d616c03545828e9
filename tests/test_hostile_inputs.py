"""The hostile-input corpus (tests/hostile_inputs.py) through budget, budget --json, export, diff,
view (up to opening the app) and doctor --module: every case gets exactly its outcome (a
one-line error with exit code 2, or a result with the named warning), within a timeout, never
a traceback. Permission cases run for real as a non-root user (`nobody`, via setpriv or
runuser) when the suite runs as root. Hypothesis adds random run-directory files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hostile_inputs as hi

TESTS = Path(__file__).resolve().parent
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """name -> (path, baseline run, scratch dir), built on first use."""
    root = tmp_path_factory.mktemp("hostile")
    built: dict[str, tuple[Path, Path, Path]] = {}

    def get(case: hi.Case):
        if case.name not in built:
            built[case.name] = hi.prepare(case, root)
        return built[case.name]

    yield get
    hi.restore(root)


PARAMS = [pytest.param(case, command, id=f"{case.name}-{command}",
                       marks=[pytest.mark.skipif(case.permission and ROOT, reason="root reads mode-000 files: "
                                                 "test_corpus_as_non_root runs this case as nobody")])
          for case in hi.CASES for command in case.commands()]


@pytest.mark.timeout(hi.CASE_TIMEOUT_S)
@pytest.mark.parametrize("case,command", PARAMS)
def test_corpus(case, command, corpus, monkeypatch, tmp_path):
    monkeypatch.setenv("LLTRACE_TRACES", str(tmp_path / "traces"))
    path, base, work = corpus(case)
    res = hi.invoke(command, path, base, work)
    failure = hi.check(case.expect[command], res)
    assert failure is None, failure


def test_corpus_covers_every_command_and_outcome():
    seen = {(c, type(case.expect[c]).__name__) for case in hi.CASES for c in case.commands()}
    for command in hi.COMMANDS:
        assert (command, "Error") in seen, command
    for command in hi.TRACE_COMMANDS:
        assert {(command, "Warn"), (command, "Ok")} <= seen, command
    assert sum(case.permission for case in hi.CASES) >= 5


def _as_nobody() -> list[str] | None:
    """A command prefix that runs as the user nobody, or None."""
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    return None


@pytest.mark.timeout(600)
@pytest.mark.skipif(not ROOT, reason="not root: the permission cases already ran for real in test_corpus")
def test_corpus_as_non_root(tmp_path):
    """The permission cases (and the cases next to them) as `nobody`, in a fresh process that
    builds its own corpus, so mode 000 means what it means for a user."""
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("neither setpriv nor runuser is installed: cannot drop root to test permission errors")
    env = {**os.environ, "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "KINETO_LOG_LEVEL": "5",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    probe = subprocess.run([*prefix, sys.executable, "-c", "import lltrace, hostile_inputs"], env=env,
                           capture_output=True, text=True, cwd="/tmp", timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run this interpreter or read the checkout: {probe.stderr.strip()[-300:]}")
    names = [c.name for c in hi.CASES if c.permission] + ["valid-run", "valid-trace", "fifo-as-trace"]
    proc = subprocess.run([*prefix, sys.executable, str(TESTS / "hostile_inputs.py"), *names], env=env,
                          capture_output=True, text=True, cwd="/tmp", timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    expected = {(n, c) for n in names for c in hi.BY_NAME[n].commands()}
    assert {(r["case"], r["command"]) for r in rows} == expected
    failures = [f"{r['case']}-{r['command']}: {r['failure']}" for r in rows if r["failure"]]
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- hypothesis

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
    | st.sampled_from(["\ud800", "steady", "first", "cuda", "prompt_switch", "done", "running"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)
FRAME_KEYS = ["frame", "block", "prompt", "kind", "ready_s", "latency_ms", "block_ms", "frames_in_block", "clock"]
frame_lines = st.lists(st.dictionaries(st.sampled_from(FRAME_KEYS), json_values, max_size=9), max_size=6)
meta_docs = st.dictionaries(st.sampled_from(["status", "end", "device", "knobs", "model", "ceilings", "pid",
                                             "host", "run_id", "preset", "profile", "optimizations", "started"]),
                            json_values, max_size=8)


@pytest.fixture(scope="module")
def run_template(tmp_path_factory):
    return hi.make_run(tmp_path_factory.mktemp("template"))


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("LLTRACE_FUZZ_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=meta_docs | json_values, summary=json_values, frames=frame_lines, events=st.lists(json_values, max_size=4))
def test_random_run_files_are_read_or_warned_about(run_template, tmp_path_factory, meta, summary, frames, events):
    """Whatever meta.json / summary.json / frames.jsonl / events.jsonl hold, diff, export and view
    read the run (exit code 0, warnings for what they dropped) and never raise."""
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(run_template, run, dirs_exist_ok=True)
    (run / "meta.json").write_text(json.dumps(meta))
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "frames.jsonl").write_text("".join(json.dumps(f) + "\n" for f in frames))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    work = tmp_path_factory.mktemp("out")
    for command in ("diff", "export", "view"):
        res = hi.invoke(command, run, run_template, work)
        assert hi.check(hi.Ok(), res) is None, (command, hi.check(hi.Ok(), res))


hostile_scalars = st.sampled_from([10**400, -10**400, 1e308, -1e308, float("nan"), float("inf"), -1.0, 2**63,
                                   "\ud800", "1" * 30, "²", None, True, [], {}])


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("LLTRACE_FUZZ_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["ts", "dur", "name", "pid", "tid", "id", "cat"]),
                                hostile_scalars), min_size=1, max_size=8))
def test_hostile_field_values_are_warned_about_or_read(tmp_path_factory, edits):
    """Hostile values in any field of any event: budget --json and export finish (exit code 0)
    or refuse in one line, and print nothing they cannot encode."""
    data = hi.base_trace()
    events = data["traceEvents"]
    for i, key, value in edits:
        events[i % len(events)][key] = value
    d = tmp_path_factory.mktemp("t")
    path = d / "t.json"
    path.write_text(json.dumps(data))   # NaN / Infinity as Python's json writes them
    for command in ("budget-json", "export"):
        res = hi.invoke(command, path, path, d)
        assert res.crash is None and "Traceback" not in res.err, res.crash or res.err
        assert res.rc in (0, 2), (res.rc, res.err)
        if res.rc == 2:   # refused in one line (export --check may refuse the copy it wrote)
            failure = hi.check(hi.Error(""), res)
            assert failure is None, failure


APP_CASES = ["frames-wrong-types", "frames-huge-values", "meta-wrong-types", "meta-is-a-list", "events-wrong-types",
             "summary-wrong-types", "killed-run", "frames-half-written-line"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", APP_CASES)
def test_view_app_renders_what_the_check_let_through(name, corpus):
    """What `lltrace view` hands the app (the run read before opening) renders: with wrong types
    in frames.jsonl or meta.json the app used to raise inside a handler (ValueError,
    AttributeError) and exit 0 after a traceback."""
    import asyncio

    from lltrace.ui.app import LltraceApp
    from lltrace.ui.recorded import load_recorded, load_run_budget
    from lltrace.ui.widgets import BudgetTree

    path, _, _ = corpus(hi.BY_NAME[name])
    rec = load_recorded(path)
    rec.budget = load_run_budget(rec)

    async def go():
        app = LltraceApp(recorded=rec)
        async with app.run_test(size=(150, 45)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.pause()
            assert app.state.startswith("recorded run: ")
            assert app.query_one(BudgetTree).budget is rec.budget

    asyncio.run(go())
    assert rec.warnings, "each of these cases is warned about"
