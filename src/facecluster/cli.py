"""The Click layer: parse, call the library once, render. Errors become one line and an exit code.

Subcommands live in ``facecluster/commands/`` and are imported lazily, so ``facecluster --help``
and catalog-only commands start without importing torch.

    $ facecluster --db photos.db cluster ~/Pictures
"""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from facecluster import __version__
from facecluster.commands import INTERRUPT_HINT, load_command
from facecluster.commands.option_defaults import ConfiguredGroup, section_defaults
from facecluster.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, FaceclusterError
from facecluster.output import stdout_is_utf8

#: command name -> "module:attribute" under facecluster.commands
COMMANDS: dict[str, str] = {
    "detect": "detect:command",
    "embed": "embed:command",
    "cluster": "cluster:command",
    "label": "label:command",
    "people": "people:command",
    "faces": "faces:command",
    "evaluate": "evaluate:command",
    "train": "train:command",
    "show": "show:command",
    "export": "export:command",
    "forget": "forget:command",
}


#: ``ctx.meta`` key: the settings file's ConfigError, raised when a command runs (not for --help).
_SETTINGS_ERROR = "facecluster.settings_error"


class LazyGroup(ConfiguredGroup):
    """A group that imports a subcommand's module only when that subcommand runs, with option defaults
    from the settings file (``facecluster.settings``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        available = []
        for name, target in COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(f"facecluster.commands.{module}") is not None:
                available.append(name)
        return sorted(available)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return load_command(module_name, attr)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        settings_error = None
        if parent is None and "default_map" not in extra:
            try:
                extra["default_map"] = _settings_defaults(self)
            except FaceclusterError as exc:
                settings_error = exc  # raised when a command runs: --help and --version still work
        # Ctrl-C or SIGTERM while the top-level options are parsed, before any command ran: Click would say
        # "Aborted!" and exit 1; say what happened and exit as a stopped command does (130 / 143).
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
            ctx.meta[_SETTINGS_ERROR] = settings_error
            return ctx
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            click.echo(f"{'Terminated' if terminated else 'Interrupted'}: nothing was done.", err=True)
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            if ctx.meta.get(_SETTINGS_ERROR) is not None:
                raise ctx.meta[_SETTINGS_ERROR]
            return super().invoke(ctx)
        except FaceclusterError as exc:
            raise click.ClickException(_one_line(str(exc))) from exc
        except KeyboardInterrupt as exc:
            stopped = "Terminated" if isinstance(exc, Terminated) else "Interrupted"
            hint = ctx.meta.get(INTERRUPT_HINT)  # set by a command whose "again" means something else (train)
            message = hint() if hint else "the catalog is consistent; run the command again to resume"
            click.echo(f"{stopped}: {message}.", err=True)
            ctx.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # The reader left (`facecluster faces | head`): Click's main ends quietly, as Unix tools do.
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
            if os.environ.get("FACECLUSTER_DEBUG"):
                raise
            click.echo(f"Error: {_one_line(_describe(exc, getattr(ctx.obj, 'db_path', None)))}", err=True)
            ctx.exit(EXIT_ERROR)


def _settings_defaults(group: click.Group) -> dict[str, Any] | None:
    """The settings file's top level as the root ``default_map`` (``None`` without a file); a bad file is a
    ``ConfigError``."""
    from facecluster.paths import config_path
    from facecluster.settings import load_settings

    path = config_path()
    if path is None:
        return None
    settings = load_settings(path, required="FACECLUSTER_CONFIG" in os.environ)
    return section_defaults(group, settings, "", path) if settings else None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``), raised like Ctrl-C's KeyboardInterrupt so a command stops the same way:
    the batch in progress is rolled back and the run is recorded ``interrupted`` (``Catalog.run``)."""


def _on_sigterm(signum: int, frame: object) -> None:
    # Further TERMs are ignored: they must not cut short the rollback and the runs-row update.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _one_line(message: str) -> str:
    """An error message as one printable line: a path in it that is not UTF-8 shows its bytes as ``\\xNN``
    (not Python's ``\\udcNN``), a newline or terminal escape in a file name is escaped (``images.shown_path``)."""
    from facecluster.images import shown_path

    return shown_path(message)


def _describe(exc: Exception, catalog: Path | None = None) -> str:
    """One line for an error no library code turned into a FaceclusterError; ``catalog``: the --db path.

        _describe(NotADirectoryError(20, "Not a directory", "out/x"))   # 'Not a directory: out/x'
    """
    import sqlite3  # here: only an error pays for it, not every start-up (--help included)

    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return ("the catalog is busy: another facecluster command is writing to it; "
                "run this one again when that one has finished")
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
        # The catalog opened for reading (a read-only file or folder), then a command tried to write.
        from facecluster.catalog import unwritable_reason

        return (catalog is not None and unwritable_reason(catalog)) or (
            f"the catalog {catalog or ''} is not writable: check the permissions of the file and of its folder "
            "(SQLite creates NAME-wal and NAME-shm next to it)")
    if isinstance(exc, OSError):
        # The file system said no (permissions, a full disk, a file where a folder should be): the
        # user's to fix, not a bug, so no "unexpected" and no traceback hint.
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"unexpected {type(exc).__name__}: {exc} (set FACECLUSTER_DEBUG=1 for a traceback)"


class AppContext:
    """What every subcommand shares: the catalog location (``--db`` > ``FACECLUSTER_DB`` > default)."""

    def __init__(self, db_path: Path | None) -> None:
        from facecluster.paths import default_db_path

        self.db_path: Path = db_path if db_path is not None else default_db_path()


@click.group(cls=LazyGroup)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FACECLUSTER_DB",
    help="The SQLite catalog (default: ~/.local/share/facecluster/catalog.db).",
)
@click.version_option(__version__, prog_name="facecluster")
@click.pass_context
def cli(ctx: click.Context, db: Path | None) -> None:
    """Organise a photo library by person.

    \b
    Example:
        facecluster cluster ~/Pictures
        facecluster people
        facecluster label 3 "Ada Lovelace"

    Options given every time can go in ~/.config/facecluster/config.toml
    (FACECLUSTER_CONFIG), a table per command: see docs/usage.md.
    """
    ctx.obj = AppContext(db)


class _ClosedStdout(io.TextIOBase):
    """``sys.stdout`` of a command started with stdout closed (``>&-``): writing data fails as one line
    (``Error: stdout is closed: ...``, exit 1), as ``ls >&-`` does; a command with nothing to write succeeds."""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed: the output has nowhere to go")


def _replace_closed_streams() -> None:
    """A standard stream closed when the command started (Python sets it to ``None``): stdin reads as empty
    (``detect -`` gets no paths, ``forget`` no answer), stderr's messages are dropped, stdout is ``_ClosedStdout``."""
    if sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - for the life of the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()  # it only refuses writes


def main() -> None:
    """Console-script entry point."""
    # Here, not at import: the library (and tests calling `cli` in-process) keep Python's own handling.
    signal.signal(signal.SIGTERM, _on_sigterm)
    _replace_closed_streams()
    if isinstance(sys.stdout, io.TextIOWrapper) and not stdout_is_utf8():
        # A stdout that cannot encode every name (a Latin-1 locale, PYTHONIOENCODING=ascii): JSON is
        # escaped (output.py); CSV and plain text get \\xNN escapes instead of stopping half-way.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        try:
            cli(prog_name="facecluster")
        finally:
            sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe prints a warning
    except BrokenPipeError:
        # Output still buffered when the reader closed the pipe: drop it, exit as Click does for EPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
