"""The training loop: P x K batches, online mining, triplet loss, checkpoints, validation, a run folder.

The library entry point is :func:`train`; the CLI (``facecluster train``) only parses options::

    data = load_folder_dataset(Path("faces/"), detector, crop_face)
    result = train(data, TrainConfig(dim=128, freeze_backbone=True), base=base_weights("casia.pt"),
                   out=Path("me.pt"), run_dir=Path("runs/me"))

With a frozen backbone only the new embedding layer (``last_linear`` + ``last_bn``) learns, so the
1792-d pooled backbone features of every crop and of its mirror image are computed once and cached;
each step then costs a (batch x 1792) matrix product instead of a full InceptionResnetV1 pass. The flip
augmentation is kept exactly (each sample draws the original or mirrored features); random crops are
not used in that mode because they would need a backbone pass per step (see docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from facecluster import __version__
from facecluster.config import TrainConfig
from facecluster.errors import DataError, ModelError
from facecluster.models.inception_resnet_v1 import InceptionResnetV1
from facecluster.models.model_file import (
    matches_state_sha256,
    non_finite_tensors,
    save_model_file,
    save_private,
    state_sha256,
)
from facecluster.privacy import private_dir
from facecluster.reporting import ProgressFn, null_progress
from facecluster.training.data import FaceSet, ValidationSet
from facecluster.training.losses import TripletLoss
from facecluster.training.miners import make_miner
from facecluster.training.sampler import PKSampler

#: Keys of the embedding layer that ``--dim`` replaces; everything else is the backbone.
HEAD_PREFIXES = ("last_linear.", "last_bn.", "logits.")
FEATURE_DIM = 1792

#: Called after every step with loss, active fraction, faces/s, epoch and step (for a live display).
StepFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BaseModel:
    """Where training starts: a pretrained state dict (or none: from scratch) and its name."""

    state_dict: Mapping[str, torch.Tensor] | None
    name: str  # e.g. "casia-webface:415ef259" or "scratch"


@dataclass
class TrainResult:
    """What a finished run reports (also the ``--json`` summary)."""

    out: str
    sha256: str
    run_dir: str
    epochs: int
    steps: int
    dim: int
    base: str
    miner: str
    identities: int
    faces: int
    skipped_identities: int  # left out for having fewer than 2 faces (by the data loader or the sampler)
    seconds: float
    faces_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None  # the pretrained base model on the same validation pairs


def check_options(config: TrainConfig, base: BaseModel, device: str, run_dir: Path, resume: bool,
                  out: Path | None = None, *, overwrite: bool = False) -> torch.device:
    """Refuse what ``train`` cannot do whatever the photos are; the device to train on.

    An ``out`` that exists is refused unless ``overwrite`` or ``resume``. With ``resume`` the run's
    checkpoint is read and every option that differs from the run's is named (the training faces are
    compared by ``train``, once it has them). Quick next to detection, so the CLI calls it before
    detecting any photo (minutes to hours), and ``train`` calls it first (library callers skip the CLI):
    ``check_options(TrainConfig(amp=True), base, "cpu", run_dir, False)`` raises ``ModelError``.
    """
    return _checked_options(config, base, device, run_dir, resume, out, overwrite)[0]


def _checked_options(config: TrainConfig, base: BaseModel, device: str, run_dir: Path, resume: bool,
                     out: Path | None, overwrite: bool) -> tuple[torch.device, dict[str, Any] | None]:
    """``check_options``, and the checkpoint it read to check a resume (``None`` without ``resume``), so
    that ``train`` need not read it again (the CLI's own ``check_options`` call, earlier, reads it too)."""
    dev = check_device(device)
    if (config.amp or config.compile) and dev.type != "cuda":
        raise ModelError("--amp and --compile need --device cuda (bf16 autocast and torch.compile are CUDA-only here)")
    if config.head_init == "pca":
        layer = None if base.state_dict is None else base.state_dict.get("last_linear.weight")
        if layer is None:
            raise ModelError("--head-init pca needs pretrained --weights with an embedding layer; "
                             "use --head-init random")
        if config.dim > layer.shape[0]:
            raise ModelError(f"--dim {config.dim} is larger than the base embedding ({layer.shape[0]}): "
                             "use --head-init random or a smaller --dim")
    if config.freeze_backbone and base.state_dict is None:
        raise ModelError("--freeze-backbone needs pretrained --weights: a random backbone would never learn")
    check_run_dir(run_dir, resume)
    check_writable(run_dir, f"--run-dir {run_dir}")
    if out is not None:
        if out.is_dir():  # else found only when the model is written, after the last epoch
            raise ModelError(f"--out {out} is a folder: give the model file's name")
        check_writable(out.parent, f"--out {out}")
    ckpt: dict[str, Any] | None = None
    if resume:
        # The slowest check here (the checkpoint is up to a few hundred MB with the whole network and
        # Adam's state), and no use until the run folder is known to hold one.
        ckpt = _load_checkpoint(run_dir / "checkpoint.pt")
        _check_resume(ckpt, run_dir, replace(config, lr=_step_size(config, base)), base)
    # A trained model can take hours to make again, and a catalog's vectors name the model they came from.
    # Only this run's own model (written by it before, e.g. trained longer now) is replaced unasked.
    if out is not None and not overwrite:
        why = _why_not_replace(out, None if ckpt is None else ckpt.get("run_id"), resume)
        if why:
            raise ModelError(f"--out {out} {why}: give --force to replace it, or another --out")
    return dev, ckpt


def _why_not_replace(out: Path, run_id: str | None, resume: bool) -> str | None:
    """``None`` when ``out`` does not exist or is the model file the run ``run_id`` wrote; else why not.

    Reads only the file's meta (a model whose weights are damaged still says which run wrote it, so
    writing it again from that run's folder works). Example: ``_why_not_replace(Path("m.pt"), None,
    False)`` -> ``"exists"`` when m.pt does.
    """
    if not out.exists() and not out.is_symlink():
        return None
    if not resume:
        return "exists"
    if run_id is None:
        return "exists and cannot be shown to be this run's model (the run began before runs were named)"
    from facecluster.weights import torch_load

    try:
        payload = torch_load(out)
    except Exception:  # noqa: BLE001 - whatever stops the read, the file cannot tell which run wrote it
        return "exists and cannot be read to tell which run wrote it"
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if isinstance(meta, dict) and meta.get("run_id") == run_id:
        return None
    return "exists and is not this run's model"


def check_writable(folder: Path, what: str) -> None:
    """A one-line ``ModelError`` unless files can be created in ``folder`` (or where it would be made).

    Creates nothing that stays: a probe file in the nearest folder that exists, removed at once. So a
    model or run folder that cannot be written is refused before detection, not after hours of training::

        check_writable(Path("/proc/models"), "--out /proc/models/m.pt")   # ModelError: cannot write ...
    """
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ModelError(f"cannot write {what}: {probe} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".facecluster-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ModelError(f"cannot write {what}: {exc.strerror or exc} in {probe}") from exc


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a run folder that does not fit: ``resume`` needs its checkpoint, a new run needs none.

    Cheap, so the CLI calls it before detecting any photo: ``check_run_dir(Path("runs/a"), resume=True)``
    """
    has_checkpoint = (run_dir / "checkpoint.pt").exists()
    if resume and not has_checkpoint:
        raise ModelError(f"cannot resume: no checkpoint.pt in {run_dir}; give the --run-dir of the earlier run")
    if not resume and has_checkpoint:
        # A new run here would overwrite args.json and metrics.jsonl but not the old checkpoint until its
        # first epoch ends, and a later --resume would continue the old weights under the new options.
        raise ModelError(f"{run_dir} already holds the checkpoint of an earlier run: continue it with --resume, "
                         "or give another --run-dir")


def check_device(device: str) -> torch.device:
    """A torch device that exists here (``embed.check_device``: ``cuda`` without a GPU is a ``ModelError``)."""
    from facecluster.embed import check_device as _check

    return torch.device(_check(device))


def standardise(crops: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 crops -> (N, 3, H, W) float, FaceNet's fixed standardisation ``(x - 127.5) / 128``."""
    return (torch.as_tensor(crops).permute(0, 3, 1, 2).float() - 127.5) / 128.0


def build_model(dim: int, base: BaseModel, dropout: float, device: torch.device) -> InceptionResnetV1:
    """InceptionResnetV1 with a new ``dim``-d embedding layer on the base's backbone.

    A base state dict must hold every backbone tensor with the right shape; otherwise a one-line
    ``ModelError`` names the first mismatch (e.g. a file for another network). Example::

        model = build_model(128, BaseModel(load_state_dict(path), "casia"), 0.2, torch.device("cpu"))
    """
    # Built on the meta device, then materialised: skips initialising 23M weights that are overwritten.
    with torch.device("meta"):
        model = InceptionResnetV1(embedding_dim=dim, dropout=dropout, device="meta")
    model = model.to_empty(device="cpu")
    for module in model.modules():
        if base.state_dict is None or module in (model.last_linear, model.last_bn):
            reset = getattr(module, "reset_parameters", None)
            if reset is not None and module is not model:
                reset()
    if base.state_dict is not None:
        own = model.state_dict()
        backbone = {k: v for k, v in base.state_dict.items() if not k.startswith(HEAD_PREFIXES)}
        missing = [k for k in own if not k.startswith(HEAD_PREFIXES) and k not in backbone]
        unexpected = [k for k in backbone if k not in own]
        if missing or unexpected:
            key = (missing or unexpected)[0]
            raise ModelError(
                f"weights {base.name} do not fit InceptionResnetV1: {len(missing)} backbone tensors missing, "
                f"{len(unexpected)} unexpected (first: {key})"
            )
        for key, value in backbone.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ModelError(
                    f"weights {base.name} do not fit InceptionResnetV1: {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(own[key].shape)}"
                )
        model.load_state_dict(backbone, strict=False)
    return model.to(device)


@torch.no_grad()
def backbone_features(model: InceptionResnetV1, crops: torch.Tensor, device: torch.device, batch: int = 32,
                      flip: bool = False) -> torch.Tensor:
    """Pooled 1792-d backbone features (the input of ``last_linear``) of uint8 (N, H, W, 3) crops.

    Runs the network in eval mode and captures the input of ``last_linear`` with a hook, so the
    backbone is the model's own code. ``flip`` mirrors the crops first. Progress is reported by the
    caller (the feature cache, per chunk). Example::

        feats = backbone_features(model, crops, torch.device("cpu"))   # (N, 1792) float32 on CPU
    """
    captured: list[torch.Tensor] = []
    handle = model.last_linear.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float().cpu()))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(crops), batch):
            x = standardise(crops[start : start + batch]).to(device)
            if flip:
                x = torch.flip(x, dims=[3])
            model.features(x)
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        return torch.empty(0, FEATURE_DIM)
    return torch.cat(captured)


