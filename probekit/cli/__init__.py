"""The `probekit` command line: a typer app; each area registers its commands in its own module.

Errors a user can fix (ProbekitError) print as one red line and exit 2; anything else prints one
line pointing at --debug, which re-raises with the full traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console


def _hide_flag_types() -> None:
    """typer >= 0.2x shows `<bool>` after every flag (`--debug <bool>`); a flag takes no value, so show none."""
    try:
        from typer.core import TyperOption
    except ImportError:  # another typer layout: keep its help as it is
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None:  # older typer (e.g. 0.1x) shows no type after flags anyway
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()

app = typer.Typer(
    name="probekit",
    help="Probe frozen self-supervised audio models: extract tokens once, train CGP/Protobin/linear probes, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

# Each module adds its commands to `app` on import (one concept, one home).
_COMMAND_MODULES: tuple[str, ...] = (
    "probekit.cli.data",
    "probekit.cli.backbones",
    "probekit.cli.probes",
    "probekit.cli.cache",
    "probekit.cli.tune",
    "probekit.cli.results",
    "probekit.cli.demo",
    "probekit.cli.pretrain",
    "probekit.cli.predict",
    "probekit.cli.finetune",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    log_level: str | None = typer.Option(
        None, "--log-level",
        help="Log lines of probekit and the libraries it drives (optuna, Python warnings) on stderr at this level: "
        "debug, info, warning (default; $PROBEKIT_LOG_LEVEL), error.",
    ),
) -> None:
    _state["debug"] = debug
    from probekit._console import route_logs, set_quiet

    set_quiet(False)  # per invocation (tests run several in one process); --quiet/--json set it again
    route_logs(log_level)


# Options shared by every long command (extract, probe, tune, pretrain, demo): one wording everywhere.
PROGRESS_HELP = ("Show progress: a live bar on a terminal; in a pipe or log file one line every ~30 s or 5 % "
                 "with rate and ETA ($PROBEKIT_PROGRESS_INTERVAL seconds).")
QUIET_HELP = "Print only the result: no progress, no notes (errors still go to stderr)."
JSON_HELP = "Print the result as JSON on stdout and nothing else (implies --quiet)."
DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:N."


def output_mode(progress: bool, quiet: bool, json_out: bool = False) -> bool:
    """Apply --quiet/--json to every progress display of this run; returns whether to show progress."""
    from probekit._console import interval, set_quiet

    interval()  # a bad $PROBEKIT_PROGRESS_INTERVAL is refused now, not after minutes of extraction
    silent = quiet or json_out
    set_quiet(silent)
    return progress and not silent


def _load_commands() -> None:
    for mod in _COMMAND_MODULES:
        importlib.import_module(mod)


def main(argv: list[str] | None = None) -> int:
    """The `probekit` entry point; returns the exit code."""
    code = _main(argv)
    if argv is None:
        # The command is over (its result printed, its store finished): a Ctrl-C landing during interpreter
        # shutdown would otherwise end the process by SIGINT (-2) instead of with the command's own code.
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _main(argv: list[str] | None) -> int:
    from rich.markup import escape  # an error text holding "[...]" (a list, a regex) is text, not markup

    from probekit.errors import ProbekitError

    try:
        _load_commands()  # imports torch & co: seconds in which a Ctrl-C must not print a traceback either
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    args = sys.argv[1:] if argv is None else argv
    _state["argv"] = list(args)  # what cluster jobs rerun (probekit.launch), less the launch options
    debug = "--debug" in args
    try:
        rc = app(args=args, standalone_mode=False)  # typer.Exit(n) inside a command comes back as n
    except ProbekitError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except SystemExit as e:  # typer.Exit inside commands
        return int(e.code or 0)
    except Exception as e:  # noqa: BLE001 - the last line of defence for users
        # typer >= 0.2x vendors click (typer._click), so match its exceptions by behaviour, not by class
        if isinstance(e, typer.Exit):
            return e.exit_code
        if isinstance(e, typer.Abort):
            err_console.print("[yellow]aborted[/]")
            return 1
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()  # usage errors: unknown command/option, bad value
            return e.exit_code
        if debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))} (run again with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    if rc == 130:  # typer turns Ctrl-C inside a command into a silent exit code 130
        err_console.print("[yellow]interrupted[/]")
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # python -m probekit.cli
    sys.exit(main())
