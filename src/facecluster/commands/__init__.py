"""One module per subcommand; each exposes ``command`` (see ``facecluster.cli.COMMANDS``)."""

from __future__ import annotations

import importlib

import click


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
