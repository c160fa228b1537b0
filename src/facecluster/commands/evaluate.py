"""``facecluster evaluate``: a group of evaluations (``lfw`` verification, ``clusters`` quality)."""

from __future__ import annotations

import click

from facecluster.commands import load_command
from facecluster.commands.option_defaults import ConfiguredGroup

#: subcommand -> module under facecluster.commands exposing ``command``
_SUBCOMMANDS = {"lfw": "evaluate_lfw", "clusters": "evaluate_clusters"}


class _EvaluateGroup(ConfiguredGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _SUBCOMMANDS if self.get_command(ctx, name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _SUBCOMMANDS.get(cmd_name)
        if module_name is None:
            return None
        return load_command(module_name)


@click.group(cls=_EvaluateGroup)
def command() -> None:
    """Measure accuracy: face verification on LFW pairs, or clusters against known identities.

    \b
    Example:
        facecluster evaluate lfw --images lfw/ --pairs pairs.txt --json
        facecluster evaluate clusters --truth truth.csv
    """
