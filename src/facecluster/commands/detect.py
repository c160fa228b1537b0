"""``facecluster detect PATH...``: find faces in photos and store them with their aligned crops."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from facecluster.commands.common import (
    checksum_option, db_path, force_option, json_option, quiet_option, recording_progress,
)
from facecluster.errors import EXIT_PARTIAL
from facecluster.output import counted


def collect_paths(paths: tuple[Path, ...]) -> list[Path]:
    """The paths given, with ``-`` replaced by the paths on stdin, one a line or NUL-separated
    (``find ... | facecluster detect -``, ``find ... -print0 | facecluster detect -``)."""
    from facecluster.pipeline import read_path_list

    out: list[Path] = []
    for path in paths:
        if str(path) == "-":
            stdin = sys.stdin
            # Bytes, not text: a file name need not be valid in the locale's encoding.
            data = stdin.buffer.read() if hasattr(stdin, "buffer") else os.fsencode(stdin.read())
            out.extend(read_path_list(data))
        else:
            out.append(path)
    return out


def report_files(report: object, quiet: bool) -> None:
    """Summary of a detection on stderr (unless quiet), then one line per failed file (always)."""
    from facecluster.pipeline import DetectReport, print_failures, print_removed_people

    assert isinstance(report, DetectReport)
    if not quiet:
        click.echo(
            f"{counted(report.files, 'file')}: {report.detected} detected ({counted(report.faces, 'face')}), "
            f"{report.skipped} unchanged, {report.moved} moved or renamed, "
            f"{counted(report.copies, 'copy', 'copies')} of known photos, "
            f"{len(report.failed)} failed",
            err=True,
        )
        if report.checked:
            click.echo(checked_line(report), err=True)
        if report.missing:
            click.echo(missing_line(report.missing), err=True)
    print_failures(report.failed, stream=sys.stderr)
    print_removed_people(report.removed_people, stream=sys.stderr)


def missing_line(missing: int) -> str:
    """Photos recorded under the folders given whose file was not found, e.g. ``2 photos recorded under
    these folders were not found (deleted, moved away or on a disk not mounted): their faces and names are
    kept``."""
    return (f"{counted(missing, 'photo')} recorded under these folders {'was' if missing == 1 else 'were'} not "
            "found (deleted, moved away or on a disk not mounted): their faces and names are kept")


def checked_line(report: object) -> str:
    """What hashing files of unchanged size and mtime found (``--checksum``, or files recorded in the
    second they were written), e.g. ``8 files with the recorded size and mtime checked by content hash:
    1 changed``."""
    from facecluster.pipeline import DetectReport

    assert isinstance(report, DetectReport)
    return (f"{counted(report.checked, 'file')} with the recorded size and mtime checked by content hash: "
            f"{report.checked_changed} changed")


def warn_if_no_files(report: object, paths: Sequence[Path], quiet: bool) -> None:
    """A hint on stderr when ``paths`` held no photo at all: a mistyped folder should not look like success."""
    from facecluster.images import SUPPORTED_SUFFIXES, shown_path
    from facecluster.pipeline import DetectReport

    assert isinstance(report, DetectReport)
    if paths and report.files == 0 and not quiet:
        where = ", ".join(shown_path(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        click.echo(f"no photos found in {where} (looked for {' '.join(sorted(SUPPORTED_SUFFIXES))}; "
                   "hidden files and folders are skipped)", err=True)


@click.command()
# readable=False: an unreadable file is a recorded failure (exit 3), as inside a folder, not a usage error
# that stops every other path.
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False, path_type=Path))
@click.option("--device", default="cpu", show_default=True, envvar="FACECLUSTER_DEVICE", help="Torch device: cpu, cuda or cuda:N.")
@force_option
@checksum_option
@quiet_option
@json_option
@click.pass_context
def command(ctx: click.Context, paths: tuple[Path, ...], device: str, force: bool, checksum: bool, quiet: bool,
            as_json: bool) -> None:
    """Detect faces in photos (folders are walked; "-" reads paths from stdin, one a line or NUL-separated).

    Stores each face with its box, landmarks, probability and aligned crop. Unchanged files (same
    size and mtime) are skipped, moved or renamed files keep their faces; --checksum also hashes the
    unchanged ones and detects again those whose content changed; --force detects everything again.
    Files that cannot be read are listed on stderr and the exit code is 3.

    \b
    Example:
        facecluster detect ~/Pictures
        facecluster detect --checksum ~/Pictures      # after restoring a backup that kept mtimes
        find ~/Pictures -name '*.jpg' -newer last-run | facecluster detect -
    """
    from facecluster.catalog import Catalog
    from facecluster.config import DetectConfig, EmbedConfig
    from facecluster.output import emit_json
    from facecluster.pipeline import detect_paths, load_detector
    from facecluster.progress import progress_bar

    files = collect_paths(paths)
    with Catalog.open(db_path(ctx)) as catalog:
        with catalog.run("detect", {"paths": [str(p) for p in files], "force": force, "checksum": checksum}) as run:
            with progress_bar(quiet) as progress:
                progress = recording_progress(progress, run.stats)
                report = detect_paths(
                    catalog, files, lambda: load_detector(DetectConfig(), device, progress),
                    config=DetectConfig(), crop_config=EmbedConfig(), force=force, checksum=checksum,
                    progress=progress,
                )
            run.stats = report.to_dict()
            run.status = "partial" if report.failed else "ok"
    report_files(report, quiet)
    warn_if_no_files(report, files, quiet)
    if as_json:
        emit_json(report.to_dict())
    if report.failed:
        ctx.exit(EXIT_PARTIAL)
