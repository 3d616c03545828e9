"""The command line's `A:B` parameter types (commands/params.py): what they accept, and that a
bad value is a one-line usage error with exit code 2 (before the command does any work)."""
import click
import pytest
from click.testing import CliRunner

from lltrace.commands.cli import main
from lltrace.commands.params import BLOCKS, FRAME_PROMPT, MODULE_FACTORY, MS_WINDOW, NO_BLOCKS, PROFILE_BLOCKS


@pytest.mark.parametrize("ptype,text,value", [
    (BLOCKS, "3:6", (3, 6)), (BLOCKS, " 0:1 ", (0, 1)), (BLOCKS, "4", (4, 5)),
    (PROFILE_BLOCKS, "3:6", (3, 6)), (PROFILE_BLOCKS, "none", NO_BLOCKS), (PROFILE_BLOCKS, "OFF", NO_BLOCKS),
    (PROFILE_BLOCKS, "", NO_BLOCKS),
    (MS_WINDOW, "200:450", (200.0, 450.0)), (MS_WINDOW, "300", (0.0, 300.0)), (MS_WINDOW, ":2.5", (0.0, 2.5)),
    (MS_WINDOW, "0.5:1e3", (0.5, 1000.0)),
    (FRAME_PROMPT, '120:"a dog"', (120, "a dog")), (FRAME_PROMPT, "5:a cat: at night", (5, "a cat: at night")),
    (MODULE_FACTORY, "pkg.models:make", ("pkg.models", "make")),
    (MODULE_FACTORY, "C:/cases/case.py:make_case", ("C:/cases/case.py", "make_case")),
])
def test_good_values(ptype, text, value):
    assert ptype.convert(text, None, None) == value


@pytest.mark.parametrize("ptype,text", [
    (BLOCKS, "6:3"), (BLOCKS, "3:3"), (BLOCKS, "-1:2"), (BLOCKS, "a:b"), (BLOCKS, "1:2:3"), (BLOCKS, ""),
    (PROFILE_BLOCKS, "3"), (PROFILE_BLOCKS, "2:x"),
    (MS_WINDOW, "50:10"), (MS_WINDOW, "-5:10"), (MS_WINDOW, "nan"), (MS_WINDOW, "0:inf"), (MS_WINDOW, "a"),
    (MS_WINDOW, "1:2:3"), (MS_WINDOW, "0"),
    (FRAME_PROMPT, "5"), (FRAME_PROMPT, ":a dog"), (FRAME_PROMPT, "x:a dog"), (FRAME_PROMPT, '5:""'),
    (MODULE_FACTORY, "nocolon"), (MODULE_FACTORY, ":make"), (MODULE_FACTORY, "pkg:"), (MODULE_FACTORY, "pkg:1x"),
])
def test_bad_values_are_usage_errors(ptype, text):
    @click.command()
    @click.option("--value", type=ptype)
    def cmd(value):
        raise AssertionError("not reached")

    result = CliRunner().invoke(cmd, ["--value", text])
    assert result.exit_code == 2 and "Invalid value for '--value'" in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args,needle", [
    (["export", "nowhere", "-o", "x.json", "--blocks", "two"], "Invalid value for '--blocks'"),
    (["export", "nowhere", "-o", "x.json", "--window-ms", "50:10"], "Invalid value for '--window-ms'"),
    (["export", "nowhere", "-o", "x.json", "--blocks", "1:2", "--window-ms", "5"], "exclusive"),
    (["run", "--switch-at", "5"], "Invalid value for '--switch-at'"),
    (["run", "--profile-blocks", "9:3"], "Invalid value for '--profile-blocks'"),
    (["run", "--frames", "0"], "Invalid value for '--frames'"),
])
def test_lltrace_prints_a_bad_value_on_one_line(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("lltrace: error:"), err
    assert f"see 'lltrace {args[0]} --help'" in err
