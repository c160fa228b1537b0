"""Weights resolution: explicit path, env vars, cache, verified download (local server), offline errors."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import shared_file
from facecluster import weights as w
from facecluster.errors import WeightsError
from facecluster.models.inception_resnet_v1 import InceptionResnetV1
from facecluster.paths import cache_dir


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on 127.0.0.1 (no real network)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def publish(monkeypatch: pytest.MonkeyPatch, name: str, url: str, sha256: str | None) -> None:
    spec = w.WEIGHT_FILES[name]
    monkeypatch.setitem(w.WEIGHT_FILES, name, w.WeightFile(spec.filename, url, sha256, spec.aliases))


def test_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"x")
    monkeypatch.setenv("FACECLUSTER_WEIGHTS", str(tmp_path / "other.pt"))
    assert w.resolve_weights("casia-webface", mine) == mine
    with pytest.raises(WeightsError, match="does not exist"):
        w.resolve_weights("casia-webface", tmp_path / "missing.pt")


def test_env_file_then_env_dir_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "emb.pt"
    env_file.write_bytes(b"x")
    monkeypatch.setenv("FACECLUSTER_WEIGHTS", str(env_file))
    assert w.resolve_weights("vggface2") == env_file
    with pytest.raises(WeightsError, match="FACECLUSTER_WEIGHTS"):
        monkeypatch.setenv("FACECLUSTER_WEIGHTS", str(tmp_path / "gone.pt"))
        w.resolve_weights("vggface2")
    monkeypatch.delenv("FACECLUSTER_WEIGHTS")

    folder = tmp_path / "weights"
    (folder / "mtcnn").mkdir(parents=True)
    (folder / "mtcnn" / "onet.pt").write_bytes(b"x")  # the layout of ../shared/weights
    (folder / "20180402-114759-vggface2.pt").write_bytes(b"x")
    monkeypatch.setenv("FACECLUSTER_WEIGHTS_DIR", str(folder))
    assert w.resolve_weights("onet") == folder / "mtcnn" / "onet.pt"
    assert w.resolve_weights("vggface2") == folder / "20180402-114759-vggface2.pt"
    with pytest.raises(WeightsError, match="pnet.pt"):
        w.resolve_weights("pnet")  # not in the folder, not cached, offline


def test_offline_fails_at_once_naming_the_file_and_the_place() -> None:
    with pytest.raises(WeightsError) as info:
        w.resolve_weights("casia-webface")
    message = str(info.value)
    assert "\n" not in message
    assert "20180408-102900-casia-webface.pt" in message
    assert str(cache_dir() / "weights") in message
    with pytest.raises(WeightsError, match="unknown weights"):
        w.resolve_weights("resnet")


def test_the_advice_for_a_missing_file_fits_the_file() -> None:
    """detect has no --weights option: the MTCNN files' hint names only the places it looks."""
    with pytest.raises(WeightsError) as info:
        w.resolve_weights("pnet")
    assert "--weights" not in str(info.value)
    assert str(cache_dir() / "weights" / "pnet.pt") in str(info.value) and "FACECLUSTER_WEIGHTS_DIR" in str(info.value)
    with pytest.raises(WeightsError, match="pass its path with --weights"):
        w.resolve_weights("vggface2")


