"""``facecluster evaluate lfw``: face verification accuracy on LFW View-2 pairs (10-fold protocol)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from facecluster.commands.common import json_option, model_options, quiet_option, read_image
from facecluster.config import DetectConfig, EmbedConfig
from facecluster.errors import EXIT_PARTIAL, DataError
from facecluster.images import shown_path
from facecluster.reporting import ProgressFn


def load_detector(device: str, progress: ProgressFn) -> Any:
    """The MTCNN detector (``pipeline.load_detector``); a seam that tests replace with a fake."""
    from facecluster.pipeline import load_detector as pipeline_detector

    return pipeline_detector(DetectConfig(), device=device, progress=progress)


def check_writable(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written now, before minutes of detection rather than after.

        check_writable(Path("/nonexistent/roc.png"), "--roc")   # DataError: folder does not exist
    """
    folder = path.parent  # a folder given as the file itself is Click's (dir_okay=False)
    if not folder.is_dir():
        raise DataError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataError(f"{option} {path}: permission denied, cannot write there")


@click.command("lfw")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The LFW folder (Name/Name_0001.jpg), e.g. the deep-funneled images.")
@click.option("--pairs", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="LFW View-2 pairs file (header '10<TAB>N').")
@model_options
@click.option("--flip/--no-flip", default=EmbedConfig().flip, show_default=True,
              help="Average each embedding with that of the mirrored crop.")
@click.option("--margin", type=click.IntRange(0, 120), default=EmbedConfig().margin, show_default=True,
              help="Pixels of the 160 px crop around the detected box.")
@click.option("--align/--no-align", default=EmbedConfig().align, show_default=True,
              help="Align crops by the 5 landmarks (similarity transform) instead of cropping the box.")
@click.option("--subtract-mean/--no-subtract-mean", default=True, show_default=True,
              help="Subtract the training folds' mean embedding before distances (facenet's --subtract_mean).")
@click.option("--roc", type=click.Path(dir_okay=False, path_type=Path), help="Write the ROC curve as a PNG here.")
@json_option
@quiet_option
def command(images: Path, pairs: Path, weights: Path | None, model_path: Path | None, device: str, flip: bool,
            margin: int, align: bool, subtract_mean: bool, roc: Path | None, as_json: bool, quiet: bool) -> None:
    """Verification accuracy on LFW pairs: 10-fold accuracy ± std (threshold chosen on the other nine
    folds), VAL at FAR = 1e-3 and the mean threshold (squared L2; by default after subtracting the
    training folds' mean embedding, as facenet's evaluation does). Photos without a detected face are
    embedded from a centre crop and counted (no_face); missing photos drop their pairs (skipped).

    \b
    Example:
        facecluster evaluate lfw --images lfw/ --pairs pairs.txt --weights casia.pt --json
        facecluster evaluate lfw --images lfw/ --pairs pairs.txt --no-flip --roc roc.png
    """
    from facecluster.embed import load_embedder
    from facecluster.evaluate import evaluate_lfw, parse_pairs, write_roc_png
    from facecluster.output import emit_json
    from facecluster.progress import progress_bar

    if not images.is_dir():
        raise DataError(f"--images {images} is not a folder: give the LFW folder holding Name/Name_0001.jpg")
    pair_list = parse_pairs(pairs)
    if roc is not None:
        check_writable(roc, "--roc")
    config = replace(EmbedConfig(), flip=flip, margin=margin, align=align)
    with progress_bar(quiet) as progress:
        embedder = load_embedder(weights=weights, model_path=model_path, device=device, config=config,
                                 progress=progress)
        detector = load_detector(device, progress)
        report, distances, same = evaluate_lfw(images, pair_list, detector, embedder, read_image,
                                               subtract_mean=subtract_mean, progress=progress)
    if as_json:
        emit_json(report.as_dict())
    if not quiet:
        r = report.result
        click.echo(
            f"accuracy {100 * r.accuracy:.2f}% ± {100 * r.accuracy_std:.2f}% (std; standard error "
            f"{100 * r.accuracy_sem:.2f}%)  "
            f"VAL@FAR=1e-3 {100 * r.val:.2f}% ± {100 * r.val_std:.2f}%  threshold {r.threshold:.3f}  "
            f"({report.pairs} pairs, {report.skipped} skipped, {report.no_face} without a face; {report.model_id})",
            err=True,
        )
    if report.missing:  # even with -q: they are why pairs were skipped and the exit code is 3
        click.echo(f"missing or unreadable: {', '.join(shown_path(m) for m in report.missing[:3])}"
                   + (" …" if len(report.missing) > 3 else ""), err=True)
    if roc is not None:  # after the results: a failed write must not throw the measurement away
        from facecluster.evaluate import roc_curve

        title = f"LFW {100 * report.result.accuracy:.2f}% - {report.model_id}"
        write_roc_png(roc, *roc_curve(distances, same), title=title)
    if report.skipped:
        click.get_current_context().exit(EXIT_PARTIAL)  # measured, but not on every pair
