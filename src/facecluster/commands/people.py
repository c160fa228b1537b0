"""``facecluster people``: people and unnamed clusters with their face counts."""

from __future__ import annotations

import click

from facecluster.commands.common import db_path, json_option, quiet_option


@click.command()
@click.option("--all", "include_ignored", is_flag=True, help="Also list ignored clusters (named or not) and people whose faces are all ignored.")
@json_option
@quiet_option
@click.pass_context
def command(ctx: click.Context, quiet: bool, include_ignored: bool, as_json: bool) -> None:
    """List people (named) and unnamed clusters, largest first, with face counts.

    Plain text columns by default; --json prints one JSON object per line.

    \b
    Example:
        facecluster people
        facecluster people --all
        facecluster people --json | jq -r 'select(.kind == "cluster") | .id'
    """
    from facecluster.catalog import Catalog
    from facecluster.output import emit_jsonl
    from facecluster.people import list_people

    with Catalog.open(db_path(ctx), create=False, only_reads=True) as catalog:
        records = list_people(catalog, include_ignored=include_ignored)
    if as_json:
        emit_jsonl(records)
        return
    if not records:
        if not quiet:
            click.echo("no people or clusters yet: run `facecluster cluster PATH`", err=True)
        return
    click.echo(f"{'kind':<8} {'id':>6} {'faces':>6}  name / clusters")
    for record in records:
        label = record["name"] if record["name"] else "(unnamed)"
        if record["kind"] == "person":
            label += "  [clusters " + ", ".join(map(str, record["clusters"])) + "]" if record["clusters"] else ""
        if record.get("ignored"):
            label += "  (ignored)"
        click.echo(f"{record['kind']:<8} {record['id']:>6} {record['faces']:>6}  {label}")
