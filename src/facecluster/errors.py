"""The exception hierarchy of the library. No Click here: ``cli.py`` maps these to exit codes.

Every message is one line a user can act on, e.g.::

    raise WeightsError("MTCNN weights 'pnet.pt' not found: put it in ~/.cache/facecluster/weights/")
"""

from __future__ import annotations

#: Exit codes shared by every command.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # Click's own code for bad arguments
EXIT_PARTIAL = 3  # the run finished but some inputs failed (they are recorded and reported)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM (128 + 15), e.g. `kill` or a service manager stopping the command


class FaceclusterError(Exception):
    """Base class: an error the user can fix; its message is shown as one line."""


class ImageError(FaceclusterError):
    """A photo could not be read or decoded (corrupt, truncated, unsupported, too large).

    ``reason`` is the message without the file name, for reports that already print the path::

        ImageError("empty file (0 bytes)", name="a.jpg")  # str() -> "a.jpg: empty file (0 bytes)"
    """

    def __init__(self, reason: str, name: str | None = None) -> None:
        super().__init__(f"{name}: {reason}" if name else reason)
        self.reason = reason


class WeightsError(FaceclusterError):
    """Model weights are missing, cannot be downloaded, or do not fit the model."""


class ModelError(FaceclusterError):
    """A model file is invalid, of the wrong shape, or asked for an unavailable device."""


class CatalogError(FaceclusterError):
    """The catalog is missing, locked, or a referenced row (cluster, person, face) does not exist.

    ``write_refused``: the file system refused a write (a read-only file or folder), so a command that
    only reads may still open it read-only::

        CatalogError("the catalog c.db is read-only: ...", write_refused=True)
    """

    def __init__(self, message: str, *, write_refused: bool = False) -> None:
        super().__init__(message)
        self.write_refused = write_refused


class DataError(FaceclusterError):
    """Input data (pairs file, training folder, truth file) is missing or malformed."""


class ConfigError(FaceclusterError):
    """The settings file (``config.toml``) cannot be read, is not TOML, or names an unknown option."""
