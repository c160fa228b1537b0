"""Trained model files: format, round trip, clear errors, and use through ``embed``'s loader."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from facecluster.errors import ModelError
from facecluster.models.inception_resnet_v1 import InceptionResnetV1
from facecluster.models.model_file import load_model_file, read_model_file, save_model_file, state_sha256


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip_byte_in_tensor(path: Path, tensor: torch.Tensor, byte: int, mask: int) -> None:
    """XOR ``mask`` into byte ``byte`` of ``tensor``'s data record in the file at ``path``, found by its raw bytes."""
    blob = bytearray(path.read_bytes())
    raw = tensor.detach().numpy().tobytes()
    at = blob.find(raw)
    assert at > 0 and blob.find(raw, at + 1) == -1  # stored uncompressed, once
    blob[at + byte] ^= mask
    path.write_bytes(bytes(blob))


@pytest.fixture(scope="module")
def model_16() -> InceptionResnetV1:
    torch.manual_seed(0)
    return InceptionResnetV1(embedding_dim=16).eval()


def test_round_trip_same_outputs_and_meta(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    path = tmp_path / "m.pt"
    meta = {"epochs": np.int64(3), "loss": np.float32(0.25), "torch": torch.__version__, "history": [{"a": 1}]}
    sha = save_model_file(path, model_16, base="casia-webface:415ef259", meta=meta)
    assert sha == _sha256(path)
    raw = torch.load(path, weights_only=True)  # only plain types and tensors inside
    assert (raw["format"], raw["version"], raw["dim"], raw["base"]) == ("facecluster-model", 1, 16, "casia-webface:415ef259")
    assert type(raw["meta"]["epochs"]) is int and type(raw["meta"]["torch"]) is str
    assert len(raw["state_sha256"]) == 64  # the digest of the weights, checked on load
    loaded, got = load_model_file(path, "cpu")
    assert not loaded.training and loaded.embedding_dim == 16
    assert got["dim"] == 16 and got["sha256"] == sha and got["base"] == "casia-webface:415ef259"
    assert got["history"] == [{"a": 1}]
    x = torch.randn(2, 3, 80, 80)  # small crops: the network is fully convolutional up to its pooling
    with torch.no_grad():
        assert torch.allclose(loaded(x), model_16(x), atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # derived from a user's faces: owner-only


def test_the_same_model_saved_twice_is_the_same_file(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    # A model written again from its run folder (train --resume) must keep its model id (the file's sha256),
    # or the catalog would embed every face again; torch.save used to name the zip's records after the
    # random temporary file.
    first = save_model_file(tmp_path / "a.pt", model_16, base="b", meta={"epochs": 1})
    second = save_model_file(tmp_path / "sub" / "other-name.pt", model_16, base="b", meta={"epochs": 1})
    assert first == second
    assert first != save_model_file(tmp_path / "c.pt", model_16, base="b", meta={"epochs": 2})


def test_bad_files_give_one_line_model_errors(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    cases = {}
    cases["missing"] = tmp_path / "nope.pt"
    (garbage := tmp_path / "garbage.pt").write_bytes(b"not a torch file at all")
    cases["garbage"] = garbage
    torch.save(model_16.state_dict(), plain := tmp_path / "plain.pt")  # pretrained-style state dict
    cases["plain"] = plain
    small = {"format": "facecluster-model", "version": 1, "dim": 16, "base": "b", "meta": {},
             "state_dict": {"last_linear.weight": torch.zeros(16, 1792)}}
    torch.save({**small, "dim": 128}, lying := tmp_path / "lying.pt")  # declared dim != layer
    cases["lying"] = lying
    torch.save({**small, "version": 99}, future := tmp_path / "future.pt")
    cases["future"] = future
    state = dict(model_16.state_dict())
    state["last_bn.weight"] = torch.ones(7)  # wrong shape inside the network
    torch.save({**small, "state_dict": state}, shape := tmp_path / "shape.pt")
    cases["shape"] = shape
    for name, path in cases.items():
        with pytest.raises(ModelError) as info:
            load_model_file(path, "cpu")
        assert "\n" not in str(info.value), name
    with pytest.raises(ModelError, match="not a facecluster model file"):
        read_model_file(plain)
    with pytest.raises(ModelError, match="cannot be stored"):
        save_model_file(tmp_path / "x.pt", model_16, base="b", meta={"f": object()})


@pytest.mark.parametrize("byte, mask", [(4 * 100, 0x01), (4 * 100 + 3, 0x40)])  # a mantissa bit, an exponent bit
def test_a_flipped_bit_in_a_weight_is_refused_as_damaged(tmp_path: Path, model_16: InceptionResnetV1,
                                                         byte: int, mask: int) -> None:
    # torch.load does not check the zip's CRCs: these files loaded, with one weight off by 1e-9 or by 1e36.
    save_model_file(path := tmp_path / "m.pt", model_16, base="b", meta={})
    good = path.read_bytes()
    _flip_byte_in_tensor(path, model_16.last_linear.weight, byte, mask)
    with pytest.raises(ModelError) as info:
        load_model_file(path, "cpu")
    assert str(info.value) == (
        f"{path} is damaged: its weights do not match the checksum written with them (bits changed on disk or in a "
        "copy); write it again with the same `facecluster train` command plus --resume --run-dir DIR (its run "
        "folder), or train again")
    assert "\n" not in str(info.value)
    path.write_bytes(good)  # that byte alone made the difference
    load_model_file(path, "cpu")


def test_the_checksum_covers_names_shapes_and_types_not_the_order(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    state = {"a": torch.arange(6, dtype=torch.float32), "b": torch.tensor([1, 2], dtype=torch.int64)}
    digest = state_sha256(state)
    assert state_sha256({"b": state["b"], "a": state["a"]}) == digest
    assert state_sha256({**state, "a": state["a"].reshape(2, 3)}) != digest
    assert state_sha256({**state, "a": state["a"].view(torch.int32)}) != digest  # same bytes, another dtype
    assert state_sha256({"c": state["a"], "b": state["b"]}) != digest
    assert state_sha256({**state, "a": state["a"].reshape(3, 2).t()}) == state_sha256(
        {**state, "a": state["a"].reshape(3, 2).t().contiguous()})  # the values, not the memory layout
    # Saved, loaded and saved again: the file's sha256 may change, the weights' digest does not.
    save_model_file(first := tmp_path / "first.pt", model_16, base="b", meta={})
    model, _ = load_model_file(first, "cpu")
    save_model_file(second := tmp_path / "second.pt", model, base="b", meta={})
    load_model_file(second, "cpu")
    assert torch.load(second, weights_only=True)["state_sha256"] == torch.load(first, weights_only=True)["state_sha256"]


def test_a_file_written_before_the_checksum_still_loads(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    save_model_file(path := tmp_path / "m.pt", model_16, base="b", meta={"epochs": 1})
    payload = torch.load(path, weights_only=True)
    del payload["state_sha256"]  # what facecluster wrote before the key existed
    torch.save(payload, old := tmp_path / "old.pt")
    loaded, meta = load_model_file(old, "cpu")
    assert meta["epochs"] == 1
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model_16(x), atol=1e-6)
    torch.save({**payload, "state_sha256": None}, odd := tmp_path / "odd.pt")  # a key, but no digest in it
    with pytest.raises(ModelError, match="is damaged: its weights do not match"):
        load_model_file(odd, "cpu")


def test_non_finite_weights_are_never_written_nor_loaded(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    broken = InceptionResnetV1(embedding_dim=16).eval()
    broken.load_state_dict(model_16.state_dict())
    with torch.no_grad():
        broken.last_bn.weight[3] = float("nan")
        broken.conv2d_1a.conv.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(ModelError, match=r"not writing .*2 of \d+ tensors hold NaN or infinite values"):
        save_model_file(tmp_path / "x.pt", broken, base="b", meta={})
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    # A file written by an older facecluster after a diverged run: refused on load, in one line.
    state = {k: v.clone() for k, v in broken.state_dict().items()}
    torch.save({"format": "facecluster-model", "version": 1, "dim": 16, "base": "b", "meta": {}, "state_dict": state},
               old := tmp_path / "old.pt")
    with pytest.raises(ModelError, match="NaN or infinite weights .*lower --lr") as info:
        load_model_file(old, "cpu")
    assert "\n" not in str(info.value)
    # A weight made infinite by damage to a file that carries a checksum: damaged, not diverged.
    good = {k: v.clone() for k, v in model_16.state_dict().items()}
    torch.save({"format": "facecluster-model", "version": 1, "dim": 16, "base": "b", "meta": {}, "state_dict": state,
                "state_sha256": state_sha256(good)}, hit := tmp_path / "hit.pt")
    with pytest.raises(ModelError, match="is damaged: its weights do not match the checksum"):
        load_model_file(hit, "cpu")


def test_embed_loader_accepts_model_files(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    embed = pytest.importorskip("facecluster.embed")
    save_model_file(path := tmp_path / "m.pt", model_16, base="b", meta={})
    embedder = embed.load_embedder(model_path=path, device="cpu")
    assert embedder.model_id.startswith(f"trained:{_sha256(path)[:8]}")
    vectors = embedder.embed(np.zeros((2, 80, 80, 3), np.uint8))
    assert vectors.shape == (2, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
