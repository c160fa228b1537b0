"""``facecluster faces``: one record per face (JSON lines, or CSV)."""

from __future__ import annotations

import click

from facecluster.commands.common import CATALOG_ID, db_path, json_option, quiet_option


@click.command()
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row instead of JSON lines.")
@click.option("--person", metavar="NAME", help="Only faces of this person.")
@click.option("--cluster", type=CATALOG_ID, metavar="ID", help="Only faces of this cluster.")
@click.option("--all", "include_ignored", is_flag=True, help="Include ignored faces.")
@quiet_option
@json_option
@click.pass_context
def command(
    ctx: click.Context, quiet: bool, as_json: bool, as_csv: bool, person: str | None, cluster: int | None,
    include_ignored: bool,
) -> None:
    """Print every face: id, photo path, box, detection probability, cluster id, person name.

    JSON lines by default (--json says so explicitly, as for every command with results); --csv for CSV.

    \b
    Example:
        facecluster faces --person "Ada Lovelace" | jq -r .photo
        facecluster faces --csv > faces.csv
    """
    from facecluster.catalog import Catalog
    from facecluster.output import emit_csv, emit_jsonl
    from facecluster.people import FACE_FIELDS, iter_faces

    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together")
    with Catalog.open(db_path(ctx), create=False, only_reads=True) as catalog:
        records = iter_faces(catalog, person=person, cluster=cluster, include_ignored=include_ignored)
        if as_csv:
            emit_csv(records, FACE_FIELDS)
        else:
            emit_jsonl(records)
