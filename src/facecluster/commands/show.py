"""``facecluster show``: write the static review site (contact sheets of people and clusters)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

from facecluster.commands.common import db_path, json_option, quiet_option
from facecluster.output import counted, emit_json


def command_prefix(ctx: click.Context) -> str:
    """How the user runs facecluster, for the commands shown on the site: keeps ``--db`` when given."""
    db = ctx.find_root().params.get("db")
    return "facecluster" if db is None else f"facecluster --db {shlex.quote(str(Path(db).absolute()))}"


def open_in_browser(path: Path) -> bool:
    """Open ``path`` with the desktop's handler; False where there is none (a server, an SSH session).

    On Linux ``xdg-open`` runs quietly (its complaints about missing browsers would bury our message);
    elsewhere Click's launcher does. Example: ``open_in_browser(Path("site/index.html"))`` -> True.
    """
    if not sys.platform.startswith("linux"):
        return click.launch(str(path)) == 0
    opener = shutil.which("xdg-open")
    if opener is None:
        return False
    proc = subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=5) == 0
    except subprocess.TimeoutExpired:  # some set-ups run the browser itself in the foreground: it opened
        return True


def default_site_dir() -> Path:
    """``$FACECLUSTER_HOME/site`` (owner-only, like the catalog next to it)."""
    from facecluster.paths import data_dir

    return data_dir() / "site"


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the site (default: site/ in the data folder, ~/.local/share/facecluster/site). Rebuilt in place.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the index in the web browser when done.")
@quiet_option
@json_option
@click.pass_context
def command(ctx: click.Context, out: Path | None, open_browser: bool, quiet: bool, as_json: bool) -> None:
    """Write a static HTML review site of people and clusters; it opens from disk, no server.

    The index lists people and unnamed clusters by size; each has contact sheets of its faces
    (500 a page) linking to the photo with the face boxes drawn, and the `facecluster label`
    commands to copy. Thumbnails are made once; re-runs only refresh the pages. Everything is
    written readable by you only: faces are biometric data.

    \b
    Example:
        facecluster show --out ~/faces-site --open
        facecluster --db photos.db show --out site --json
    """
    from facecluster.catalog import Catalog
    from facecluster.progress import progress_bar
    from facecluster.site import LabelCommands, build_site

    out = out or default_site_dir()
    with Catalog.open(db_path(ctx), create=False, only_reads=True) as catalog, progress_bar(quiet) as progress:
        summary = build_site(catalog, out, commands=LabelCommands(command_prefix(ctx)), progress=progress)
    if as_json:
        emit_json(summary.as_dict())
    if not quiet:
        # A re-run rewrites only the pages whose content changed: say so, not "Wrote 5996 pages" for none.
        unchanged = summary.pages_unchanged
        pages = (f"{summary.pages - unchanged} of {counted(summary.pages, 'page')} ({unchanged} unchanged)"
                 if unchanged else counted(summary.pages, 'page'))
        click.echo(
            f"Wrote {pages} for {counted(summary.people, 'person', 'people')}, "
            f"{counted(summary.clusters, 'cluster')} and {counted(summary.faces, 'face')} "
            f"({summary.thumbs_made} new thumbnails, {summary.thumbs_reused} reused): "
            f"{summary.index}",
            err=True,
        )
        if summary.missing_photos:
            n = len(summary.missing_photos)
            click.echo(f"{counted(n, 'photo file')} {'is' if n == 1 else 'are'} missing (moved or deleted).", err=True)
    if open_browser and not open_in_browser(summary.index):
        click.echo(f"could not open a web browser here: open {summary.index.as_uri()} in one", err=True)
