"""``facecluster cluster [PATH...]``: detect and embed the paths, then group all faces into people."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from facecluster.commands.common import (
    FiniteFloatRange, checksum_option, db_path, force_option, json_option, model_options, quiet_option,
    recording_progress,
)
from facecluster.config import ClusterConfig
from facecluster.errors import EXIT_PARTIAL

_DEFAULT = ClusterConfig()


def _summary(result: dict[str, Any], top: list[dict[str, Any]]) -> None:
    """The summary table on stderr."""
    from rich.table import Table

    from facecluster.progress import stderr_console

    cluster = result["cluster"]
    table = Table(title=f"facecluster: {cluster['mode']} clustering", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("count", justify="right")
    table.add_row("model", cluster["model_id"])
    if result.get("detect"):
        d = result["detect"]
        table.add_row("photos detected now", str(d["detected"]))
        table.add_row("photos unchanged / moved / copies", f"{d['skipped']} / {d['moved']} / {d['copies']}")
        if d["checked"]:
            table.add_row("unchanged checked by hash / changed",
                          f"{d['checked']} / {d['checked_changed']}")
        table.add_row("files failed", str(len(d["failed"])))
        if d["missing"]:
            table.add_row("photos not found (faces kept)", str(d["missing"]))
    table.add_row("faces embedded now", str(result["embed"]["embedded"] + (result.get("detect") or {}).get("embedded", 0)))
    table.add_row("faces of this model", str(cluster["faces"]))
    table.add_row("left out: low probability", str(cluster["low_probability"]))
    table.add_row("left out: too small", str(cluster["too_small"]))
    table.add_row("ignored by you", str(cluster["ignored"]))
    table.add_row("faces in clusters", str(cluster["clustered"]))
    table.add_row("faces alone (no cluster)", str(cluster["noise"]))
    if cluster["mode"] == "incremental":
        table.add_row("new faces joining known clusters", str(cluster["assigned"]))
        table.add_row("faces alone before, joining now", str(cluster["assigned_earlier"]))
    table.add_row("clusters (new)", f"{cluster['clusters']} ({cluster['new_clusters']})")
    table.add_row("named clusters / people", f"{cluster['named_clusters']} / {cluster['people']}")
    stderr_console.print(table)
    if top:
        largest = Table(title="largest", title_justify="left")
        for column in ("cluster", "name", "faces"):
            largest.add_column(column, justify="right" if column != "name" else "left")
        for record in top:
            largest.add_row(str(record["clusters"][0] if record["clusters"] else "-"), record["name"] or "", str(record["faces"]))
        stderr_console.print(largest)
    stderr_console.print("Name a cluster: facecluster label CLUSTER NAME   (list: facecluster people)")


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The clustering settings whose change calls for a full re-clustering."""
    keys = ("method", "threshold", "min_cluster_size", "min_probability", "min_face_px", "hdbscan_min_samples")
    return {k: config.get(k) for k in keys}


@click.command()
# readable=False: an unreadable file is a recorded failure (exit 3), as inside a folder, not a usage error
# that stops every other path.
@click.argument("paths", nargs=-1, type=click.Path(readable=False, path_type=Path))
@model_options
@click.option("--method", type=click.Choice(["agglomerative", "hdbscan"]), help=f"Clustering method [default: {_DEFAULT.method}].")
@click.option("--threshold", type=FiniteFloatRange(0, 4), help=f"Squared L2 distance for average linkage [default: {_DEFAULT.threshold}].")
@click.option("--min-cluster-size", type=click.IntRange(1), help=f"Smaller groups stay unclustered [default: {_DEFAULT.min_cluster_size}].")
@click.option("--min-samples", type=click.IntRange(1),
              help="HDBSCAN only: neighbours a face needs to count as dense; lower finds smaller groups (a library of "
                   f"a few dozen faces: 1 or 2) [default: {_DEFAULT.hdbscan_min_samples}].")
