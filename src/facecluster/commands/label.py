"""``facecluster label``: name clusters and correct the clustering; every change survives re-clustering."""

from __future__ import annotations

import functools
from typing import Any

import click

from facecluster.commands.common import CATALOG_ID, db_path, json_option, quiet_option
from facecluster.commands.option_defaults import CommandLineOnly

#: An option that does something (``--rename OLD NEW``), so never taken from the settings file.
action = functools.partial(click.option, cls=CommandLineOnly)


@click.command()
@click.argument("cluster_and_name", nargs=-1, metavar="[CLUSTER NAME]")
@action("--rename", nargs=2, metavar="OLD NEW", help="Rename a person.")
@action("--merge", nargs=2, metavar="A B", help="Merge person A into person B (A's faces become B's).")
@action("--move", nargs=2, type=(CATALOG_ID, str), metavar="FACE NAME", help="Move one face to a person (created if new).")
@action("--reject", "reject", type=CATALOG_ID, metavar="FACE", help="Not this person: take the face out of its person for good.")
@action("--ignore-face", type=CATALOG_ID, metavar="FACE", help="Mark a face ignored / not a face.")
@action("--ignore-cluster", type=CATALOG_ID, metavar="CLUSTER", help="Mark a whole cluster ignored / not faces.")
@action("--unignore-face", type=CATALOG_ID, metavar="FACE", help="Undo --ignore-face.")
@action("--unignore-cluster", type=CATALOG_ID, metavar="CLUSTER", help="Undo --ignore-cluster.")
@quiet_option
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    cluster_and_name: tuple[str, ...],
    rename: tuple[str, str] | None,
    merge: tuple[str, str] | None,
    move: tuple[int, str] | None,
    reject: int | None,
    ignore_face: int | None,
    ignore_cluster: int | None,
    unignore_face: int | None,
    unignore_cluster: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Name a cluster, or correct people: one action per call.

    Names and corrections are kept by every later `facecluster cluster` run: faces you named or
    moved stay with their person, rejected faces never return to that person, ignored ones stay out.
    A name finds an existing person ignoring case ("ada lovelace" is Ada Lovelace).

    \b
    Example:
        facecluster label 3 "Ada Lovelace"
        facecluster label --rename "Ada" "Ada Lovelace"
        facecluster label --merge "Ada L." "Ada Lovelace"
        facecluster label --move 1234 "Ada Lovelace"
        facecluster label --reject 1234
        facecluster label --ignore-cluster 17
        facecluster label --ignore-face 1234
    """
    from facecluster import people
    from facecluster.catalog import Catalog
    from facecluster.output import counted, emit_json

    actions = {
        "name": cluster_and_name or None, "rename": rename, "merge": merge, "move": move, "reject": reject,
        "ignore_face": ignore_face, "ignore_cluster": ignore_cluster, "unignore_face": unignore_face,
        "unignore_cluster": unignore_cluster,
    }
    chosen = [k for k, v in actions.items() if v is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one action: CLUSTER NAME, --rename, --merge, --move, --reject, --ignore-*")
    action = chosen[0]
    if action == "name":
        if len(cluster_and_name) != 2 or not cluster_and_name[0].isdigit():
            raise click.UsageError('name a cluster with: facecluster label CLUSTER NAME (e.g. label 3 "Ada")')
        try:  # CLUSTER shares nargs=-1 with NAME, so its type is applied here
            cluster_id = CATALOG_ID.convert(cluster_and_name[0], None, ctx)
        except click.BadParameter as exc:
            raise click.BadParameter(exc.message, ctx=ctx, param_hint="'CLUSTER'") from None
    with Catalog.open(db_path(ctx), create=False) as catalog:
        with catalog.run("label", {"action": action, "value": actions[action]}) as run:
            result: dict[str, Any]
            # The branch of ``action`` runs only with its option given (not None), which mypy cannot follow
            # through ``action``: hence the ignores below.
            if action == "name":
                result = people.name_cluster(catalog, cluster_id, cluster_and_name[1])
                message = f"cluster {result['cluster']} is {result['person']} ({counted(result['faces'], 'face')})"
            elif action == "rename":
                result = people.rename_person(catalog, *rename)  # type: ignore[misc]
                message = f"renamed {result['old']} to {result['new']}"
            elif action == "merge":
                result = people.merge_people(catalog, *merge)  # type: ignore[misc]
                message = f"merged {result['merged']} into {result['into']} ({counted(result['faces'], 'face')})"
            elif action == "move":
                result = people.move_face(catalog, move[0], move[1])  # type: ignore[index]
                message = f"face {result['face']} is {result['person']} (cluster {result['cluster']})"
            elif action == "reject":
                result = people.reject_face(catalog, reject)  # type: ignore[arg-type]
                message = f"face {result['face']} is no longer with that person"
            elif action in ("ignore_face", "unignore_face"):
                face = ignore_face if action == "ignore_face" else unignore_face
                result = people.ignore_face(catalog, face, ignored=action == "ignore_face")  # type: ignore[arg-type]
                message = f"face {face} {'ignored' if result['ignored'] else 'no longer ignored'}"
            else:
                cluster = ignore_cluster if action == "ignore_cluster" else unignore_cluster
                result = people.ignore_cluster(catalog, cluster, ignored=action == "ignore_cluster")  # type: ignore[arg-type]
                message = f"cluster {cluster} {'ignored' if result['ignored'] else 'no longer ignored'} ({counted(result['faces'], 'face')})"
            if result.get("removed"):
                message += f"; {result['removed']} has no faces left and is removed"
            run.stats = result
    if not quiet:
        click.echo(message, err=True)
    if as_json:
        emit_json(result)