def head_embeddings(model: InceptionResnetV1, features: torch.Tensor) -> torch.Tensor:
    """The model's embedding layer on pooled features: dropout -> last_linear -> last_bn -> L2 norm."""
    return F.normalize(model.last_bn(model.last_linear(model.dropout(features))), p=2, dim=1)


@torch.no_grad()
def init_head_from_base(model: InceptionResnetV1, base: Mapping[str, torch.Tensor], features: torch.Tensor) -> float:
    """Start the new ``dim``-d layer as the best rank-``dim`` projection of the base's 512-d embedding.

    The base head gives ``f = s*(W x) + b`` (BatchNorm folded, eval mode); the directions ``V`` are
    the top right-singular vectors of the L2-normalised ``f`` over the training crops, and the new
    layer is set to output ``V^T f``: ``last_linear = V^T diag(s) W`` and ``last_bn`` whose affine
    part undoes its own normalisation on these features (so train- and eval-mode outputs start
    equal). Returns the fraction of the normalised embeddings' energy that the projection keeps.
    """
    weight, bn = base["last_linear.weight"].float(), {k: base[f"last_bn.{k}"].float() for k in
                                                      ("weight", "bias", "running_mean", "running_var")}
    eps = model.last_bn.eps
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + eps)
    shift = bn["bias"] - scale * bn["running_mean"]
    feats = features.float()
    f = feats @ (weight.T * scale) + shift  # (N, 512) base embeddings before normalisation
    x = F.normalize(f, dim=1)
    dim = model.last_linear.weight.shape[0]
    if dim > weight.shape[0]:
        raise ModelError(f"--dim {dim} is larger than the base embedding ({weight.shape[0]}): use --head-init random")
    # Eigenvectors of X^T X (not an SVD of X): all 512 directions exist even with fewer crops than dims.
    # Beyond the crops' span X^T X is 0, where eigh returns an arbitrary basis (it changes with the thread
    # count): a tiny multiple of the base head's own covariance (``a a^T``, features taken as isotropic)
    # fills those dims with the directions the base embedding varies most along, leaving the others be.
    gram, a = x.double().T @ x.double(), (weight * scale[:, None]).double()
    prior = a @ a.T
    energy, vectors = torch.linalg.eigh(gram + 1e-6 * torch.trace(gram) / torch.trace(prior) * prior)
    order = torch.argsort(energy, descending=True)[:dim]
    v = vectors[:, order].float()  # (512, dim)
    kept = float((x.double() @ vectors[:, order]).pow(2).sum() / x.double().pow(2).sum())
    new_weight = v.T @ (weight * scale[:, None])  # (dim, 1792)
    z = feats @ new_weight.T
    mean, var = z.mean(dim=0), z.var(dim=0, unbiased=False)
    device = model.last_linear.weight.device
    model.last_linear.weight.copy_(new_weight.to(device))
    running_mean, running_var = model.last_bn.running_mean, model.last_bn.running_var
    assert running_mean is not None and running_var is not None  # last_bn tracks running statistics
    running_mean.copy_(mean.to(device))
    running_var.copy_(var.to(device))
    model.last_bn.weight.copy_(torch.sqrt(var + eps).to(device))
    model.last_bn.bias.copy_((mean + shift @ v).to(device))
    return kept


