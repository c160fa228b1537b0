"""``facecluster faces``: one record per face (JSON lines, or CSV)."""

from __future__ import annotations

import click

from facecluster.commands.common import db_path, quiet_option


@click.command()
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row instead of JSON lines.")
@click.option("--person", metavar="NAME", help="Only faces of this person.")
@click.option("--cluster", type=int, metavar="ID", help="Only faces of this cluster.")
@click.option("--all", "include_ignored", is_flag=True, help="Include ignored faces.")
@quiet_option
@click.pass_context
def command(ctx: click.Context, quiet: bool, as_csv: bool, person: str | None, cluster: int | None, include_ignored: bool) -> None:
    """Print every face: id, photo path, box, detection probability, cluster id, person name.

    \b
    Example:
        facecluster faces --person "Ada Lovelace" | jq -r .photo
        facecluster faces --csv > faces.csv
    """
    from facecluster.catalog import Catalog
    from facecluster.output import emit_csv, emit_jsonl
    from facecluster.people import FACE_FIELDS, iter_faces

    with Catalog.open(db_path(ctx), create=False) as catalog:
        records = iter_faces(catalog, person=person, cluster=cluster, include_ignored=include_ignored)
        if as_csv:
            emit_csv(records, FACE_FIELDS)
        else:
            emit_jsonl(records)