def test_only_a_cached_file_is_called_corrupt_and_to_be_deleted(tmp_path: Path) -> None:
    """`embed --weights photo.jpg`: the user's own file is never to be deleted; a broken cache entry is."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    for mine in (photo, tmp_path / "empty.pt"):
        mine.touch()
        with pytest.raises(WeightsError) as info:
            w.load_state_dict(mine)
        assert "delete" not in str(info.value) and "download" not in str(info.value) and "corrupt" not in str(info.value)
    cached = cache_dir() / "weights" / w.WEIGHT_FILES["vggface2"].filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04broken zip")
    with pytest.raises(WeightsError, match=r"^cached weights file .* is corrupt \(.*\): delete it and download it again$"):
        w.load_state_dict(cached)
    cached.write_bytes(b"")
    with pytest.raises(WeightsError, match="is empty: delete it and download it again"):
        w.load_state_dict(cached)


def test_download_verifies_sha256_reports_progress_and_caches(served: tuple[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = served
    payload = b"pnet weights" * 1000
    (root / "pnet.pt").write_bytes(payload)
    publish(monkeypatch, "pnet", url + "pnet.pt", hashlib.sha256(payload).hexdigest())
    monkeypatch.delenv("FACECLUSTER_OFFLINE")
    seen: list[tuple[str, int, int | None]] = []
    path = w.resolve_weights("pnet", progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert path == cache_dir() / "weights" / "pnet.pt"
    assert path.read_bytes() == payload
    assert seen[-1] == ("download pnet.pt", len(payload), len(payload))
    assert [p.name for p in path.parent.iterdir()] == ["pnet.pt"]  # no temp file left behind
    # Cached now: a second call needs no server, even offline.
    monkeypatch.setenv("FACECLUSTER_OFFLINE", "1")
    assert w.resolve_weights("pnet") == path


def test_download_with_a_wrong_digest_leaves_nothing(served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = served
    (root / "rnet.pt").write_bytes(b"tampered")
    publish(monkeypatch, "rnet", url + "rnet.pt", "0" * 64)
    monkeypatch.delenv("FACECLUSTER_OFFLINE")
    with pytest.raises(WeightsError, match="not the published rnet.pt"):
        w.resolve_weights("rnet")
    assert not (cache_dir() / "weights").exists() or not any((cache_dir() / "weights").iterdir())


def test_network_failure_is_one_line(served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = served
    publish(monkeypatch, "onet", url + "missing/onet.pt", "0" * 64)  # HTTP 404
    monkeypatch.delenv("FACECLUSTER_OFFLINE")
    with pytest.raises(WeightsError) as info:
        w.resolve_weights("onet")
    assert "cannot download onet.pt" in str(info.value) and "\n" not in str(info.value)


def test_truncated_download_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Short(io.BytesIO):
        headers = {"Content-Length": "100"}

    monkeypatch.setattr(w, "_open_url", lambda url, timeout: Short(b"only ten b"))
    monkeypatch.delenv("FACECLUSTER_OFFLINE")
    with pytest.raises(WeightsError, match="stopped after 10 of 100 bytes"):
        w.resolve_weights("pnet")


def test_embedding_download_is_checked_by_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    torch.save({"conv.weight": torch.zeros(2)}, buffer)
    monkeypatch.setattr(w, "_open_url", lambda url, timeout: io.BytesIO(buffer.getvalue()))
    monkeypatch.delenv("FACECLUSTER_OFFLINE")
    with pytest.raises(WeightsError, match="not an InceptionResnetV1 state dict"):
        w.resolve_weights("vggface2")


def test_structure_check_accepts_facenet_layout_with_logits_and_rejects_other_shapes() -> None:
    with torch.device("meta"):
        state = InceptionResnetV1(num_classes=10575, device="meta").state_dict()
    w.check_embedding_state_dict(state, "x.pt")
    with torch.device("meta"):
        small = InceptionResnetV1(embedding_dim=128, device="meta").state_dict()
    with pytest.raises(WeightsError, match="last_linear.weight"):
        w.check_embedding_state_dict(small, "x.pt")
    with pytest.raises(WeightsError, match="--model"):
        w.check_embedding_state_dict({"format": "facecluster-model"}, "x.pt")


@pytest.mark.shared
def test_casia_file_downloads_and_records_its_digest(served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    source = shared_file("weights", "facenet-casia-webface.pt")
    url, root = served
    (root / "casia.pt").symlink_to(source)
    publish(monkeypatch, "casia-webface", url + "casia.pt", None)
    monkeypatch.delenv("FACECLUSTER_OFFLINE")
    path = w.resolve_weights("casia-webface")
    record = path.with_name(path.name + ".sha256").read_text().strip()
    assert record == "415ef25940068eaff69498479dbb5d839547ec3eaa609a6caa53697b4f52073b"
    # The cached file is checked against its recorded digest on later use.
    path.write_bytes(b"changed")
    with pytest.raises(WeightsError, match="changed since it was verified"):
        w.resolve_weights("casia-webface")


@pytest.mark.parametrize("content", [b"", b"this is text, not a checkpoint", b"PK\x03\x04broken zip"])
def test_load_state_dict_refuses_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        w.load_state_dict(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_load_state_dict_refuses_truncated_and_non_dict_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"a": torch.arange(1000)}, good)
    assert torch.equal(w.load_state_dict(good)["a"], torch.arange(1000))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(WeightsError, match="is not a PyTorch state dict"):  # a file of the user's: not "corrupt"
        w.load_state_dict(cut)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightsError, match="not a state dict"):
        w.load_state_dict(listed)
    with pytest.raises(WeightsError, match="does not exist"):
        w.load_state_dict(tmp_path / "none.pt")


def test_truncated_weights_and_odd_files_are_named_for_what_they_are(tmp_path: Path) -> None:
    # A download or copy cut short: torch's message ("failed finding central directory. This is an internal
    # miniz error. If you are seeing this error, there is a high", cut at 160 characters) said neither.
    good = tmp_path / "good.pt"
    torch.save({"a": torch.arange(1000)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(WeightsError) as info:
        w.load_state_dict(cut)
    assert str(info.value) == f"weights file {cut} is not a PyTorch state dict (truncated or damaged: the end of " \
                              "its zip archive is missing)"
    # A FIFO (or a device) where the weights should be is not "missing", and is never opened (it would block).
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(WeightsError, match=r"fifo.pt is not a regular file$"):
        w.load_state_dict(tmp_path / "fifo.pt")
    with pytest.raises(WeightsError, match=r"fifo.pt is not a regular file$"):
        w.resolve_weights("casia-webface", tmp_path / "fifo.pt")


def test_torch_load_says_why_in_one_short_line(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    with pytest.raises(WeightsError, match=r"\(not a PyTorch file \(it does not start like one\)\)"):
        w.load_state_dict(photo)
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), whole)  # the whole module pickled, not its state_dict()
    with pytest.raises(ValueError, match=r"pickled Python object \(torch.nn.modules.linear.Linear\).*state_dict"):
        w.torch_load(whole)
    for path in (photo, whole):
        with pytest.raises(ValueError) as info:
            w.torch_load(path)
        assert "\n" not in str(info.value) and len(str(info.value)) < 200 and "weights_only" not in str(info.value)


def test_a_cached_file_is_hashed_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.embed import embedder_source

    calls: list[Path] = []
    real = w.file_sha256
    monkeypatch.setattr(w, "file_sha256", lambda path: calls.append(Path(path)) or real(path))
    target = cache_dir() / "weights" / w.WEIGHT_FILES["casia-webface"].filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights, as far as this test is concerned")
    target.with_name(target.name + ".sha256").write_text(hashlib.sha256(target.read_bytes()).hexdigest())
    # Resolving checks the recorded digest; naming the model reuses that hash instead of reading again.
    source = embedder_source(Path("casia-webface"))
    assert source.path == target and len(calls) == 1
    assert source.base_id.endswith(":" + hashlib.sha256(target.read_bytes()).hexdigest()[:8])
    target.write_bytes(b"replaced by other weights")  # another size: hashed again, and the change is caught
    with pytest.raises(WeightsError, match="changed since it was verified"):
        w.resolve_weights("casia-webface")
    assert len(calls) == 2


def test_a_mistyped_weights_name_lists_the_names(tmp_path: Path) -> None:
    from facecluster.weights import resolve_weights

    with pytest.raises(WeightsError, match=r"casia-webfase does not exist \(weights names: casia-webface, vggface2\)"):
        resolve_weights("casia-webface", Path("casia-webfase"))
    with pytest.raises(WeightsError, match=r"does not exist$"):  # a path is a path
        resolve_weights("casia-webface", tmp_path / "w.pt")


@pytest.mark.parametrize("command", [["cluster"], ["embed"]])
def test_a_missing_weights_file_stops_before_any_catalog_is_made(tmp_path: Path, command: list[str]) -> None:
    from click.testing import CliRunner

    from facecluster.cli import cli

    db = tmp_path / "new" / "catalog.db"
    result = CliRunner().invoke(cli, ["--db", str(db), *command, "--weights", str(tmp_path / "w.pt")])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert not db.exists() and not db.parent.exists()  # nothing made, no failed run recorded