def _make_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise DataError(f"unknown optimizer {name!r}: choose adagrad, adam or adamw")


def _augment(crops: torch.Tensor, shift: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Random horizontal flips and random crops shifted by up to ``shift`` pixels (edge-padded), NCHW."""
    n, _, h, w = crops.shape
    flips = (torch.rand(n, generator=generator) < 0.5) & flip
    out = torch.where(flips[:, None, None, None].to(crops.device), torch.flip(crops, dims=[3]), crops)
    if shift > 0:
        padded = F.pad(out, (shift, shift, shift, shift), mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator).tolist()
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator).tolist()
        out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    return out


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": str(torch.__version__), "facecluster": __version__,
            "numpy": np.__version__}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _Embedder:
    """Embeds validation crops with the model being trained (cached features when frozen)."""

    def __init__(self, model: InceptionResnetV1, frozen: bool, device: torch.device, flip: bool) -> None:
        self.model, self.frozen, self.device, self.flip = model, frozen, device, flip

    @torch.no_grad()
    def __call__(self, val: ValidationSet, feats: torch.Tensor | None) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            if self.frozen and feats is not None:
                emb = head_embeddings(self.model, feats[:, 0].to(self.device))
                if self.flip:
                    emb = F.normalize(emb + head_embeddings(self.model, feats[:, 1].to(self.device)), dim=1)
                return emb.cpu().numpy()
            out = []
            for start in range(0, len(val.crops), 32):
                x = standardise(val.crops[start : start + 32]).to(self.device)
                emb = self.model(x)
                if self.flip:
                    emb = F.normalize(emb + self.model(torch.flip(x, dims=[3])), dim=1)
                out.append(emb.float().cpu())
            return torch.cat(out).numpy() if out else np.zeros((0, self.model.embedding_dim), np.float32)
        finally:
            self.model.train(was_training)


def _base_embeddings(model: InceptionResnetV1, base: Mapping[str, torch.Tensor], frozen: bool, dev: torch.device,
                     flip: bool, val: ValidationSet, val_feats: torch.Tensor | None) -> np.ndarray:
    """Validation embeddings of the base model itself (its own embedding layer on the same backbone)."""
    head = {k: v for k, v in base.items() if k.startswith(("last_linear.", "last_bn."))}
    linear, bn = model.last_linear, model.last_bn  # put back untouched afterwards: only new modules are loaded
    dim = int(base["last_linear.weight"].shape[0])
    model.last_linear = nn.Linear(FEATURE_DIM, dim, bias=False).to(dev)
    model.last_bn = nn.BatchNorm1d(dim, eps=bn.eps, momentum=bn.momentum).to(dev)
    try:
        model.load_state_dict({**model.state_dict(), **head})
        return _Embedder(model, frozen, dev, flip)(val, val_feats)
    finally:
        model.last_linear, model.last_bn = linear, bn


def validate(embeddings: np.ndarray, val: ValidationSet) -> dict[str, Any]:
    """Verification accuracy (k-fold) and VAL at FAR 1e-3 on the validation pairs (``evaluate.py``'s protocol).

    Example: ``validate(emb, val)["val_accuracy"]`` -> e.g. 0.985.
    """
    from facecluster.evaluate import squared_distances, verification_metrics

    first, second = embeddings[val.first], embeddings[val.second]
    r = verification_metrics(squared_distances(first, second), val.same, val.folds)
    return {"val_accuracy": r.accuracy, "val_accuracy_std": r.accuracy_std, "val_at_far_1e-3": r.val,
            "val_threshold": r.threshold, "val_pairs": int(len(val.same))}


def _load_checkpoint(path: Path) -> dict[str, Any]:
    from facecluster.weights import torch_load

    try:
        ckpt = torch_load(path)
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot resume: checkpoint {path} is unreadable ({exc}); start a new run in another "
                         "--run-dir") from exc
    if not isinstance(ckpt, dict) or not _CHECKPOINT_KEYS <= ckpt.keys() or not isinstance(ckpt["model"], dict):
        raise ModelError(f"cannot resume: {path} is not a facecluster training checkpoint; start a new run in "
                         "another --run-dir")
    # As in model files: torch.load does not check the zip's CRCs, so a flipped bit would resume silently.
    # Checkpoints written before the checksum have none to check.
    if "state_sha256" in ckpt:
        try:
            intact = matches_state_sha256(_checkpoint_tensors(ckpt["model"], ckpt["optimizer"]), ckpt["state_sha256"])
        except (AttributeError, TypeError, KeyError):  # an optimizer state of another shape: damaged too
            intact = False
        if not intact:
            raise ModelError(f"cannot resume: checkpoint {path} is damaged (its weights or optimizer state do not "
                             "match the checksum written with them); start a new run in another --run-dir")
    return ckpt


def _checkpoint_tensors(model: Mapping[str, Any], optimizer: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint resumes from, by name: the weights and the optimizer's per-parameter state
    (Adagrad's sums, Adam's moments and steps), which a flipped bit would quietly derail."""
    tensors = {f"model.{name}": value for name, value in model.items()}
    for param, slots in optimizer["state"].items():
        tensors.update({f"optimizer.{param}.{slot}": value for slot, value in slots.items()
                        if isinstance(value, torch.Tensor)})
    return tensors


#: What every checkpoint ``train`` writes holds (and resuming reads).
_CHECKPOINT_KEYS = frozenset({"epoch", "dim", "model", "optimizer"})


#: TrainConfig fields a resumed run must share with the original, and the option that sets each. The
#: rest (epochs: train longer; amp, compile: speed) may change. Everything here changes the weights,
#: the batches or the random draws, so a mix would be neither run, and the model meta would lie.
RESUME_MUST_MATCH = {
    "freeze_backbone": "--freeze-backbone", "optimizer": "--optimizer", "lr": "--lr", "weight_decay": "--weight-decay",
    "identities_per_batch": "-P/--batch-identities", "faces_per_identity": "-K/--batch-faces", "seed": "--seed",
    "miner": "--miner", "margin": "--margin", "head_init": "--head-init", "flip": "--flip/--no-flip",
    "dropout": "dropout", "augment_shift": "augment_shift",
}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def data_fingerprint(data: FaceSet) -> str:
    """A short digest of which photo is which identity: a resumed run must train on the same faces."""
    h = hashlib.sha256()
    for label, digest in zip(data.labels.tolist(), data.digests):
        h.update(f"{data.names[int(label)]}\t{digest}\n".encode())
    return h.hexdigest()[:16]


def _step_size(config: TrainConfig, base: BaseModel) -> float:
    """The learning rate the run uses (``TrainConfig.resolved_lr``): recorded, and compared on resume."""
    return config.resolved_lr(base.state_dict is not None and not config.freeze_backbone)


def _cannot_resume(run_dir: Path, differ: Sequence[str]) -> ModelError:
    return ModelError(f"cannot resume: the run in {run_dir} used {', '.join(differ)}; give the same options to "
                      "continue it, or start a new run in another --run-dir")


def _check_resume(ckpt: Mapping[str, Any], run_dir: Path, config: TrainConfig, base: BaseModel) -> None:
    """One-line ``ModelError`` naming every option (and the weights) that differs from the run's.

    Needs no photos, so ``check_options`` runs it before detection; ``train`` compares the faces.
    """
    if int(ckpt.get("dim", -1)) != config.dim:
        raise ModelError(f"cannot resume: the checkpoint in {run_dir} is {ckpt.get('dim')}-d, --dim is {config.dim}")
    stored = ckpt.get("config")
    if not isinstance(stored, dict):  # a checkpoint of an earlier facecluster: its args.json has the config
        try:
            stored = json.loads((run_dir / "args.json").read_text()).get("config") or {}
        except (OSError, ValueError, AttributeError):
            stored = {}
    now = asdict(config)
    differ = [f"{flag} {_shown(stored[key])} (now {_shown(now[key])})" for key, flag in RESUME_MUST_MATCH.items()
              if key in stored and stored[key] != now[key]]
    if "base" in ckpt and ckpt["base"] != base.name:
        differ.append(f"--weights {ckpt['base']} (now {base.name})")
    if differ:
        raise _cannot_resume(run_dir, differ)
    done = int(ckpt["epoch"])
    if done > config.epochs:
        raise ModelError(f"cannot resume: the run in {run_dir} has already trained {done} epochs and --epochs "
                         f"{config.epochs} is fewer; --epochs is the total, so give {done} or more")


def _write_args(run_dir: Path, args: Mapping[str, Any] | None, config: TrainConfig,
                resumed_after: int | None = None) -> None:
    """Write ``args.json``: the command's options and the config in effect now.

    On resume the file is rewritten (``--epochs`` may have grown, ``--device`` changed) and
    ``resumed`` lists, per resume, the epoch it continued after and each config value that changed
    (``{"after_epoch": 3, "changed": {"epochs": [3, 6]}}``), so the file always says what ran last.
    """
    path = run_dir / "args.json"
    record: dict[str, Any] = {**dict(args or {}), "config": asdict(config)}
    if resumed_after is not None:
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = {}
        before = before if isinstance(before, dict) else {}
        old_config = before.get("config")
        old_config = old_config if isinstance(old_config, dict) else {}
        changed = {k: [old_config[k], v] for k, v in record["config"].items() if k in old_config and old_config[k] != v}
        earlier = before.get("resumed")
        earlier = earlier if isinstance(earlier, list) else []
        record["resumed"] = [*earlier, {"after_epoch": resumed_after, "changed": changed}]
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    # One flag per tensor, then a single device sync for all of them.
    return bool(torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all())


def _diverged(where: str, what: str, config: TrainConfig, epoch: int) -> ModelError:
    kept = f"; checkpoint.pt keeps epoch {epoch - 1}" if epoch > 1 else ""
    hint = "a lower --lr" + ("" if config.freeze_backbone else " or --freeze-backbone")
    return ModelError(f"training diverged at {where}: {what} (--lr {config.lr:g}, --optimizer {config.optimizer}); "
                      f"no model written{kept}; try {hint}")


def train(data: FaceSet, config: TrainConfig, *, base: BaseModel, out: Path, run_dir: Path,
          device: str = "cpu", val: ValidationSet | None = None, resume: bool = False,
          args: Mapping[str, Any] | None = None, progress: ProgressFn = null_progress,
          on_step: StepFn | None = None, overwrite: bool = False) -> TrainResult:
    """Train a ``config.dim``-d FaceNet embedding on ``data`` with online triplet mining; write ``out``.

    Writes ``run_dir/args.json``, ``versions.json``, ``metrics.jsonl`` (one line per epoch; epoch 0 is
    the untrained start) and ``checkpoint.pt`` (after each epoch; ``resume=True`` continues from it).
    An existing ``out`` is a ``ModelError`` unless ``overwrite`` (``--force``) or ``resume``.
    Example::

        result = train(data, TrainConfig(epochs=3), base=BaseModel(state, "casia"), out=Path("m.pt"),
                       run_dir=Path("runs/m"))
    """
    # With resume, the checkpoint: read (and the options checked against it) once, here.
    dev, ckpt = _checked_options(config, base, device, run_dir, resume, out, overwrite)
    # The step size actually used is recorded (args.json, checkpoint, model meta), never "None".
    lr = _step_size(config, base)
    config = replace(config, lr=lr)
    sampler = PKSampler(data.labels.tolist(), config.identities_per_batch, config.faces_per_identity, seed=config.seed)
    checkpoint_path = run_dir / "checkpoint.pt"
    metrics_path = run_dir / "metrics.jsonl"
    fingerprint = data_fingerprint(data)
    # The one resume check that needs the photos; before any expensive work (features, PCA).
    if ckpt is not None and "data" in ckpt and ckpt["data"] != fingerprint:
        raise _cannot_resume(run_dir, ["the training faces (--data/--from-catalog)"])
    private_dir(run_dir)  # 0700: args, metrics and checkpoints all derive from the user's faces
    _seed_everything(config.seed)
    model = build_model(config.dim, base, config.dropout, dev)
    frozen = config.freeze_backbone
    flip_val = config.flip
    clock = time.perf_counter()

    # Cached features: frozen backbone => every crop and its mirror once; validation crops likewise.
    train_feats = val_feats = None

    def features_of(crops: torch.Tensor, flip: bool) -> torch.Tensor:
        return backbone_features(model, crops, dev, flip=flip)

    need_feats = frozen or config.head_init == "pca"
    if need_feats:
        train_feats = data.cached_features(features_of, base.name, flips=frozen and config.flip, progress=progress)
    if frozen and val is not None:
        val_feats = val.cached_features(features_of, base.name, flips=config.flip, progress=progress)
    baseline = None
    if val is not None and base.state_dict is not None and "last_linear.weight" in base.state_dict:
        baseline = validate(_base_embeddings(model, base.state_dict, frozen, dev, flip_val, val, val_feats), val)
        baseline["dim"] = int(base.state_dict["last_linear.weight"].shape[0])

    start_epoch = 1
    state_at_start: dict[str, Any] = {}
    if config.head_init == "pca" and not resume:
        assert train_feats is not None and base.state_dict is not None
        state_at_start["pca_energy_kept"] = init_head_from_base(model, base.state_dict, train_feats[:, 0])

    params = [p for name, p in model.named_parameters() if not frozen or name.startswith(HEAD_PREFIXES)]
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen or name.startswith(HEAD_PREFIXES))
    optimizer = _make_optimizer(config.optimizer, params, lr, config.weight_decay)
    history: list[dict[str, Any]] = []
    # Names the run in its checkpoints and model file, so a resume may replace its own --out but no other.
    # A checkpoint from before runs were named keeps none until it trains on (a random one on every
    # rewrite would change the model file's bytes, so its model id, each time).
    run_id: str | None = uuid.uuid4().hex
    if ckpt is not None:
        run_id = ckpt.get("run_id") or (uuid.uuid4().hex if int(ckpt["epoch"]) < config.epochs else None)
        model.load_state_dict(ckpt["model"], strict=not frozen)
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = int(ckpt["epoch"]) + 1
        history = list(ckpt.get("history", []))
        # The checkpoint's history is what ran: metrics.jsonl may also hold the epoch whose checkpoint a
        # Ctrl-C cut short (logged just before it), which this run trains and logs again.
        metrics_path.write_text("".join(json.dumps(record) + "\n" for record in history))
        _write_args(run_dir, args, config, resumed_after=start_epoch - 1)
    else:
        _write_args(run_dir, args, config)
        (run_dir / "versions.json").write_text(json.dumps(_versions(), indent=2) + "\n")
        metrics_path.write_text("")
    train_step = model
    if config.compile:
        train_step = torch.compile(model)  # type: ignore[assignment]  # a callable wrapper of the same module

    miner_rng = torch.Generator()
    loss_fn = TripletLoss(config.margin, reduction="nonzero" if config.miner == "batch-all" else "mean")
    labels_all = torch.as_tensor(data.labels, dtype=torch.long)
    crops_all = torch.as_tensor(data.crops) if not frozen else None

    def log(record: dict[str, Any]) -> None:
        history.append(record)
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    if not resume and val is not None:
        log({"epoch": 0, **state_at_start, **validate(_Embedder(model, frozen, dev, flip_val)(val, val_feats), val)})
    elif not resume:
        log({"epoch": 0, **state_at_start})

    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    step_count = (start_epoch - 1) * steps_per_epoch
    train_time, train_faces = 0.0, 0
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_seed = config.seed * 100_003 + epoch  # per-epoch streams: a resumed run sees the same draws
        _seed_everything(epoch_seed)
        miner_rng.manual_seed(epoch_seed)
        aug_rng = torch.Generator().manual_seed(epoch_seed + 1)
        miner = make_miner(config.miner, config.margin, generator=miner_rng)
        model.train()
        if frozen and config.head_init == "pca":
            # The PCA-initialised layer keeps the statistics it was given (its affine part still trains):
            # batch statistics of small P x K batches under dropout would distort the projection at once.
            model.last_bn.eval()
        if base.state_dict is not None:
            # The pretrained backbone keeps its BatchNorm statistics: small P x K batches would
            # replace them with noisy batch estimates (and the shared weights have BN folded in).
            for name, module in model.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith("last_bn"):
                    module.eval()
        sums = {"loss": 0.0, "active": 0, "triplets": 0, "steps": 0, "faces": 0}
        epoch_start = time.perf_counter()
        for batch in sampler.batches(epoch):
            tick = time.perf_counter()
            idx = torch.tensor(batch, dtype=torch.long)
            labels = labels_all[idx].to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=config.amp):
                if frozen:
                    assert train_feats is not None
                    choice = torch.randint(0, train_feats.shape[1], (len(batch),), generator=aug_rng)
                    emb = head_embeddings(model, train_feats[idx, choice].to(dev))
                else:
                    assert crops_all is not None
                    x = _augment(standardise(crops_all[idx]), config.augment_shift, aug_rng, config.flip).to(dev)
                    emb = train_step(x)
            emb = emb.float()
            triplets = miner(emb, labels)
            result = loss_fn(emb, triplets)
            loss = result.loss.item()  # once: on a GPU each .item() waits for the device
            where = f"epoch {epoch}, step {sums['steps'] + 1} of {steps_per_epoch}"
            if not math.isfinite(loss) or not bool(torch.isfinite(emb).all()):
                raise _diverged(where, "the embeddings and loss became NaN or infinite", config, epoch)
            optimizer.zero_grad(set_to_none=True)
            if result.n_triplets:
                result.loss.backward()
                optimizer.step()
                if not _all_finite(params):
                    raise _diverged(where, "the update made weights NaN or infinite", config, epoch)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - tick
            step_count += 1
            sums["loss"] += loss
            sums["active"] += result.n_active
            sums["triplets"] += result.n_triplets
            sums["steps"] += 1
            sums["faces"] += len(batch)
            train_time += seconds
            train_faces += len(batch)
            progress("train", step_count, total_steps)
            if on_step is not None:
                on_step({"epoch": epoch, "step": step_count, "steps": total_steps, "loss": loss,
                         "active_fraction": result.active_fraction, "faces_per_s": len(batch) / max(seconds, 1e-9)})
        epoch_seconds = time.perf_counter() - epoch_start
        # Frozen backbone: the checkpoint holds only the trained layer (the rest is the base, ~90 MB).
        state = {k: v for k, v in model.state_dict().items() if not frozen or k.startswith(HEAD_PREFIXES)}
        bad = non_finite_tensors(state)  # buffers too (BatchNorm statistics), which the step check does not see
        if bad:
            raise _diverged(f"the end of epoch {epoch}", f"{len(bad)} tensors became NaN or infinite (first: {bad[0]})",
                            config, epoch)
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": sums["loss"] / max(sums["steps"], 1),
            "active_fraction": sums["active"] / max(sums["triplets"], 1),
            "triplets": sums["triplets"],
            "steps": sums["steps"],
            "faces_per_s": sums["faces"] / max(epoch_seconds, 1e-9),
            "seconds": round(epoch_seconds, 3),
        }
        if val is not None:
            record.update(validate(_Embedder(model, frozen, dev, flip_val)(val, val_feats), val))
        log(record)
        # Private (0600) like the model file: these weights are derived from the user's faces. Written to a
        # temporary name and renamed, so a crash mid-save keeps the previous checkpoint. "config", "base" and
        # "data" let --resume refuse to mix runs.
        optimizer_state = optimizer.state_dict()
        save_private({"epoch": epoch, "dim": config.dim, "model": state, "optimizer": optimizer_state,
                      "state_sha256": state_sha256(_checkpoint_tensors(state, optimizer_state)), "run_id": run_id,
                      "history": history, "config": asdict(config), "base": base.name, "data": fingerprint},
                     checkpoint_path)

    meta = {
        "epochs": config.epochs, "miner": config.miner, "margin": config.margin, "optimizer": config.optimizer,
        "lr": config.lr, "seed": config.seed, "freeze_backbone": frozen, "head_init": config.head_init,
        "identities": len(sampler.members), "faces": sampler.n_faces, "history": history,
        "versions": _versions(), "crop": data.crop_key, "run_id": run_id,
    }
    model.eval()
    if not overwrite and _why_not_replace(out, run_id, True):
        # Absent (or this run's) when the run began, hours ago: another run given the same --out wrote it since.
        raise ModelError(f"--out {out} appeared during training (another run with the same --out?) and is kept; "
                         f"so is this run: write its model with the same command plus --resume --run-dir {run_dir} "
                         "and another --out")
    try:
        sha = save_model_file(out, model, base=base.name, meta=meta)
    except OSError as exc:  # a full disk, or the folder changed since check_options
        raise ModelError(f"cannot write {out}: {exc.strerror or exc}; the trained run is kept: write the model with "
                         f"the same command plus --resume --run-dir {run_dir} (--out may change)") from exc
    return TrainResult(
        out=str(out), sha256=sha, run_dir=str(run_dir), epochs=config.epochs, steps=step_count, dim=config.dim,
        base=base.name, miner=config.miner, identities=len(sampler.members), faces=sampler.n_faces,
        skipped_identities=len(data.report.left_out_identities) + len(sampler.skipped), seconds=round(time.perf_counter() - clock, 2),
        faces_per_s=round(train_faces / max(train_time, 1e-9), 1), history=history, baseline=baseline,
    )
