"""The user's settings file: option defaults per command, read from TOML. No Click here.

A value there sits between the environment and the built-in default (flag > environment variable >
settings file > default). Keys are the long option names; a table per command, nested for groups::

    db = "~/photos/catalog.db"        # --db of every command

    [cluster]
    weights = "casia-webface"         # facecluster cluster --weights casia-webface

    [evaluate.lfw]
    flip = false                      # facecluster evaluate lfw --no-flip

``load_settings`` only reads and parses; which keys are options is checked by the CLI, which knows them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from facecluster.errors import ConfigError

#: A settings file larger than this is refused rather than read (a path mistyped onto a photo or a disk image).
MAX_SETTINGS_BYTES = 1 << 20


def load_settings(path: Path, *, required: bool) -> dict[str, Any]:
    """The parsed TOML at ``path``; ``{}`` when it is absent and not ``required`` (the default location).

    Every problem is one ``ConfigError`` line naming the file::

        load_settings(Path("~/.config/facecluster/config.toml").expanduser(), required=False)  # {'cluster': {...}}
    """
    try:
        if not path.exists():
            if required:
                raise ConfigError(f"settings file {path} (FACECLUSTER_CONFIG) not found")
            return {}
        if not path.is_file():
            # A FIFO or a device would block or never end; a folder cannot be read.
            raise ConfigError(f"settings file {path} is not a regular file")
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            raise ConfigError(f"settings file {path} is larger than {MAX_SETTINGS_BYTES >> 20} MiB: not a settings file")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"settings file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"settings file {path} is not UTF-8 text (TOML is UTF-8)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from None


def expand_home(value: Any) -> Any:
    """``~`` at the start of a string (or of each string in a list) becomes the home folder, as a shell does.

        expand_home("~/photos.db")   # '/home/ada/photos.db'
    """
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    if isinstance(value, list):
        return [expand_home(item) for item in value]
    return value
