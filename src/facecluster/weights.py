"""Where model weights come from: an explicit path, environment variables, the user cache, a download.

``resolve_weights(name)`` looks, in order, at

1. the explicit ``path`` (``--weights``);
2. ``$FACECLUSTER_WEIGHTS`` (the embedding file only) and ``$FACECLUSTER_WEIGHTS_DIR`` (a folder holding
   any of the files by their published names; MTCNN files may also sit in its ``mtcnn/`` subfolder);
3. the user cache, ``facecluster.paths.cache_dir() / "weights"``;
4. a download of facenet-pytorch's published file into the cache (a timeout, progress through the
   callback, written to a temporary file and moved into place only after the integrity check).

With ``FACECLUSTER_OFFLINE=1`` or when the download fails it raises ``WeightsError`` at once, naming the
file and where to put it. Nothing here runs in a model constructor::

    path = resolve_weights("casia-webface")            # Path to a verified state dict
    model = InceptionResnetV1.from_state_dict(load_state_dict(path))

Integrity: the MTCNN files have known sha256 digests. The InceptionResnetV1 files are checked by
structure (they load with ``weights_only=True`` and carry exactly the keys and shapes of a 512-d
InceptionResnetV1, ``logits.*`` allowed), and their sha256 is recorded next to the cached file
(``NAME.sha256``) so a later change of the cached file is noticed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from facecluster.errors import WeightsError
from facecluster.paths import cache_dir
from facecluster.reporting import ProgressFn, null_progress

_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
_REPO_DATA = "https://raw.githubusercontent.com/timesler/facenet-pytorch/master/data/"
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: its name on disk, where to download it, and how to check it."""

    filename: str
    url: str
    sha256: str | None  # None: checked by structure (InceptionResnetV1 files)
    aliases: tuple[str, ...] = ()  # other names accepted in $FACECLUSTER_WEIGHTS_DIR


WEIGHT_FILES: dict[str, WeightFile] = {
    "pnet": WeightFile("pnet.pt", _REPO_DATA + "pnet.pt",
                       "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", ("mtcnn/pnet.pt",)),
    "rnet": WeightFile("rnet.pt", _REPO_DATA + "rnet.pt",
                       "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", ("mtcnn/rnet.pt",)),
    "onet": WeightFile("onet.pt", _REPO_DATA + "onet.pt",
                       "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", ("mtcnn/onet.pt",)),
    "vggface2": WeightFile("20180402-114759-vggface2.pt", _RELEASE + "20180402-114759-vggface2.pt", None,
                           ("facenet-vggface2.pt",)),
    "casia-webface": WeightFile("20180408-102900-casia-webface.pt", _RELEASE + "20180408-102900-casia-webface.pt",
                                None, ("facenet-casia-webface.pt",)),
}

#: sha256 of InceptionResnetV1 files we have seen, for the model id and the docs (not required to match):
#: the BatchNorm-folded conversion of 20180408-102900 shared with the project.
KNOWN_SHA256 = {"415ef25940068eaff69498479dbb5d839547ec3eaa609a6caa53697b4f52073b": "casia-webface"}

