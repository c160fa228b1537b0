"""The settings file as Click's ``default_map``: sections of option names checked against each command.

Click looks a parameter up as flag, then environment variable, then ``ctx.default_map``, then its own
default, which is the order the settings file needs. A section keys options by their long name
(``min-size`` or ``min_size``, ``json``, ``flip = false`` for ``--no-flip``) while ``default_map`` keys them
by parameter name (``min_size``, ``as_json``, ``flip``): ``section_defaults`` translates one section,
and refuses an unknown key or a bad value with one line naming the file, the table and the key::

    section_defaults(cluster_command, {"weights": "casia-webface"}, "cluster", Path("config.toml"))
    # {'weights': 'casia-webface'}

Tables for subcommands of a group stay as ``Section`` (unchecked) until that subcommand is resolved
(``ConfiguredGroup``), so a typo under ``[evaluate.lfw]`` does not stop ``facecluster people``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from facecluster.errors import ConfigError
from facecluster.settings import expand_home


class CommandLineOnly(click.Option):
    """An option that does something rather than say how (``label --rename OLD NEW``): the settings file
    may not give it, or every run of the command would do it again. Use as ``click.option(..., cls=...)``."""


class Section(dict[str, Any]):
    """A table of the settings file not yet checked against its command: its dotted ``name`` and the
    file's ``path`` come with it, for the messages of ``section_defaults``."""

    def __init__(self, table: Mapping[str, Any], name: str, path: Path) -> None:
        super().__init__(table)
        self.name = name
        self.path = path


def _table(name: str) -> str:
    return f"[{name}]" if name else "the top level"


def _command_line_only(option: click.Option) -> bool:
    """An action (``CommandLineOnly``) or a switch without an off form (``--json``, ``--force``, forget's
    ``--yes``): nothing on the command line could undo it, so the settings file may not set it."""
    return isinstance(option, CommandLineOnly) or bool(option.is_flag and not option.secondary_opts)


def section_defaults(command: click.Command, section: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    """``section`` (long option names) -> ``default_map`` (parameter names) for ``command``.

    ``name`` is the table's dotted name (``""`` for the top level), used in messages with ``path``.
    """
    by_key: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.expose_value:
            for opt in param.opts:
                if opt.startswith("--"):
                    by_key.setdefault(opt[2:], param)
    ctx = click.Context(command)
    groups = command if isinstance(command, click.Group) else None
    result: dict[str, Any] = {}
    for key, value in section.items():
        where = f"settings file {path}: {_table(name)}"
        if isinstance(value, dict):
            sub = f"{name}.{key}" if name else key
            if groups is None or groups.get_command(ctx, key) is None:
                raise ConfigError(f"settings file {path}: [{sub}] is not a facecluster command")
            result[key] = Section(value, sub, path)
            continue
        option = by_key.get(key.replace("_", "-"))
        if option is None:
            negated = by_key.get(key.replace("_", "-").removeprefix("no-"))
            if negated is not None and negated.secondary_opts:
                raise ConfigError(f"{where}: write '{negated.opts[-1][2:]} = false' for {negated.secondary_opts[0]}")
            settable = sorted(k for k, o in by_key.items() if not _command_line_only(o))
            offer = f"options: {', '.join(settable)}" if settable else "none of its options can be set here"
            raise ConfigError(f"{where} has no option '{key}' ({offer})")
        if isinstance(option, CommandLineOnly):
            raise ConfigError(f"{where} {key}: {option.opts[-1]} is an action, so it is given on the command line "
                              "only")
        if _command_line_only(option):
            raise ConfigError(f"{where} {key}: {option.opts[-1]} has no off switch, so it is given on the command "
                              "line only")
        value = expand_home(value)
        check = value
        if isinstance(value, str) and (option.multiple or option.nargs != 1):
            check = option.type.split_envvar_value(value)  # as Click splits such a string from default_map
        try:
            option.type_cast_value(ctx, check)
        except click.BadParameter as exc:
            raise ConfigError(f"{where} {key}: {exc.message}") from None
        except (TypeError, ValueError):  # a TOML date, an array of tables: nothing Click can take
            raise ConfigError(f"{where} {key}: {value!r} is not a value for {option.opts[-1]}") from None
        result[option.name or key] = value
    return result


def noted_in_help(params: list[click.Parameter], defaults: Mapping[str, Any]) -> list[click.Parameter]:
    """``params``, each option that ``defaults`` (a checked table) sets saying so at the end of its help.

    The options are copies, so only this run's ``--help`` shows ``[settings file: 0.9]``::

        noted_in_help(command.params, {"threshold": 0.9})
    """
    noted: list[click.Parameter] = []
    for param in params:
        value = defaults.get(param.name or "")
        if isinstance(param, click.Option) and value is not None and not isinstance(value, Mapping):
            note = f"settings file: {_shown(param, value)}"
            param = copy.copy(param)
            if param.show_default is True and param.default is not None:
                # Click would show the settings file's value as the default: show the built-in one here.
                param.show_default = False
                note += f"; default: {_shown(param, param.default)}"
            param.help = f"{param.help or ''}  [{note}]".strip()
        noted.append(param)
    return noted


def _shown(option: click.Option, value: Any) -> str:
    # A value as it is given on the command line: --no-flip for flip = false, "1 2" for a pair.
    if option.is_flag and option.secondary_opts:
        return option.opts[-1] if value else option.secondary_opts[0]
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


class ConfiguredGroup(click.Group):
    """A group whose subcommands take their option defaults from the settings file's tables; its own
    options and theirs say in ``--help`` which value the settings file gives them."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return noted_in_help(super().get_params(ctx), ctx.default_map or {})

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        defaults = ctx.default_map
        if command is not None and name is not None and defaults is not None:
            section = defaults.get(name)
            if isinstance(section, Section):
                section = defaults[name] = section_defaults(command, section, section.name, section.path)
            if section and not isinstance(command, ConfiguredGroup):  # a group notes its own (get_params)
                command = copy.copy(command)
                command.params = noted_in_help(command.params, section)
        return name, command, rest
