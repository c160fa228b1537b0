"""``facecluster export``: per-person folders of photo links or copies, and data files for other tools."""

from __future__ import annotations

from pathlib import Path

import click

from facecluster.commands.common import db_path, json_option, quiet_option
from facecluster.errors import EXIT_PARTIAL
from facecluster.output import counted, emit_json


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write.")
@click.option(
    "--mode",
    type=click.Choice(["symlink", "copy"]),
    default="symlink",
    show_default=True,
    help="Link to the original photos, or copy them.",
)
@click.option("--person", metavar="NAME", help="Export only this person.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Format of people/photos/faces data files.",
)
@quiet_option
@json_option
@click.pass_context
def command(ctx: click.Context, out: Path, mode: str, person: str | None, fmt: str, quiet: bool, as_json: bool) -> None:
    """Write a folder per named person with links (or copies) of their photos, plus data files.

    Photos that moved are linked at their current place; photos whose file is gone are reported
    (exit code 3), never linked. Re-runs update the folders and only ever remove what an earlier
    export made. The folder is created readable by you only.

    \b
    Example:
        facecluster export --out ~/by-person
        facecluster export --out share --mode copy --person "Ada Lovelace" --format csv --json
    """
    from facecluster.catalog import Catalog
    from facecluster.export import export_people
    from facecluster.images import shown_path
    from facecluster.progress import progress_bar

    with Catalog.open(db_path(ctx), create=False, only_reads=True) as catalog, progress_bar(quiet) as progress:
        summary = export_people(catalog, out, mode=mode, person=person, fmt=fmt, progress=progress)
    if as_json:
        emit_json(summary.as_dict())
    if not quiet:
        click.echo(
            f"Exported {counted(summary.photos, 'photo')} of {counted(summary.people, 'person', 'people')} "
            f"to {summary.out} "
            f"({summary.created} new, {summary.unchanged} unchanged, {summary.removed} removed).",
            err=True,
        )
    for item in summary.missing:  # even with -q: they are why the exit code is 3
        click.echo(f"missing: photo {item['photo_id']} of {shown_path(item['person'])}: {shown_path(item['path'])}",
                   err=True)
    if summary.missing:
        ctx.exit(EXIT_PARTIAL)
