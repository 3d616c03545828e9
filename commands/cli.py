"""The `lltrace` entry point: a Click group that imports each subcommand lazily.

Lazy imports keep `lltrace --help` fast (torch and textual take seconds to import).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys

import click

from lltrace import __version__
from lltrace.errors import LltraceError

# name -> "module:attribute"; the module is imported only when the command runs.
SUBCOMMANDS = {
    "run": ("lltrace.commands.run:run", "Run the LongLive pipeline under the profiler (live TUI or headless)."),
    "bench": ("lltrace.commands.bench:bench", "Time presets on the GPU: ms per forward, block, video frame."),
    "budget": ("lltrace.commands.budget:budget", "Hierarchical GPU/CPU time budget of a run or any torch-profiler trace."),
    "diff": ("lltrace.commands.diff:diff", "Compare two runs or traces, region by region and kernel by kernel."),
    "export": ("lltrace.commands.export:export", "Write a Chrome trace with lltrace tracks that opens in Perfetto."),
    "view": ("lltrace.commands.view:view", "Browse a recorded run or trace in the TUI."),
    "doctor": ("lltrace.commands.doctor:doctor", "CUDA-graph and torch.compile health of each pipeline stage."),
    "presets": ("lltrace.commands.presets:presets", "List the presets and their knobs."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(n for n, (target, _) in SUBCOMMANDS.items() if _importable(target))

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        target, _ = SUBCOMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # the subcommand is not built yet
                return None
            raise
        return getattr(module, attr)

    def format_commands(self, ctx, formatter):
        rows = [(n, SUBCOMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _importable(target: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lltrace")
def cli():
    """lltrace: see where every millisecond of a streaming video diffusion model goes.

    \b
    Typical loop:
      lltrace run --preset ultra          live TUI; writes traces/<run-id>/
      lltrace budget traces/<run-id>      hierarchical time budget
      lltrace diff traces/A traces/B      what got faster or slower
      lltrace export traces/A -o a.json.gz   open in ui.perfetto.dev
    """


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes become one-line errors with exit code 2."""
    # Kineto prints a line per profiler start/stop at its default level; keep the terminal clean.
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    # transformers imports torchao eagerly; on machines without its CUDA kernels torchao (and
    # torch's pytree deprecation notes about it) log warnings that say nothing to our users.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A name from a file may hold what no terminal encoding can (a lone surrogate "\ud800"):
    # print it escaped rather than die on it.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")
    try:
        # without standalone mode, click returns the code of a `raise click.exceptions.Exit(n)`
        code = cli.main(args=argv, prog_name="lltrace", standalone_mode=False)
    except LltraceError as exc:
        click.echo(f"lltrace: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("lltrace: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("lltrace: interrupted", err=True)
        return 130
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:   # a bad option or value: one line too, with where to look
        where = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().splitlines())
        click.echo(f"lltrace: error: {message}{where}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
