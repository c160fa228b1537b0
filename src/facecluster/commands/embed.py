"""``facecluster embed``: embed every stored face that has no vector for the chosen model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from facecluster.commands.common import (
    db_path, force_option, json_option, model_options, quiet_option, recording_progress,
)
from facecluster.config import PipelineConfig
from facecluster.errors import EXIT_PARTIAL


def print_embed_failures(failures: list[dict[str, Any]], limit: int = 20) -> None:
    """One ``failed: face ID: reason`` line per face that could not be embedded (the first ``limit``), on stderr.

    Shown even with -q, like detect's failed files: ``print_embed_failures(report.failed)``.
    """
    for failure in failures[:limit]:
        click.echo(f"failed: face {failure['face_id']}: {failure['error']}", err=True)
    if len(failures) > limit:
        click.echo(f"... and {len(failures) - limit} more faces failed (see the stats of this run in the runs table)",
                   err=True)


@click.command()
@model_options
@click.option("--batch-size", type=click.IntRange(1), default=PipelineConfig.embed_batch_size, show_default=True,
              help="Faces per batch (and per commit).")
@force_option
@quiet_option
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    weights: Path | None,
    model_path: Path | None,
    device: str,
    batch_size: int,
    force: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Embed the faces found by `detect` (from their stored crops), in batches.

    Vectors of different models are kept apart; faces that already have a vector of this model are
    skipped unless --force. Faces whose stored crop cannot be decoded are listed on stderr and the
    exit code is 3.

    \b
    Example:
        facecluster embed --weights facenet-casia-webface.pt
    """
    from facecluster.catalog import Catalog
    from facecluster.config import EmbedConfig
    from facecluster.output import emit_json
    from facecluster.pipeline import embed_pending, load_embedder
    from facecluster.progress import progress_bar

    # The weights are resolved (downloaded if need be) before the catalog opens: a mistyped --weights or an
    # offline first run is one line, with no catalog created and no failed run recorded.
    with progress_bar(quiet) as progress:
        embedder = load_embedder(weights, model_path, device, EmbedConfig(), progress)
    with Catalog.open(db_path(ctx)) as catalog:
        with catalog.run("embed", {"weights": weights, "model": model_path, "force": force}) as run:
            with progress_bar(quiet) as progress:
                progress = recording_progress(progress, run.stats)
                report = embed_pending(catalog, embedder, batch_size=batch_size, force=force, progress=progress)
            run.stats = report.to_dict()
            run.status = "partial" if report.failed else "ok"
    if not quiet:
        click.echo(f"{report.embedded} faces embedded with {report.model_id}", err=True)
    print_embed_failures(report.failed)
    if as_json:
        emit_json(report.to_dict())
    if report.failed:
        ctx.exit(EXIT_PARTIAL)
