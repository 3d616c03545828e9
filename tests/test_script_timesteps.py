"""`lltrace run --script` / `lltrace.profile` read a GPU timestep without a host sync (issue #15):
after block 0 each root call is classified by its place in the block and its timestep checked
later (lltrace.capture.script._Timesteps). On the CPU the predicting path is forced on CPU
tensors (`LAZY_DEVICES`), so that it is what runs; the CUDA test checks that no sync is made."""
import json
from pathlib import Path

import pytest
import torch
from helpers.foreign_pipeline import ForeignPipeline, make_noise
from torch import nn

import lltrace
from lltrace.capture import script
from lltrace.trace.budget import load_budget


def frames_of(run: Path):
    return [json.loads(line)["block"] for line in (run / "frames.jsonl").read_text().splitlines()]


def notes_of(run: Path):
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e["message"] for e in events if e["kind"] == "note"]


def tree_names(run: Path):
    block = next(c for c in load_budget(run).tree.children if c.name == "block")
    return [c.name for c in block.children]


@pytest.fixture
def predicting(monkeypatch):
    monkeypatch.setattr(script._Timesteps, "LAZY_DEVICES", frozenset({"cpu", "cuda"}))


def run_foreign(out: Path, blocks: int, **kw):
    pipe = ForeignPipeline(layers=2)
    with lltrace.profile(pipe, out=out, profile_blocks=(2, 3), regions="layer", kernel_map=False) as run:
        pipe.inference(make_noise(blocks), **kw)
    return run


def test_predicted_timesteps_give_the_same_blocks_regions_and_frames(tmp_path, monkeypatch):
    exact = run_foreign(tmp_path / "exact", 4)
    assert exact.detector.timesteps.copies == 0          # CPU tensors are read as they are
    monkeypatch.setattr(script._Timesteps, "LAZY_DEVICES", frozenset({"cpu", "cuda"}))
    lazy = run_foreign(tmp_path / "lazy", 4)
    ts = lazy.detector.timesteps
    assert ts.pattern == (4, True) and not ts.exact
    assert ts.copies == 3 * 5                            # every root call after block 0 was predicted
    assert frames_of(tmp_path / "lazy") == frames_of(tmp_path / "exact")
    assert lazy.result.summary["blocks"] == exact.result.summary["blocks"] == 4
    assert tree_names(tmp_path / "lazy") == tree_names(tmp_path / "exact")
    assert tree_names(tmp_path / "lazy")[:5] == ["step[0]", "step[1]", "step[2]", "step[3]", "context"]
    assert not any("pattern" in n for n in notes_of(tmp_path / "lazy"))


def test_per_block_decode_and_recache_keep_their_blocks_when_predicted(tmp_path, predicting):
    exact_dir, lazy_dir = tmp_path / "e", tmp_path / "l"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(script._Timesteps, "LAZY_DEVICES", frozenset())
        run_foreign(exact_dir, 4, decode="block", switch_at={2: "a dog"})
    lazy = run_foreign(lazy_dir, 4, decode="block", switch_at={2: "a dog"})
    assert lazy.detector.timesteps.copies > 0 and not lazy.detector.timesteps.exact
    assert frames_of(lazy_dir) == frames_of(exact_dir)
    assert json.loads((lazy_dir / "meta.json").read_text())["switches"] == {"2": ""}


class Root(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, timestep):
        return self.lin(x)


def test_a_broken_pattern_is_noted_and_detection_goes_back_to_exact(tmp_path, predicting):
    root = Root()
    x = torch.zeros(1, 3, 4, 2, 2)
    schedule = [[1000, 750, 500, 250, 0], [1000, 750, 500, 250, 0], [1000, 500, 0], [1000, 750, 500, 250, 0]]
    with lltrace.profile(root, out=tmp_path / "run", profile_blocks=None, regions="block", kernel_map=False) as run:
        for block in schedule:
            for t in block:
                root(x, timestep=torch.full((1, 3), float(t)))
    ts = run.detector.timesteps
    assert ts.exact
    assert run.result.summary["blocks"] == 4                 # the short block still ends at its clean call
    assert sorted(set(frames_of(tmp_path / "run"))) == [0, 1, 2, 3]
    assert any("root call 2 of block 2 had timestep 0" in n and "misnamed" in n for n in notes_of(tmp_path / "run"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_between_root_calls_after_block_0(tmp_path):
    root = Root().cuda()
    x = torch.zeros(1, 3, 4, 2, 2, device="cuda")
    steps = [torch.full((1, 3), float(t), device="cuda") for t in (1000, 750, 500, 250, 0)]
    with lltrace.profile(root, out=tmp_path / "run", profile_blocks=None, regions="layer", kernel_map=False) as run:
        for t in steps:                                       # block 0: read exactly, learns the pattern
            root(x, timestep=t)
        torch.cuda.synchronize()
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")              # any sync below raises
        try:
            for _ in range(3):
                for t in steps:
                    root(x, timestep=t)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    assert run.detector.timesteps.copies == 15 and not run.detector.timesteps.exact
    assert run.result.summary["blocks"] == 4


def test_a_noisy_context_call_pattern_is_predicted_too(tmp_path, predicting):
    """Code whose cache-writing call has a small timestep (LongLive's context_noise > 0): block
    0 teaches 5 noisy calls and no clean one; later blocks start where the timestep goes up."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(script._Timesteps, "LAZY_DEVICES", frozenset())
        run_foreign(tmp_path / "e", 4, context_noise=10.0)
    lazy = run_foreign(tmp_path / "l", 4, context_noise=10.0)
    ts = lazy.detector.timesteps
    # block 0 ends only when block 1's first timestep goes up: that one is read exactly too
    assert ts.pattern == (5, False) and not ts.exact and ts.copies == 3 * 5 - 1
    assert frames_of(tmp_path / "l") == frames_of(tmp_path / "e")
    assert lazy.result.summary["blocks"] == 4
