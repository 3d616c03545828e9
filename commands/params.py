"""Click parameter types for the `A:B` values of the command line.

The library takes what these return (tuples, ints, floats); a bad value is click's usage error,
which `lltrace` prints as one line with exit code 2.
"""
from __future__ import annotations

import math

import click

NO_BLOCKS: tuple[()] = ()   # what BlockRange(none_words=...) gives for "none": record nothing


class BlockRange(click.ParamType):
    """`START:STOP` -> (START, STOP), blocks START..STOP-1, 0 <= START < STOP.

    `single=True` also takes one block, `4` -> (4, 5). `none_words` (e.g. "none", "off") give
    NO_BLOCKS, an explicit "no blocks"."""

    name = "START:STOP"

    def __init__(self, *, single: bool = False, none_words: tuple[str, ...] = ()):
        self.single = single
        self.none_words = tuple(w.lower() for w in none_words)

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if text.lower() in self.none_words:
            return NO_BLOCKS
        example = "e.g. 3:6 for blocks 3, 4 and 5" + (", or 4 for block 4 alone" if self.single else "")
        parts = text.split(":")
        try:
            if len(parts) == 1 and self.single:
                start = int(parts[0])
                stop = start + 1
            elif len(parts) == 2:
                start, stop = int(parts[0]), int(parts[1])
            else:
                raise ValueError
        except ValueError:
            self.fail(f"{text!r}: use START:STOP, {example}", param, ctx)
        if start < 0 or stop <= start:
            self.fail(f"{text!r}: need 0 <= START < STOP, {example}", param, ctx)
        return start, stop


class MsWindow(click.ParamType):
    """`[START:]END` in ms -> (START, END) floats, 0 <= START < END; `END` alone starts at 0."""

    name = "[START:]END"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        example = "use START:END in ms (e.g. 200:450) or a length (300)"
        parts = text.split(":")
        try:
            if len(parts) == 1:
                start, end = 0.0, float(parts[0])
            elif len(parts) == 2:
                start, end = float(parts[0] or 0), float(parts[1])
            else:
                raise ValueError
        except ValueError:
            self.fail(f"{text!r}: {example}", param, ctx)
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            self.fail(f"{text!r}: need 0 <= START < END; {example}", param, ctx)
        return start, end


class FramePrompt(click.ParamType):
    """`FRAME:"PROMPT"` -> (FRAME, PROMPT): a prompt switch before video frame FRAME."""

    name = 'FRAME:"PROMPT"'

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        frame, sep, prompt = str(value).partition(":")
        prompt = prompt.strip().strip('"').strip()
        if not sep or not frame.strip().isdigit() or not prompt:
            self.fail(f"{value!r}: use FRAME:\"PROMPT\", e.g. 120:\"a dog\"", param, ctx)
        return int(frame), prompt


class ModuleFactory(click.ParamType):
    """`MODULE:FACTORY` -> (MODULE, FACTORY): an importable module or a .py file, and the name of
    a function in it (the last `:` splits them, so a path may hold one)."""

    name = "MODULE:FACTORY"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        module, sep, factory = str(value).strip().rpartition(":")
        if not sep or not module or not factory.isidentifier():
            self.fail(f"{value!r}: use MODULE:FACTORY, e.g. mypkg.models:make_doctor_case", param, ctx)
        return module, factory


class QualName(click.ParamType):
    """`MODULE:QUALNAME` -> the same string: a function or method by import path, e.g.
    `mypkg.pipeline:Pipeline.inference` (resolved when the run starts, once the script's
    directory is importable)."""

    name = "MODULE:QUALNAME"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        module, sep, qualname = text.rpartition(":")
        if not sep or not module or not all(p.isidentifier() for p in qualname.split(".")) or \
                not all(p.isidentifier() for p in module.split(".")):
            self.fail(f"{value!r}: use MODULE:QUALNAME, e.g. mypkg.pipeline:Pipeline.inference", param, ctx)
        return text


class RegionsMap(click.ParamType):
    """A YAML file of `module-name pattern: region` lines -> ((pattern, region), ...), tried
    before the built-in Wan names (lltrace.capture.patterns; e.g. `transformer_blocks.{k}:
    ll/layer[{k}]`). A missing file, bad YAML or a bad pattern is a one-line error."""

    name = "FILE.yaml"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        import yaml

        from lltrace.capture.patterns import parse_regions_map
        from lltrace.errors import LltraceError
        from lltrace.inputs import open_regular

        try:
            with open_regular(value) as f:
                text = f.read().decode("utf-8", errors="replace")
        except LltraceError as exc:   # it names the path
            self.fail(str(exc), param, ctx)
        try:
            return parse_regions_map(yaml.safe_load(text))
        except LltraceError as exc:
            self.fail(f"{value}: {exc}", param, ctx)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            self.fail(f"{value}: not valid YAML{line}", param, ctx)


BLOCKS = BlockRange(single=True)
PROFILE_BLOCKS = BlockRange(none_words=("none", "off", ""))
MS_WINDOW = MsWindow()
FRAME_PROMPT = FramePrompt()
MODULE_FACTORY = ModuleFactory()
QUALNAME = QualName()
REGIONS_MAP = RegionsMap()
