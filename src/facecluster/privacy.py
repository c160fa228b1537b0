"""Owner-only files and folders: face crops, thumbnails, exports and the review site are biometric data.

Every helper sets the mode explicitly after creating, so the result is 0700 / 0600 whatever the umask::

    site = private_dir(Path("~/faces-site").expanduser())
    write_private_text(site / "index.html", "<html>...</html>")
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as owner-only folders; return it.

    Folders that already exist keep their mode, except ``path`` itself when this call created it:
    a user's existing ``~/Pictures`` is never re-permissioned, but the files written inside are 0600.

        private_dir(Path("/tmp/site/thumbs"))   # -> /tmp/site/thumbs, mode 0700
    """
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it between the check and here
            continue
        # mkdir's mode is filtered by the umask; chmod is not.
        os.chmod(folder, DIR_MODE)
    return path


def _open_private(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    # O_CREAT's mode is filtered by the umask and ignored for an existing file: set it explicitly.
    os.fchmod(fd, FILE_MODE)
    return fd


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename) with mode 0600.

        write_private_bytes(Path("thumbs/12.jpg"), jpeg_bytes)
    """
    # The temp file is created 0600 by mkstemp in the same folder, so the rename is atomic and the
    # content is never readable by others, not even for a moment.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically with mode 0600.

        write_private_text(Path("site/index.html"), html)
    """
    write_private_bytes(path, text.encode("utf-8"))


def open_private(path: Path) -> int:
    """Open ``path`` for writing (created or truncated) with mode 0600; return the file descriptor.

        with os.fdopen(open_private(Path("faces.jsonl")), "w", encoding="utf-8") as out: ...
    """
    return _open_private(path)


def copy_private(source: Path, target: Path) -> None:
    """Copy the file ``source`` to ``target`` (mode 0600, timestamps kept).

        copy_private(Path("~/Pictures/a.jpg").expanduser(), Path("export/Ada/a.jpg"))
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 20)
        shutil.copystat(source, tmp)
        os.chmod(tmp, FILE_MODE)  # copystat copied the source's mode too
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
