"""Options and helpers shared by the subcommands, so every command spells them the same way.

    @click.command()
    @quiet_option
    @json_option
    @model_options
    def embed(quiet, as_json, weights, model, device): ...
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from facecluster.reporting import ProgressFn

if TYPE_CHECKING:
    import numpy as np  # only for annotations: the CLI starts without numpy

F = TypeVar("F", bound=Callable[..., Any])


def quiet_option(func: F) -> F:
    """``-q/--quiet``: no progress bars and no summary on stderr."""
    return click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr.")(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable results on stdout (the parameter is named ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(func)


def force_option(func: F) -> F:
    """``--force``: redo work that is already finished."""
    return click.option("--force", is_flag=True, help="Redo work that is already done.")(func)


def checksum_option(func: F) -> F:
    """``--checksum/--no-checksum`` of ``detect`` and ``cluster``: hash files whose size and mtime are as
    recorded too (``detect_paths(checksum=...)``); the settings file may set it, as it has an off switch."""
    return click.option(
        "--checksum/--no-checksum",
        default=False,
        show_default=True,
        help="Hash every file, not only those whose size or mtime changed, and detect again any whose content "
             "did (an edit that kept size and mtime). Costs one read of each file.",
    )(func)


def model_options(func: F) -> F:
    """``--weights PATH``, ``--model PATH`` and ``--device`` for commands that embed faces.

    Where both ``weights`` and ``model_path`` arrive, the one given more directly wins (command line over
    environment variable over settings file), so ``FACECLUSTER_WEIGHTS`` in the environment does not stop
    ``--model me.pt``; two given alike stay both, and the library refuses them.
    """
    command = func

    def one_model_source(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        if kwargs.get("weights") is not None and kwargs.get("model_path") is not None:
            weights_rank, model_rank = source_rank(ctx, "weights"), source_rank(ctx, "model_path")
            if weights_rank > model_rank:
                kwargs["model_path"] = None
            elif model_rank > weights_rank:
                kwargs["weights"] = None
        return command(*args, **kwargs)

    func = functools.wraps(command)(one_model_source)  # type: ignore[assignment]
    func = click.option(
        "--device",
        default="cpu",
        show_default=True,
        envvar="FACECLUSTER_DEVICE",
        help="Torch device: cpu, cuda or cuda:N.",
    )(func)
    func = click.option(
        "--model",
        "model_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A model file made by `facecluster train`.",
    )(func)
    func = click.option(
        "--weights",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="FACECLUSTER_WEIGHTS",
        help="A pretrained InceptionResnetV1 state dict (default: vggface2, from the cache or downloaded).",
    )(func)
    return func


_SOURCE_RANK: dict[click.core.ParameterSource | None, int] = {
    click.core.ParameterSource.COMMANDLINE: 3,
    click.core.ParameterSource.ENVIRONMENT: 2,
    click.core.ParameterSource.DEFAULT_MAP: 1,
}


def source_rank(ctx: click.Context, name: str) -> int:
    """How directly parameter ``name`` was given: 3 command line, 2 environment variable, 1 settings file,
    0 built-in default. Where two options exclude each other, the higher rank wins (``model_options``)::

        if source_rank(ctx, "weights") < source_rank(ctx, "scratch"): weights = None
    """
    return _SOURCE_RANK.get(ctx.get_parameter_source(name), 0)


def db_path(ctx: click.Context) -> Path:
    """The catalog path chosen on the group (``--db`` / ``FACECLUSTER_DB`` / default)."""
    return ctx.find_root().obj.db_path


def read_image(path: Path) -> np.ndarray:
    """Decode one photo to (H, W, 3) uint8 RGB with EXIF orientation applied, at most
    ``DetectConfig.max_side`` px (``facecluster.images``): the reader of ``evaluate lfw`` and ``train``."""
    from facecluster.config import DetectConfig
    from facecluster.images import load_image

    return load_image(path, max_side=DetectConfig().max_side).pixels


# --------------------------------------------------------------------------------------------- catalog ids

#: The largest id SQLite can store (a signed 64-bit integer).
MAX_ID = 2**63 - 1


class CatalogId(click.ParamType):
    """A face or cluster id: ASCII digits only, 1 to ``MAX_ID``; anything else is a usage error (exit 2).

    Plain ``int`` would take ``²``-like digits and numbers SQLite cannot bind (an ``OverflowError``)::

        @click.option("--cluster", type=CATALOG_ID, metavar="ID")
    """

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.isascii() and value.isdigit():
            number = int(value)
        else:
            self.fail(f"{value!r} is not an id: ids are whole numbers from 1 to {MAX_ID}", param, ctx)
        if not 1 <= number <= MAX_ID:
            self.fail(f"{value!r} is not an id: ids are whole numbers from 1 to {MAX_ID}", param, ctx)
        return number


CATALOG_ID = CatalogId()


# -- how far a run got (Ctrl-C, SIGTERM) ------------------------------------------------------------


def recording_progress(progress: ProgressFn, stats: dict[str, Any]) -> ProgressFn:
    """``progress`` that also keeps each stage's latest count in ``stats["progress"]``.

    The library reports a count after each committed batch, so a run cut short records in ``runs.stats``
    how far it got; a command that finishes replaces the stats with its full report. Example::

        progress = recording_progress(progress, run.stats)   # run.stats -> {"progress": {"detect": {"done": 32, "total": 90}}}
    """
    stages: dict[str, dict[str, int | None]] = stats.setdefault("progress", {})

    def record(stage: str, done: int, total: int | None) -> None:
        stages[stage] = {"done": done, "total": total}
        progress(stage, done, total)

    return record


# -- finite numbers for float options -------------------------------------------------------------------


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf``: Click lets NaN through every range (all
    its comparisons are false), and a NaN threshold would wipe every cluster and write invalid JSON to ``runs``.

        @click.option("--threshold", type=FiniteFloatRange(0, 4))   # --threshold nan -> usage error, exit 2
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
