"""Trained model files: format, round trip, clear errors, and use through ``embed``'s loader."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from facecluster.errors import ModelError
from facecluster.models.inception_resnet_v1 import InceptionResnetV1
from facecluster.models.model_file import load_model_file, read_model_file, save_model_file


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    loaded, got = load_model_file(path, "cpu")
    assert not loaded.training and loaded.embedding_dim == 16
    assert got["dim"] == 16 and got["sha256"] == sha and got["base"] == "casia-webface:415ef259"
    assert got["history"] == [{"a": 1}]
    x = torch.randn(2, 3, 80, 80)  # small crops: the network is fully convolutional up to its pooling
    with torch.no_grad():
        assert torch.allclose(loaded(x), model_16(x), atol=1e-6)
    assert not list(tmp_path.glob(".model-*"))  # no temporary file left behind


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


def test_embed_loader_accepts_model_files(tmp_path: Path, model_16: InceptionResnetV1) -> None:
    embed = pytest.importorskip("facecluster.embed")
    save_model_file(path := tmp_path / "m.pt", model_16, base="b", meta={})
    embedder = embed.load_embedder(model_path=path, device="cpu")
    assert embedder.model_id.startswith(f"trained:{_sha256(path)[:8]}")
    vectors = embedder.embed(np.zeros((2, 80, 80, 3), np.uint8))
    assert vectors.shape == (2, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