@click.option("--min-probability", type=FiniteFloatRange(0, 1), help=f"Leave out faces detected with a lower probability [default: {_DEFAULT.min_probability}].")
@click.option("--min-face-size", type=click.IntRange(0), help=f"Leave out faces whose box is smaller, in pixels [default: {_DEFAULT.min_face_px}].")
@click.option("--full", is_flag=True, help="Re-cluster every face (names and corrections are kept).")
@force_option
@checksum_option
@quiet_option
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    paths: tuple[Path, ...],
    weights: Path | None,
    model_path: Path | None,
    device: str,
    method: str | None,
    threshold: float | None,
    min_cluster_size: int | None,
    min_samples: int | None,
    min_probability: float | None,
    min_face_size: int | None,
    full: bool,
    force: bool,
    checksum: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Detect and embed faces in PATHS (if any), then cluster all faces of the model into people.

    New faces join the clusters they are close to and the rest are clustered among themselves;
    --full re-clusters everything. Names and corrections made with `label` are kept either way.
    --force detects and embeds the PATHS again; --checksum hashes even the files whose size and mtime
    are unchanged, and detects again those whose content changed. A summary goes to stderr, --json
    prints the result.

    \b
    Example:
        facecluster cluster ~/Pictures --weights facenet-casia-webface.pt
        facecluster cluster --full --threshold 0.9
    """
    from facecluster.catalog import Catalog
    from facecluster.commands.detect import collect_paths, warn_if_no_files
    from facecluster.commands.embed import print_embed_failures
    from facecluster.config import DetectConfig, EmbedConfig
    from facecluster.output import emit_json
    from facecluster.people import cluster_catalog, list_people
    from facecluster.pipeline import (
        detect_paths, embed_pending, load_detector, load_embedder, print_failures, print_removed_people,
    )
    from facecluster.progress import progress_bar

    overrides: dict[str, Any] = {
        "method": method, "threshold": threshold, "min_cluster_size": min_cluster_size,
        "hdbscan_min_samples": min_samples, "min_probability": min_probability, "min_face_px": min_face_size,
    }
    config = replace(ClusterConfig(), **{k: v for k, v in overrides.items() if v is not None})
    files = collect_paths(paths)
    embed_config = EmbedConfig()
    result: dict[str, Any] = {}
    # The weights are resolved (downloaded if need be) before the catalog opens: a mistyped --weights or an
    # offline first run is one line, with no catalog created and no failed run recorded.
    with progress_bar(quiet) as progress:
        embedder = load_embedder(weights, model_path, device, embed_config, progress)
    with Catalog.open(db_path(ctx)) as catalog:
        previous = (catalog.last_run_args("cluster") or {}).get("config")
        if previous is not None and not full and _settings(previous) != _settings(config.__dict__):
            # Incremental assignment under other settings would mix two clusterings: start over.
            full = True
            if not quiet:
                click.echo("clustering settings changed since the last run: re-clustering everything", err=True)
        args = {"paths": [str(p) for p in files], "full": full, "force": force, "checksum": checksum,
                "config": config.__dict__}
        with catalog.run("cluster", args) as run:
            with progress_bar(quiet) as progress:
                progress = recording_progress(progress, run.stats)
                failed: list[Any] = []  # FileFailure of detect_paths
                if paths:  # even when "-" read no path: `--json` has "detect" whenever PATHS are given
                    detected = detect_paths(
                        catalog, files, lambda: load_detector(DetectConfig(), device, progress),
                        config=DetectConfig(), crop_config=embed_config, embedder=embedder, force=force,
                        checksum=checksum, progress=progress,
                    )
                    result["detect"] = detected.to_dict()
                    failed = detected.failed
                result["embed"] = embed_pending(catalog, embedder, force=False, progress=progress).to_dict()
                report = cluster_catalog(catalog, embedder.model_id, config, full=full, run_id=run.id, progress=progress)
            result["cluster"] = report.to_dict()
            run.stats = {"detect": {k: v for k, v in result.get("detect", {}).items() if k != "failed"},
                         "embed": result["embed"], "cluster": result["cluster"]}
            run.status = "partial" if failed or result["embed"]["failed"] else "ok"
            people = list_people(catalog)
    result["clusters"] = people
    if not quiet and report.replaced_model is not None:
        # A run with another --weights/--model than the last one is easy to miss: say whose clusters went.
        click.echo(f"the clusters were made with model {report.replaced_model}: re-clustered everything with "
                   f"{report.model_id} (names and corrections are kept)", err=True)
    if not quiet:
        _summary(result, people[:10])
    print_failures(failed)
    print_removed_people(result.get("detect", {}).get("removed_people", []))
    print_embed_failures(result["embed"]["failed"])
    if paths:
        warn_if_no_files(detected, files, quiet)
    if as_json:
        emit_json(result)
    if failed or result["embed"]["failed"]:
        ctx.exit(EXIT_PARTIAL)
