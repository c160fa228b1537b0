"""``facecluster evaluate clusters``: score the catalog's clusters against known identities."""

from __future__ import annotations

from pathlib import Path

import click

from facecluster.catalog import Catalog
from facecluster.cluster_metrics import evaluate_catalog, read_truth
from facecluster.commands.common import db_path, json_option, quiet_option
from facecluster.output import emit_json

_ROWS = [
    ("pairwise precision", "pairwise_precision"),
    ("pairwise recall", "pairwise_recall"),
    ("pairwise F", "pairwise_f"),
    ("BCubed precision", "bcubed_precision"),
    ("BCubed recall", "bcubed_recall"),
    ("BCubed F", "bcubed_f"),
    ("NMI", "nmi"),
    ("ARI", "ari"),
    ("clusters", "n_clusters"),
    ("identities", "n_identities"),
    ("unclustered faces", "n_unclustered"),
    ("photos scored", "photos_scored"),
    ("photos without faces", "photos_without_faces"),
    ("truth rows not in catalog", "truth_not_in_catalog"),
]


@click.command(name="clusters")
@click.option(
    "--truth",
    "truth_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV or TSV of 'path,identity' rows (relative paths: from the file's folder).",
)
@click.option("--truth-from-folders", is_flag=True, help="The identity of a photo is its folder's name.")
@quiet_option
@json_option
@click.pass_context
def command(ctx: click.Context, truth_file: Path | None, truth_from_folders: bool, quiet: bool, as_json: bool) -> None:
    """Score the current clusters against known identities (pairwise/BCubed P/R/F, NMI, ARI).

    One face per photo counts: the one nearest the image centre. A face's predicted identity is its
    person if named, else its cluster; unclustered faces stand alone. Table on stderr, JSON on stdout
    with --json.

    \b
    Example:
        facecluster evaluate clusters --truth truth.csv --json
        facecluster evaluate clusters --truth-from-folders
    """
    if (truth_file is None) == (not truth_from_folders):
        raise click.UsageError("give exactly one of --truth FILE or --truth-from-folders")
    truth = read_truth(truth_file) if truth_file is not None else None
    with Catalog.open(db_path(ctx), create=False, only_reads=True) as catalog:
        result = evaluate_catalog(catalog.db, truth)
    values = result.to_dict()
    if not quiet:
        width = max(len(label) for label, _ in _ROWS)
        for label, key in _ROWS:
            value = values[key]
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            click.echo(f"{label:<{width}}  {shown}", err=True)
    if as_json:
        emit_json(values)