EMBEDDING_NAMES = ("vggface2", "casia-webface")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (``hashlib.file_digest`` reads it in blocks)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def weights_sha256(path: Path | str) -> str:
    """``file_sha256`` of a weights or model file, computed once per process while the file stays the same.

    A command checks a cached file's digest when it resolves it and names the model by the same digest
    a moment later; hashing ~100 MB twice cost ~0.2 s of start-up. The key includes size, inode and
    modification/change times, so a replaced file is hashed again. Example::

        weights_sha256(Path("casia.pt"))[:8]   # '415ef259'
    """
    st = Path(path).stat()
    return _memo_sha256(str(Path(path).resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=32)
def _memo_sha256(path: str, size: int, inode: int, mtime_ns: int, ctime_ns: int) -> str:
    return file_sha256(Path(path))


def torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a one-line ``ValueError`` saying why it failed
    (``OSError`` when the file cannot be opened at all).

    torch's own messages run to a dozen lines of advice about ``weights_only=False``, which we never
    follow (that would run code from the file). Example::

        torch_load(Path("photo.jpg"))   # ValueError: not a PyTorch file (it does not start like one)
    """
    import pickle
    import zipfile

    import torch

    with open(path, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive; very old files are a bare pickle (protocol byte 0x80).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ValueError("not a PyTorch file (it does not start like one)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError, IndexError,
            KeyError, AttributeError, TypeError) as exc:  # what torch.load raises on junk bytes
        if head.startswith(b"PK") and not zipfile.is_zipfile(path):
            # Cut short (a partial download or copy): torch says "failed finding central directory. This is
            # an internal miniz error ..." or even "[Errno 22] Invalid argument", neither of which says so.
            raise ValueError("truncated or damaged: the end of its zip archive is missing") from exc
        text = str(exc)
        if match := re.search(r"Unsupported global: GLOBAL (\S+)", text):
            raise ValueError(f"it holds a pickled Python object ({match.group(1)}), not only tensors: "
                             "save the model's state_dict() instead") from exc
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raise ValueError(lines[0][:160] if lines else type(exc).__name__) from exc


def load_state_dict(path: Path) -> dict[str, Any]:
    """Load a ``torch.save``d dict with ``weights_only=True`` on the CPU; one-line ``WeightsError`` otherwise.

    Example::

        state = load_state_dict(Path("20180408-102900-casia-webface.pt"))
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} {not_a_file_reason(path)}")
    # Only a file in our own cache is ours to throw away; a path the user gave may be anything of theirs
    # (`--weights photo.jpg`), so it gets no advice to delete it.
    ours = _in_cache(path)
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty" + (": delete it and download it again" if ours else ""))
    try:
        state = torch_load(path)
    except OSError as exc:  # the file could not even be opened (permissions)
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        if ours:
            raise WeightsError(f"cached weights file {path} is corrupt ({exc}): delete it and download it again") from exc
        raise WeightsError(f"weights file {path} is not a PyTorch state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def not_a_file_reason(path: Path) -> str:
    """Why ``path.is_file()`` said no: missing, a folder, or something else (a FIFO would block a read).

        not_a_file_reason(Path("nope.pt"))   # 'does not exist'
    """
    if path.is_dir():
        return "is a folder, not a file"
    return "is not a regular file" if path.exists() else "does not exist"


def check_embedding_state_dict(state: dict[str, Any], source: str | Path) -> None:
    """Raise ``WeightsError`` unless ``state`` is a 512-d InceptionResnetV1 state dict (``logits.*`` allowed)."""
    import torch

    from facecluster.models.inception_resnet_v1 import InceptionResnetV1

    if state.get("format") == "facecluster-model":
        raise WeightsError(f"{source} is a trained facecluster model: pass it with --model, not --weights")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in InceptionResnetV1(device="meta").state_dict().items()}
    body = {k: v for k, v in state.items() if not k.startswith("logits.")}
    missing = sorted(set(expected) - set(body))
    unexpected = sorted(set(body) - set(expected))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise WeightsError(f"{source} is not an InceptionResnetV1 state dict: {len(missing)} keys missing, "
                           f"{len(unexpected)} unexpected (e.g. {example!r})")
    for key, shape in expected.items():
        got = tuple(getattr(body[key], "shape", ()))
        if got != shape:
            raise WeightsError(f"{source}: {key!r} has shape {list(got)}, expected {list(shape)} "
                               "(a 512-d InceptionResnetV1)")


def verify_file(name: str, path: Path) -> str:
    """Integrity check of a weight file for ``name``; returns its sha256. ``WeightsError`` if it fails."""
    spec = WEIGHT_FILES[name]
    digest = file_sha256(path)
    if spec.sha256 is not None:
        if digest != spec.sha256:
            raise WeightsError(f"{path} is not the published {spec.filename} (sha256 {digest[:12]}…, "
                               f"expected {spec.sha256[:12]}…): delete it and download it again")
    else:
        check_embedding_state_dict(load_state_dict(path), path)
    return digest


