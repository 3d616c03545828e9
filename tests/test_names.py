"""Region names (lltrace/names.py, docs/FORMATS.md §1): written and parsed in one place."""
import pytest

from lltrace import names


def test_names_follow_the_format():
    assert names.name(names.BLOCK, 3) == "ll/block[3]"
    assert names.name(names.LAYER, 17) == "ll/layer[17]"
    assert names.name(names.SELF_ATTN) == "ll/self_attn"
    assert names.CLOCK_SYNC == "ll/clock_sync"


@pytest.mark.parametrize("kind,index", [(k, 4 if k in names.INDEXED else None) for k in sorted(names.KINDS)])
def test_every_kind_round_trips(kind, index):
    full = names.name(kind, index)
    assert names.parse(full) == (kind, index)
    assert names.kind(full) == kind and names.is_lltrace(full)
    assert names.split(names.leaf(full)) == (kind, index)


def test_parsing_foreign_and_odd_names():
    assert names.parse("aten::mm") is None and names.kind("nn.Module: Linear") == "nn.Module: Linear"
    assert names.split("layer[07]") == ("layer", 7)
    assert names.split("blocks.0[2]") == ("blocks.0", 2)        # foreign leaves with an index split too
    assert names.split("layer[x]") == ("layer[x]", None)
    assert names.index_of("ll/block[5]", names.BLOCK) == 5
    assert names.index_of("ll/step[5]", names.BLOCK) is None and names.index_of("block[5]", names.BLOCK) is None
    assert names.leaf("ProfilerStep#3") == "ProfilerStep#3"


@pytest.mark.parametrize("kind,index", [("blocks", 1), ("block", None), ("ffn", 2)])
def test_bad_names_are_programming_errors(kind, index):
    with pytest.raises(ValueError):
        names.name(kind, index)


def test_the_pipeline_capture_and_trace_layers_share_the_names():
    from lltrace.capture import profiler
    from lltrace.capture.hooks import DEFAULT_PATTERNS
    from lltrace.export import timeline
    from lltrace.trace import regions

    assert profiler.CLOCK_SYNC == timeline.CLOCK_SYNC == names.CLOCK_SYNC
    assert dict(DEFAULT_PATTERNS)["blocks.{k}"].format(k=2) == names.name(names.LAYER, 2)
    assert regions.node_key("ll/block[3]", True) == "block" and regions.node_key("ll/layer[3]", True) == "layer[3]"
    assert regions.node_key(names.CLOCK_SYNC, True) is None
