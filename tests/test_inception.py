"""InceptionResnetV1: facenet-pytorch's key names and shapes, unit outputs, strict loading, equal embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_file
from facecluster.align import centre_face, crop_face
from facecluster.embed import standardise
from facecluster.errors import ModelError
from facecluster.models.inception_resnet_v1 import InceptionResnetV1
from reference import load_reference


@pytest.fixture(scope="module")
def model() -> InceptionResnetV1:
    torch.manual_seed(0)
    return InceptionResnetV1().eval()


def test_state_dict_names_and_shapes_equal_facenet_pytorch(model: InceptionResnetV1) -> None:
    reference = load_reference().InceptionResnetV1()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert list(ours) == list(theirs)
    assert ours == theirs
    assert len(ours) == 714


def test_forward_gives_unit_rows_of_the_embedding_size(model: InceptionResnetV1) -> None:
    x = torch.randn(2, 3, 96, 96)  # fully convolutional + global pooling: small inputs keep tests fast
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 512)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    with torch.inference_mode():
        assert torch.equal(out, model(x))  # eval mode: deterministic, no dropout


def test_configurable_embedding_dim_and_classifier() -> None:
    small = InceptionResnetV1(embedding_dim=128, num_classes=7)
    state = small.state_dict()
    assert state["last_linear.weight"].shape == (128, 1792)
    assert state["last_bn.weight"].shape == (128,)
    assert state["logits.weight"].shape == (7, 128)
    assert "logits.weight" not in InceptionResnetV1().state_dict()  # no classifier by default


def test_from_state_dict_infers_shape_and_loads_strictly() -> None:
    torch.manual_seed(1)
    source = InceptionResnetV1(embedding_dim=128, num_classes=5)
    loaded = InceptionResnetV1.from_state_dict(source.state_dict())
    assert loaded.embedding_dim == 128 and loaded.logits is not None
    assert not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_from_state_dict_rejects_other_networks_in_one_line(model: InceptionResnetV1) -> None:
    with pytest.raises(ModelError, match="last_linear"):
        InceptionResnetV1.from_state_dict({"conv.weight": torch.zeros(1)})
    state = dict(model.state_dict())
    state["conv2d_1a.conv.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ModelError) as info:
        InceptionResnetV1.from_state_dict(state)
    assert "\n" not in str(info.value)
    del state["conv2d_1a.conv.weight"]
    with pytest.raises(ModelError, match="does not fit"):
        InceptionResnetV1.from_state_dict(state)


@pytest.mark.reference
def test_random_weights_give_the_same_embeddings_as_facenet_pytorch(model: InceptionResnetV1) -> None:
    reference = load_reference().InceptionResnetV1().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert (model(x) - reference(x)).abs().max() < 1e-5


@pytest.mark.shared
@pytest.mark.reference
def test_casia_embeddings_equal_facenet_pytorch_on_lfw_crops() -> None:
    weights = shared_file("weights", "facenet-casia-webface.pt")
    lfw = shared_file("data", "lfw-dev")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    ours = InceptionResnetV1.from_state_dict(state)
    reference = load_reference().InceptionResnetV1().eval()
    reference.load_state_dict(state)  # the shared file has no logits: the reference built without them
    photos = sorted(lfw.glob("*/*_0001.jpg"))[:3]
    crops = []
    for photo in photos:
        pixels = np.asarray(Image.open(photo).convert("RGB"))
        crops.append(crop_face(pixels, centre_face(pixels.shape[:2]), size=160, margin=32))
    x = torch.from_numpy(standardise(np.stack(crops)).copy())
    with torch.inference_mode():
        a, b = ours(x), reference(x)
    assert (a - b).abs().max().item() < 1e-4
    # Real faces of three different people: clearly apart on the hypersphere.
    d = torch.cdist(a, a) ** 2
    assert d[~torch.eye(len(a), dtype=torch.bool)].min() > 0.5