def _is_offline() -> bool:
    return os.environ.get("FACECLUSTER_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _in_cache(path: Path) -> bool:
    # A file in facecluster's own weights cache (downloaded there, or put there as the errors advise).
    return Path(path).resolve().parent == (cache_dir() / "weights").resolve()


def _where_to_put(spec: WeightFile, target: Path) -> str:
    if not any(WEIGHT_FILES[name] is spec for name in EMBEDDING_NAMES):
        # MTCNN files: no command takes their path (detect has no --weights), only these two places do.
        return (f"download {spec.url} and put it at {target} (or in the folder FACECLUSTER_WEIGHTS_DIR names, "
                "or its mtcnn/ subfolder)")
    return (f"download {spec.url} and put it at {target} (or pass its path with --weights / "
            "set FACECLUSTER_WEIGHTS_DIR to the folder holding it)")


def _open_url(url: str, timeout: float) -> IO[bytes]:
    """Open a URL for reading (a seam for tests: they monkeypatch it or serve files on 127.0.0.1)."""
    import urllib.request  # here, not at import: it costs ~20 ms and most runs find the file cached

    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed https URLs or test servers


def _download(name: str, target: Path, progress: ProgressFn) -> Path:
    import tempfile

    spec = WEIGHT_FILES[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    # A temp file in the cache folder itself, so the final rename is atomic on the same file system.
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{spec.filename}.", suffix=".part", delete=False)
    tmp = Path(handle.name)
    try:
        with handle, _open_url(spec.url, DOWNLOAD_TIMEOUT_S) as response:
            headers = getattr(response, "headers", None)
            length = headers.get("Content-Length") if headers is not None else None
            total = int(length) if length else None
            done = 0
            progress(f"download {spec.filename}", 0, total)
            while chunk := response.read(1 << 16):
                handle.write(chunk)
                done += len(chunk)
                progress(f"download {spec.filename}", done, total)
        if total is not None and done != total:
            raise WeightsError(f"download of {spec.filename} stopped after {done} of {total} bytes: "
                               + _where_to_put(spec, target))
        digest = verify_file(name, tmp)
        os.replace(tmp, target)
        if spec.sha256 is None:
            target.with_name(target.name + ".sha256").write_text(digest + "\n")
        return target
    except OSError as exc:  # urllib's URLError and TimeoutError are OSErrors too
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(f"cannot download {spec.filename} ({reason}): " + _where_to_put(spec, target)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _check_cached(name: str, path: Path) -> Path:
    # A recorded digest (written when we downloaded the file) must still match.
    record = path.with_name(path.name + ".sha256")
    spec = WEIGHT_FILES[name]
    expected = spec.sha256 or (record.read_text().strip() if record.is_file() else None)
    if expected is not None and weights_sha256(path) != expected:
        raise WeightsError(f"cached {path} changed since it was verified (sha256 mismatch): delete it to download again")
    return path


def resolve_weights(name: str, path: Path | None = None, progress: ProgressFn = null_progress) -> Path:
    """The local file holding weights ``name`` ("pnet", "rnet", "onet", "vggface2", "casia-webface").

    Order: ``path``, ``$FACECLUSTER_WEIGHTS`` (embedding names), ``$FACECLUSTER_WEIGHTS_DIR``, the cache,
    then a download (unless ``FACECLUSTER_OFFLINE=1``). Example::

        resolve_weights("onet")                                   # ~/.cache/facecluster/weights/onet.pt
        resolve_weights("casia-webface", Path("casia.pt"))        # that file, if it exists
    """
    if name not in WEIGHT_FILES:
        raise WeightsError(f"unknown weights {name!r}: choose one of {', '.join(WEIGHT_FILES)}")
    spec = WEIGHT_FILES[name]
    if path is not None:
        if not Path(path).is_file():
            # A bare word that names nothing is more likely a mistyped weights name than a missing file.
            # Something there but not a file (a FIFO, a device) is never opened: it would block or never end.
            hint = "" if Path(path).exists() or Path(path).suffix or len(Path(path).parts) > 1 else \
                f" (weights names: {', '.join(sorted(EMBEDDING_NAMES))})"
            raise WeightsError(f"weights file {path} {not_a_file_reason(Path(path))}{hint}")
        return Path(path)
    if name in EMBEDDING_NAMES and (env := os.environ.get("FACECLUSTER_WEIGHTS")):
        if not Path(env).is_file():
            raise WeightsError(f"FACECLUSTER_WEIGHTS points at {env}, which {not_a_file_reason(Path(env))}")
        return Path(env)
    if env_dir := os.environ.get("FACECLUSTER_WEIGHTS_DIR"):
        for candidate in (spec.filename, *spec.aliases):
            if (Path(env_dir) / candidate).is_file():
                return Path(env_dir) / candidate
    target = cache_dir() / "weights" / spec.filename
    if target.is_file():
        return _check_cached(name, target)
    if _is_offline():
        raise WeightsError(f"{spec.filename} is not in the cache and FACECLUSTER_OFFLINE is set: "
                           + _where_to_put(spec, target))
    return _download(name, target, progress)
