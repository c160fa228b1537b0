"""Trained model files: one ``torch.save``d dict that loads with ``weights_only=True``.

Format (version 1)::

    {"format": "facecluster-model", "version": 1, "dim": 128, "base": "casia-webface:415ef259",
     "state_dict": {...InceptionResnetV1 tensors...}, "meta": {...JSON-like training facts...},
     "state_sha256": "9f2c..."}

    sha = save_model_file("me.pt", model, base="casia-webface:415ef259", meta={"epochs": 3})
    model, meta = load_model_file("me.pt", device="cpu")

``state_sha256`` (``state_sha256()`` of the state dict, checked on load) came later within version 1: older
facecluster versions ignore the extra key, and files written before it, which lack it, load unchecked.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from facecluster.errors import ModelError
from facecluster.models.inception_resnet_v1 import InceptionResnetV1
from facecluster.weights import not_a_file_reason, torch_load, weights_sha256

FORMAT = "facecluster-model"
VERSION = 1


def _plain(value: Any, where: str) -> Any:
    # weights_only=True refuses arbitrary objects: keep meta to JSON-like values (+ tensors).
    # Exact builtin types: str subclasses (torch.__version__) and numpy scalars would pickle as globals.
    if value is None or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    raise ModelError(f"{where}: value of type {type(value).__name__} cannot be stored in a model file")


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold NaN or infinite values.

    Example: ``non_finite_tensors({"w": torch.tensor([1.0, float("nan")])})`` -> ["w"].
    """
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of a state dict's content: each tensor's name, dtype, shape and raw bytes, by name.

    Example: ``state_sha256({"w": torch.zeros(2)}) == state_sha256({"w": torch.zeros(2)})`` -> True.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        # Raw bytes through a uint8 view: numpy has no bfloat16, and .tobytes() would copy every tensor.
        data = tensor.reshape(-1).view(torch.uint8).numpy()
        # The header frames each tensor, so moving bytes from one tensor into the next changes the digest.
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0{data.nbytes}\0".encode())
        digest.update(data.data)  # the array's own buffer, no copy
    return digest.hexdigest()


def matches_state_sha256(state: Mapping[str, Any], stored: object) -> bool:
    """True when ``stored`` is the ``state_sha256`` of ``state``, whose values must all be tensors.

    For model files and training checkpoints alike. Example:
    ``matches_state_sha256({"w": torch.zeros(2)}, state_sha256({"w": torch.zeros(2)}))`` -> True.
    """
    return (isinstance(stored, str) and all(isinstance(v, torch.Tensor) for v in state.values())
            and state_sha256(state) == stored)


