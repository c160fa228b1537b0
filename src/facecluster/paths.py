"""Where facecluster keeps its files: one data directory and one cache directory per user.

Environment variables win over the XDG defaults, so tests point everything at a temp dir::

    FACECLUSTER_DB=/tmp/t.db FACECLUSTER_CACHE=/tmp/cache facecluster people
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The user data directory: ``$FACECLUSTER_HOME`` or ``$XDG_DATA_HOME/facecluster``."""
    if env := os.environ.get("FACECLUSTER_HOME"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "facecluster"


def default_db_path() -> Path:
    """The catalog used when neither ``--db`` nor ``FACECLUSTER_DB`` is given."""
    if env := os.environ.get("FACECLUSTER_DB"):
        return Path(env)
    return data_dir() / "catalog.db"


def config_path() -> Path | None:
    """The settings file: ``$FACECLUSTER_CONFIG`` (empty: none) or ``$XDG_CONFIG_HOME/facecluster/config.toml``.

        config_path()   # PosixPath('/home/ada/.config/facecluster/config.toml')
    """
    if (env := os.environ.get("FACECLUSTER_CONFIG")) is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "facecluster" / "config.toml"


def cache_dir() -> Path:
    """The cache directory (downloaded weights): ``$FACECLUSTER_CACHE`` or ``$XDG_CACHE_HOME/facecluster``."""
    if env := os.environ.get("FACECLUSTER_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facecluster"
