"""Progress reporting for the library: a plain callback, so the library never imports rich.

The CLI passes a rich-backed callback (see ``progress.py``); library code calls it as
``progress(stage, done, total)`` with the absolute count done so far::

    def embed_all(faces, progress: ProgressFn = null_progress) -> None:
        for i, batch in enumerate(batches(faces), 1):
            ...
            progress("embed", i * len(batch), len(faces))
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    """``progress(stage, done, total)``: ``stage`` names the step, ``total`` may be ``None``."""

    def __call__(self, stage: str, done: int, total: int | None) -> None: ...


def null_progress(stage: str, done: int, total: int | None) -> None:
    """A progress callback that does nothing (the library default)."""
