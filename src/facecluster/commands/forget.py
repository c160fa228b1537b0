"""``facecluster forget``: delete a person's name, faces, crops and vectors (the photos stay)."""

from __future__ import annotations

from pathlib import Path

import click

from facecluster.commands.common import db_path, json_option, quiet_option
from facecluster.output import counted, emit_json


@click.command()
@click.argument("person")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--site",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also delete the person's pages and thumbnails from this `facecluster show` folder, then refresh it "
    "(the default site folder, when it exists, is always cleaned).",
)
@click.option("--vacuum", is_flag=True, help="Also compact the catalog file (slow on large catalogs).")
@quiet_option
@json_option
@click.pass_context
def command(
    ctx: click.Context, person: str, yes: bool, site: Path | None, vacuum: bool, quiet: bool, as_json: bool
) -> None:
    """Forget PERSON: delete their name, faces, face crops and vectors from the catalog.

    Clusters left empty are deleted; the photo files are never touched. Deleted rows are
    overwritten in the catalog file (SQLite secure_delete, then a WAL checkpoint). The person's
    pages and thumbnails are removed from the default review site (`facecluster show` without
    --out) and from the one given with --site; run `show` again on any other copy, or delete it.

    \b
    Example:
        facecluster forget "Ada Lovelace"
        facecluster forget "Ada Lovelace" --yes --site ~/faces-site --json
    """
    from facecluster.catalog import Catalog
    from facecluster.commands.show import command_prefix, default_site_dir
    from facecluster.forget import forget_person, plan_forget
    from facecluster.progress import progress_bar
    from facecluster.site import LabelCommands, build_site, catalog_key, site_catalog

    with Catalog.open(db_path(ctx), create=False) as catalog:
        if site is None and site_catalog(default_site_dir()) == catalog_key(catalog):
            site = default_site_dir()  # the site `show` writes by default holds this person's faces too
        plan = plan_forget(catalog, person)
        what = (
            f"{plan.name}: {counted(plan.faces, 'face')}, {counted(plan.crops, 'crop')}, "
            f"{counted(plan.vectors, 'vector')}, {counted(plan.clusters_deleted, 'cluster')}"
        )
        if not yes:
            click.confirm(f"Forget {what}? This cannot be undone", abort=True, err=True)
        with progress_bar(quiet) as progress:
            summary = forget_person(catalog, plan.name, site=site, vacuum=vacuum, progress=progress)
            if site is not None:
                build_site(catalog, site, commands=LabelCommands(command_prefix(ctx)), progress=progress)
    if as_json:
        emit_json(summary.as_dict())
    if not quiet:
        click.echo(
            f"Forgot {summary.name}: deleted {counted(summary.faces, 'face')}, {counted(summary.crops, 'crop')}, "
            f"{counted(summary.vectors, 'vector')}, "
            f"{counted(summary.clusters_deleted, 'cluster')} ({summary.clusters_kept} kept unnamed); photos untouched.",
            err=True,
        )
        if site is not None:
            click.echo(f"Removed {summary.site_files_removed} files from {site} and refreshed it.", err=True)
        if not summary.checkpointed and not summary.vacuumed:
            click.echo(
                "Note: another process has the catalog open; deleted pages leave its WAL file when it closes.",
                err=True,
            )
