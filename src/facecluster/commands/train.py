"""``facecluster train``: FaceNet triplet training (P x K batches, online mining) -> a model file."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import click

from facecluster.commands import INTERRUPT_HINT
from facecluster.commands.common import FiniteFloatRange, db_path, json_option, quiet_option, source_rank
from facecluster.commands.common import read_image as _read_rgb  # a seam: tests replace it
from facecluster.config import DetectConfig, TrainConfig
from facecluster.errors import DataError

_DEFAULTS = TrainConfig()


def _detector_factory(device: str, progress: Any) -> Any:
    def build() -> Any:
        from facecluster.pipeline import load_detector

        return load_detector(DetectConfig(), device=device, progress=progress)

    return build


def _base_model(weights: Path | None, scratch: bool, progress: Any) -> Any:
    """The starting point: random (``scratch``), or the state dict of ``--weights`` (a file or a weights
    name such as ``casia-webface``, resolved as ``embed --weights`` does; default vggface2)."""
    from facecluster.embed import embedder_source
    from facecluster.models.model_file import check_model_payload
    from facecluster.training.trainer import BaseModel
    from facecluster.weights import KNOWN_SHA256, check_embedding_state_dict, load_state_dict, weights_sha256

    if scratch:
        return BaseModel(None, "scratch")
    path = embedder_source(weights=weights, progress=progress).path
    state = load_state_dict(path)
    if state.get("format") == "facecluster-model":
        # Continue from a trained model, checked as --model is (a damaged or diverged one would only train
        # into a misleading "training diverged"): its state dict is the base (shapes checked when built).
        state = check_model_payload(state, path)["state_dict"]
    else:
        check_embedding_state_dict(state, path)
    digest = weights_sha256(path)
    return BaseModel(state, f"{KNOWN_SHA256.get(digest, path.stem)}:{digest[:8]}")


def _interrupt_hint(run_dir: Path) -> str:
    """What to do after Ctrl-C: ``--resume`` once an epoch has been checkpointed; otherwise start again."""
    if (run_dir / "checkpoint.pt").is_file():
        return (f"the last finished epoch is saved in {run_dir}; continue with the same command plus "
                f"--resume --run-dir {run_dir}")
    return ("no epoch had finished, so there is nothing to resume; run the command again (the face crops and "
            "features computed so far are cached)")


@contextmanager
def _live(quiet: bool) -> Iterator[tuple[Any, Any]]:
    """(progress callback, step callback): one rich bar per stage, the train bar showing loss/active/faces/s."""
    from facecluster.reporting import null_progress

    if quiet or not sys.stderr.isatty():
        yield null_progress, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from facecluster.progress import stderr_console

    columns = (TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    tasks: dict[str, Any] = {}
    with Progress(*columns, console=stderr_console) as bars:

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total, info="")
            bars.update(tasks[stage], completed=done, total=total)

        def on_step(m: dict[str, Any]) -> None:  # called after progress("train", ...): the bar exists
            info = f"epoch {m['epoch']} loss {m['loss']:.4f} active {m['active_fraction']:.2f} {m['faces_per_s']:.0f} faces/s"
            bars.update(tasks["train"], info=info)

        yield progress, on_step


@click.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="A folder with one sub-folder of photos per person (VGGFace2/CASIA/LFW layout).")
@click.option("--from-catalog", is_flag=True, help="Train on the faces of the people named in the catalog.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), envvar="FACECLUSTER_WEIGHTS",
              help="Pretrained InceptionResnetV1 state dict to start from: a file or a name (vggface2, "
                   "casia-webface; default: vggface2 from the cache).")
@click.option("--scratch", is_flag=True, help="Start from random weights instead of pretrained ones.")
@click.option("--dim", type=click.IntRange(2, 4096), default=_DEFAULTS.dim, show_default=True,
              help="Size of the new embedding layer.")
@click.option("--freeze-backbone", is_flag=True, help="Train only the new embedding layer (backbone features cached).")
@click.option("--head-init", type=click.Choice(["pca", "random"]), default=_DEFAULTS.head_init, show_default=True,
              help="Start the new layer as a projection of the pretrained embedding, or at random.")
@click.option("--flip/--no-flip", default=_DEFAULTS.flip, show_default=True,
              help="Mirror-image augmentation, and flip-averaged validation embeddings.")
@click.option("--epochs", type=click.IntRange(1), default=_DEFAULTS.epochs, show_default=True)
@click.option("--miner", type=click.Choice(["semi-hard", "batch-hard", "batch-all"]), default=_DEFAULTS.miner,
              show_default=True, help="How triplets are chosen inside each batch.")
@click.option("--margin", type=FiniteFloatRange(0, 4, min_open=True), default=_DEFAULTS.margin, show_default=True,
              help="Triplet margin alpha on squared L2 distances.")
@click.option("--batch-identities", "-P", type=click.IntRange(2), default=_DEFAULTS.identities_per_batch,
              show_default=True, help="Identities per batch (P).")
@click.option("--batch-faces", "-K", type=click.IntRange(2), default=_DEFAULTS.faces_per_identity, show_default=True,
              help="Faces per identity in a batch (K).")
@click.option("--optimizer", type=click.Choice(["adagrad", "adam", "adamw"]), default=_DEFAULTS.optimizer,
              show_default=True)
@click.option("--lr", type=FiniteFloatRange(0, min_open=True), default=_DEFAULTS.lr,
              help=f"Learning rate [default: {_DEFAULTS.paper_lr:g}; {_DEFAULTS.fine_tune_lr:g} when the whole "
                   "pretrained network trains].")
@click.option("--weight-decay", type=FiniteFloatRange(0), default=_DEFAULTS.weight_decay, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=_DEFAULTS.seed, show_default=True)
@click.option("--device", default="cpu", show_default=True, envvar="FACECLUSTER_DEVICE", help="cpu, cuda or cuda:N.")
@click.option("--amp", is_flag=True, help="bf16 mixed precision (CUDA only).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the network (CUDA only).")
@click.option("--val-pairs", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="LFW-format pairs to validate on after each epoch (their identities are kept out of training).")
@click.option("--val-images", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The folder the validation pairs refer to (Name/Name_0001.jpg).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where args.json, versions.json, metrics.jsonl and checkpoints go (default: a new folder "
                   "under the facecluster data dir).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The model file to write.")
# Not the shared force_option ("Redo work that is already done."): here nothing is redone, a file is replaced.
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@quiet_option
@json_option
@click.pass_context
def command(ctx: click.Context, data_dir: Path | None, from_catalog: bool, weights: Path | None, scratch: bool,
            dim: int, freeze_backbone: bool, head_init: str, flip: bool, epochs: int, miner: str, margin: float,
            batch_identities: int, batch_faces: int, optimizer: str, lr: float, weight_decay: float, seed: int,
            device: str, amp: bool, compile_: bool, val_pairs: Path | None, val_images: Path | None,
            run_dir: Path | None, resume: bool, out: Path, force: bool, quiet: bool, as_json: bool) -> None:
    """Train a FaceNet embedding with the triplet loss and online mining; write a model file.

    The model file works with `embed`, `cluster` and `evaluate lfw` through --model PATH.
    Identities with fewer than 2 faces are left out and reported; unreadable images are skipped
    and counted. With --val-pairs, verification accuracy and VAL at FAR=1e-3 are logged per epoch.
    An existing --out is refused unless --force (or --resume, which continues the run that writes it).

    \b
    Example:
        facecluster train --data lfw/ --weights casia.pt --dim 128 --freeze-backbone \\
            --epochs 5 --out me.pt --val-pairs pairs.txt --val-images lfw/
        facecluster cluster ~/Pictures --model me.pt
    """
    from facecluster.output import counted, emit_json
    from facecluster.paths import data_dir as user_data_dir
    from facecluster.training.data import load_catalog_dataset, load_folder_dataset, load_validation_pairs, summary
    from facecluster.training.trainer import check_device, check_options, train

    if (data_dir is None) == (not from_catalog):
        raise click.UsageError("give exactly one of --data DIR or --from-catalog")
    if (val_pairs is None) != (val_images is None):
        raise click.UsageError("--val-pairs and --val-images go together")
    if resume and run_dir is None:
        raise click.UsageError("--resume needs the --run-dir of the run to continue")
    if scratch and weights is not None:
        if source_rank(ctx, "weights") < source_rank(ctx, "scratch"):
            weights = None  # FACECLUSTER_WEIGHTS or the settings file: a default for fine-tuning, not a contradiction
        else:
            raise click.UsageError("give either --weights (fine-tune) or --scratch (random start), not both")
    if scratch and freeze_backbone:
        raise click.UsageError("--freeze-backbone needs pretrained --weights, not --scratch: a random backbone "
                               "would never learn")
    check_device(device)
    config = replace(
        TrainConfig(), dim=dim, margin=margin, epochs=epochs, identities_per_batch=batch_identities,
        faces_per_identity=batch_faces, optimizer=optimizer, lr=lr, weight_decay=weight_decay, seed=seed,
        miner=miner, freeze_backbone=freeze_backbone, flip=flip, head_init="random" if scratch else head_init, amp=amp,
        compile=compile_,
    )
    # The process id keeps two runs started in the same second (a sweep) out of each other's folder.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir or user_data_dir() / "runs" / f"train-{stamp}-{os.getpid()}"
    args = {k: v for k, v in ctx.params.items()}
    ctx.meta[INTERRUPT_HINT] = lambda: _interrupt_hint(run_dir)
    with _live(quiet) as (progress, on_step):
        # Everything that can be refused is refused here, before detection (minutes to hours).
        base = _base_model(weights, scratch, progress)
        check_options(config, base, device, run_dir, resume, out, overwrite=force)
        detector = _detector_factory(device, progress)
        val = None
        if val_pairs is not None and val_images is not None:
            val = load_validation_pairs(val_images, val_pairs, detector, _read_rgb, progress=progress)
        held_out = val.names if val else frozenset()
        if from_catalog:
            from facecluster.catalog import Catalog

            with Catalog.open(db_path(ctx), create=False, only_reads=True) as catalog:
                data = load_catalog_dataset(catalog, exclude=held_out)
        else:
            assert data_dir is not None
            data = load_folder_dataset(data_dir, detector, _read_rgb, exclude=held_out, progress=progress)
        if not quiet:
            click.echo(f"Training on {summary(data, val)}", err=True)
        result = train(data, config, base=base, out=out, run_dir=run_dir, device=device, val=val, resume=resume,
                       args=args, progress=progress, on_step=on_step, overwrite=force)
    if as_json:
        emit_json({**result.__dict__, "data": data.report.to_dict(),
                   "validation": None if val is None else {"pairs": len(val.same), "skipped": val.skipped_pairs,
                                                           "no_face": val.no_face}})
    if not quiet:
        last = result.history[-1] if result.history else {}
        tail = f", loss {last['loss']:.4f}, active {last['active_fraction']:.2f}" if "loss" in last else ""
        if "val_accuracy" in last:
            tail += f", val accuracy {100 * last['val_accuracy']:.2f}%"
        click.echo(f"Wrote {result.out} ({result.dim}-d, {counted(result.epochs, 'epoch')}{tail}); "
                   f"run folder {result.run_dir}", err=True)
