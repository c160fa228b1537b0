"""One module per subcommand; each exposes ``command`` (see ``facecluster.cli.COMMANDS``)."""

from __future__ import annotations

import importlib

import click

#: ``ctx.meta`` key: a command may store a zero-argument callable there that returns what to tell the
#: user after Ctrl-C (``cli`` prints "Interrupted: <hint>."); without one the catalog message is printed.
INTERRUPT_HINT = "facecluster.interrupt_hint"


def load_command(module_name: str, attr: str = "command") -> click.Command | None:
    """Import ``facecluster.commands.<module_name>`` and return its command; ``None`` if the module is absent.

    Lets groups import a subcommand (and torch behind it) only when that subcommand runs::

        load_command("evaluate_lfw")  # the `facecluster evaluate lfw` command
    """
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{module_name}":
            return None
        raise
    return getattr(module, attr)