def save_private(payload: Any, path: Path | str) -> None:
    """``torch.save`` ``payload`` to ``path`` with mode 0600, through a temporary name and a rename.

    Trained weights and checkpoints are derived from a user's faces: owner-only, like the catalog.
    A crash mid-write leaves the previous file in place. Example: ``save_private({"epoch": 1}, "ckpt.pt")``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 whatever the umask, so the rename keeps it private.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # Through a file object, not the name: torch.save names the zip's records after a file's name (here
        # the random temporary one), so the same payload saved twice would differ in bytes, and a model
        # written again from its run folder would get a new sha256, i.e. a new model id for the catalog.
        with open(tmp, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model_file(path: Path | str, model: InceptionResnetV1, *, base: str, meta: dict[str, Any]) -> str:
    """Write ``model`` (its full state dict, on CPU) with ``base`` and ``meta``; return the file's sha256.

    The file is written to a temporary name and renamed, so a crash never leaves half a model; a
    model with NaN or infinite weights is refused (``ModelError``) rather than written.

    Example: ``save_model_file("me.pt", model, base="casia-webface:415ef259", meta={"epochs": 3})``.
    """
    path = Path(path)
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    bad = non_finite_tensors(state)
    if bad:
        raise ModelError(f"not writing {path}: {len(bad)} of {len(state)} tensors hold NaN or infinite values "
                         f"(first: {bad[0]})")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "dim": int(model.last_linear.weight.shape[0]),
        "base": str(base),
        "state_dict": state,
        "meta": _plain(meta, "meta"),
        # torch.load does not check the zip's CRCs: without this a flipped bit in a weight loads silently.
        "state_sha256": state_sha256(state),
    }
    save_private(payload, path)
    return weights_sha256(path)


def check_model_path(path: Path) -> None:
    """A one-line ``ModelError`` unless ``path`` is a regular file (no read: a FIFO would block it).

        check_model_path(Path("nope.pt"))   # ModelError: model file nope.pt does not exist: give ...
    """
    if not path.is_file():
        raise ModelError(f"model file {path} {not_a_file_reason(path)}: give the --out file written by "
                         "`facecluster train`")


def read_model_file(path: Path | str) -> dict[str, Any]:
    """Load and check a model file's dict (tensors on CPU); one-line ``ModelError`` when it is not one.

    Example: ``read_model_file("me.pt")["dim"]`` -> 128.
    """
    path = Path(path)
    check_model_path(path)
    try:
        payload = torch_load(path)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path} is not a readable model file ({exc})") from exc
    return check_model_payload(payload, path)


def check_model_payload(payload: Any, path: Path | str) -> dict[str, Any]:
    """``payload`` (a loaded model file) if it is a sound one, else a one-line ``ModelError`` naming ``path``.

    What ``read_model_file`` checks once the file is loaded: format, version, checksum, dim, finite weights.
    Example: ``check_model_payload(torch.load("me.pt", weights_only=True), "me.pt")["dim"]`` -> 128.
    """
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(
            f"{path} is not a facecluster model file (pretrained weights go to --weights, trained models to --model)"
        )
    if payload.get("version") != VERSION:
        raise ModelError(f"{path} has model file version {payload.get('version')!r}; this facecluster reads version {VERSION}")
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ModelError(f"{path} has no state_dict: the file is damaged, train again")
    # Before the checks below: a flipped exponent bit can make a weight infinite, which is damage, not divergence.
    # The key is absent from files written before it was added: nothing to check them with.
    if "state_sha256" in payload and not matches_state_sha256(state, payload["state_sha256"]):
        raise ModelError(f"{path} is damaged: its weights do not match the checksum written with them (bits "
                         "changed on disk or in a copy); write it again with the same `facecluster train` "
                         "command plus --resume --run-dir DIR (its run folder), or train again")
    linear = state.get("last_linear.weight")
    dim = payload.get("dim")
    if not isinstance(linear, torch.Tensor) or linear.ndim != 2 or linear.shape[0] != dim:
        raise ModelError(f"{path}: declared dim {dim} does not match its embedding layer; the file is damaged")
    bad = non_finite_tensors(state)
    if bad:
        # Such a model (e.g. from a diverged run of an older facecluster) would embed every face as NaN.
        raise ModelError(f"{path} holds NaN or infinite weights ({len(bad)} of {len(state)} tensors): its training "
                         "diverged; train again with a lower --lr or --freeze-backbone")
    return payload


def load_model_file(path: Path | str, device: str | torch.device = "cpu") -> tuple[InceptionResnetV1, dict[str, Any]]:
    """Build the trained InceptionResnetV1 (eval mode, on ``device``) and return it with its meta.

    ``meta`` also carries ``base``, ``dim`` and ``sha256`` (of the file) so callers can name the model.

    Example: ``model, meta = load_model_file("me.pt", "cpu")`` then ``model(crops)`` -> (N, meta["dim"]).
    """
    payload = read_model_file(path)
    model = InceptionResnetV1.from_state_dict(payload["state_dict"], device=device)
    meta = dict(payload.get("meta") or {})
    meta.update({"base": payload["base"], "dim": int(payload["dim"]), "sha256": weights_sha256(path)})
    return model, meta
