"""Module-name patterns -> region names (torch-free, so that trace readers can use them).

Pattern syntax (one pattern = dot-separated segments, matched against the last segments of
the name): `{k}` an integer index, captured for the region template; `*` any one segment;
`a|b|c` any of these names; anything else literally.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from lltrace import names
from lltrace.errors import LltraceError

DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("blocks.{k}", names.PREFIX + names.LAYER + "[{k}]"),
    ("blocks.*.self_attn", names.name(names.SELF_ATTN)),
    ("blocks.*.cross_attn", names.name(names.CROSS_ATTN)),
    ("blocks.*.ffn", names.name(names.FFN)),
    ("blocks.*.norm1|norm2|norm3", names.name(names.NORM)),
    ("patch_embedding|text_embedding|time_embedding|time_projection", names.name(names.EMBED)),
    ("head", names.name(names.HEAD)),
)
"""(module-name pattern, region name template) in Wan2.1 / LongLive module names."""


def check_patterns(patterns: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    """The patterns as (pattern, region template) pairs, or LltraceError naming the bad one: a
    pair of strings whose template fills from the pattern's `{k}` captures and gives an
    lltrace region name (`ll/<kind>` of docs/FORMATS.md §1, `ll/layer[{k}]` for indexed kinds)."""
    out = []
    for item in patterns:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise LltraceError(f"bad region pattern {item!r}", "use (module-name pattern, region name)")
        path, template = item
        keys = [s[1:-1] for s in path.split(".") if s.startswith("{") and s.endswith("}")]
        try:
            region = template.format(**{k: 0 for k in keys})
        except (KeyError, IndexError, ValueError):
            raise LltraceError(f"region {template!r} uses a placeholder that pattern {path!r} does not capture") from None
        parsed = names.parse(region)
        if parsed is None or parsed[0] not in names.KINDS or (parsed[1] is None) == (parsed[0] in names.INDEXED):
            raise LltraceError(f"pattern {path!r}: {template!r} is not an lltrace region",
                               "use ll/layer[{k}], ll/self_attn, ll/cross_attn, ll/ffn, ll/norm, ll/embed, ll/head")
        out.append((path, template))
    return tuple(out)


def parse_regions_map(data: Any) -> tuple[tuple[str, str], ...]:
    """A `--regions-map` YAML document: a mapping `pattern: region` (in order) or a list of
    [pattern, region] pairs, e.g. `transformer_blocks.{k}: ll/layer[{k}]`. Checked with
    check_patterns; LltraceError if it is neither."""
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, list):
        items = data
    else:
        raise LltraceError("a regions map is a mapping `module-name pattern: region`",
                           "e.g. `transformer_blocks.{k}: ll/layer[{k}]`")
    if not items:
        raise LltraceError("the regions map is empty")
    return check_patterns([tuple(i) if isinstance(i, list) else i for i in items])


def _match_segment(pattern: str, segment: str, captures: dict[str, str]) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("{") and pattern.endswith("}"):
        if not segment.isdigit():
            return False
        captures[pattern[1:-1]] = segment
        return True
    return segment in pattern.split("|")


def match_name(pattern: str, qualname: str) -> dict[str, str] | None:
    """Captures if `pattern` matches the end of `qualname` (see module doc), else None."""
    pat = pattern.split(".")
    segs = [s for s in qualname.split(".") if s] if qualname else []
    if len(segs) < len(pat):
        return None
    captures: dict[str, str] = {}
    for p, s in zip(pat, segs[len(segs) - len(pat):]):
        if not _match_segment(p, s, captures):
            return None
    return captures


def first_match(patterns: Sequence[tuple[str, str]], qualname: str) -> str | None:
    """The region name of the first pattern matching `qualname`, or None."""
    for path, template in patterns:
        caps = match_name(path, qualname)
        if caps is not None:
            return template.format(**caps)
    return None


def region_of_submodule(path: str, patterns: Sequence[tuple[str, str]] = DEFAULT_PATTERNS) -> str | None:
    """The op region of a module given by its path *below* a layer (`self_attn.q` -> ll/self_attn),
    as torch.compile'd code of a layer names its submodules: each pattern is matched by its part
    after its last wildcard or placeholder (`blocks.*.self_attn` -> `self_attn`); the longest
    prefix of `path` that matches wins. None when no pattern names it."""
    segs = [s for s in path.split(".") if s]
    for n in range(len(segs), 0, -1):
        name = ".".join(segs[:n])
        for pattern, template in patterns:
            if "{" in template:
                continue   # indexed regions (layers) are the compiled code's own parents
            tail = pattern.split(".")
            cut = max((i + 1 for i, s in enumerate(tail) if s == "*" or s.startswith("{")), default=0)
            if cut < len(tail) and match_name(".".join(tail[cut:]), name) is not None and \
                    len(tail) - cut == n:
                return template
    return None


OWN_CODE = names.name(names.MODULATION)
"""Region of a kernel made only of the compiled module's own code (no submodule): in a Wan
block that is the adaLN modulation, the gates and the residual adds."""


def kernel_region(modules: Mapping[str, int], patterns: Sequence[tuple[str, str]] = DEFAULT_PATTERNS) -> str | None:
    """The region a compiled kernel is credited to (docs/FORMATS.md §5, "compiled kernels"):
    each of its FX nodes votes for the op region of its module; nodes of the compiled module's
    own code vote only when no submodule does (then: ll/modulation). A region with at least
    2/3 of the votes takes the kernel; otherwise every region with at least 1/3 is named,
    most votes first, at least two, at most three: `ll/norm+self_attn`. None: no node maps to a region."""
    votes: dict[str, int] = {}
    own = 0
    for path, n in modules.items():
        region = region_of_submodule(path, patterns) if path else None
        if region is not None:
            votes[region] = votes.get(region, 0) + int(n)
        elif not path:
            own += int(n)
    if not votes:
        return OWN_CODE if own else None
    total = sum(votes.values())
    ranked = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))
    if ranked[0][1] * 3 >= total * 2:
        return ranked[0][0]
    # at least the two leaders: four-way ties leave none with a third of the votes
    parts = [names.leaf(r) for i, (r, n) in enumerate(ranked) if i < 2 or n * 3 >= total][:3]
    return names.PREFIX + "+".join(parts)
