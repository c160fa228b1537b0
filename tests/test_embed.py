"""FaceNetEmbedder and load_embedder: shapes, unit rows, batching, flip symmetry, model ids, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facecluster.config import EmbedConfig
from facecluster.embed import (
    FaceNetEmbedder,
    check_device,
    load_embedder,
    model_id_for,
    open_embedder,
    standardise,
)
from facecluster.errors import ImageError, ModelError, WeightsError
from facecluster.models.inception_resnet_v1 import InceptionResnetV1

SMALL = EmbedConfig(crop_size=96, batch_size=2, flip=False)  # small crops keep the CPU tests fast


@pytest.fixture(scope="module")
def network() -> InceptionResnetV1:
    torch.manual_seed(0)
    return InceptionResnetV1().eval()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory, network: InceptionResnetV1) -> Path:
    path = tmp_path_factory.mktemp("w") / "my-casia-webface.pt"
    torch.save(network.state_dict(), path)
    return path


def crops(n: int, size: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_naming_pretrained_weights_does_not_import_torch(weights_file: Path) -> None:
    # A re-run over an unchanged library only names the model (a hash of the file): importing torch
    # would add about 2 s to a run that has nothing to do.
    import subprocess
    import sys

    child = (
        "import sys; from facecluster.embed import open_embedder; "
        f"print(open_embedder(weights={str(weights_file)!r}).model_id, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    model_id, imported = done.stdout.split()
    assert model_id.startswith("casia-webface:") and imported == "False"


def test_a_model_giving_non_finite_vectors_is_refused(network: InceptionResnetV1) -> None:
    broken = InceptionResnetV1().eval()
    broken.load_state_dict(network.state_dict())
    with torch.no_grad():
        broken.last_linear.weight[0, 0] = float("inf")  # inf * feature -> inf/NaN after normalisation
    for flip in (False, True):
        embedder = FaceNetEmbedder(broken, "trained:deadbeef", EmbedConfig(crop_size=96, batch_size=2, flip=flip))
        with pytest.raises(ModelError, match="trained:deadbeef.* NaN or infinite embeddings, so none were stored"):
            embedder.embed(crops(3))


def test_standardisation_is_fixed() -> None:
    x = standardise(np.array([[[[0, 127, 255]]]], np.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert np.allclose(x.ravel(), [-127.5 / 128, -0.5 / 128, 127.5 / 128])


def test_embed_gives_unit_float32_rows_and_handles_empty(network: InceptionResnetV1) -> None:
    embedder = FaceNetEmbedder(network, "random:00000000", SMALL)
    out = embedder.embed(crops(3))
    assert out.shape == (3, 512) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert embedder.embed(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0, 512)


def test_batching_does_not_change_vectors(network: InceptionResnetV1) -> None:
    x = crops(3, seed=1)
    one = FaceNetEmbedder(network, "r", EmbedConfig(crop_size=96, batch_size=1, flip=False)).embed(x)
    all_at_once = FaceNetEmbedder(network, "r", EmbedConfig(crop_size=96, batch_size=8, flip=False)).embed(x)
    assert np.abs(one - all_at_once).max() < 1e-4


def test_embed_runs_full_batches_then_power_of_two_pieces(network: InceptionResnetV1,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = FaceNetEmbedder(network, "r", EmbedConfig(crop_size=96, batch_size=4, flip=True))
    seen: list[int] = []
    forward = embedder._forward
    monkeypatch.setattr(embedder, "_forward", lambda batch: seen.append(len(batch)) or forward(batch))
    x = crops(11, seed=3)
    out = embedder.embed(x)
    assert seen == [4, 4, 2, 1]  # few distinct shapes whatever the count
    alone = FaceNetEmbedder(network, "r", EmbedConfig(crop_size=96, batch_size=16, flip=True)).embed(x)
    assert np.abs(out - alone).max() < 1e-4


def test_flip_averaging_makes_a_crop_and_its_mirror_equal(network: InceptionResnetV1) -> None:
    x = crops(1, seed=2)
    mirrored = x[:, :, ::-1].copy()
    flip = FaceNetEmbedder(network, "r", EmbedConfig(crop_size=96, flip=True))
    assert np.abs(flip.embed(x) - flip.embed(mirrored)).max() < 1e-6
    plain = FaceNetEmbedder(network, "r", SMALL)
    assert np.abs(plain.embed(x) - plain.embed(mirrored)).max() > 1e-4


def test_raw_features_are_what_embed_averages_and_normalises(network: InceptionResnetV1) -> None:
    x = crops(3, seed=5)
    flip = FaceNetEmbedder(network, "r", EmbedConfig(crop_size=96, flip=True))
    raw = flip.raw_features(x, mirror=True)
    assert raw.shape == (6, 512) and raw.dtype == np.float32
    summed = raw[:3] + raw[3:]
    np.testing.assert_allclose(summed / np.linalg.norm(summed, axis=1, keepdims=True), flip.embed(x), atol=1e-5)
    mirrored = FaceNetEmbedder(network, "r", SMALL).raw_features(x[:, :, ::-1].copy())
    np.testing.assert_allclose(raw[3:], mirrored, atol=1e-4)  # the second half is the mirrors'


def test_other_crop_sizes_are_resized(network: InceptionResnetV1) -> None:
    embedder = FaceNetEmbedder(network, "r", SMALL)
    assert embedder.embed(crops(1, size=120)).shape == (1, 512)


@pytest.mark.parametrize("bad", [np.zeros((2, 96, 96), np.uint8), np.zeros((1, 96, 96, 3), np.float32),
                                 np.zeros((1, 96, 96, 4), np.uint8)])
def test_bad_crops_raise_image_error(network: InceptionResnetV1, bad: np.ndarray) -> None:
    with pytest.raises(ImageError):
        FaceNetEmbedder(network, "r", SMALL).embed(bad)


def test_model_id_names_weights_and_preprocessing() -> None:
    assert model_id_for("casia-webface:415ef259", EmbedConfig(flip=True)) == "casia-webface:415ef259+flip"
    assert model_id_for("casia-webface:415ef259", EmbedConfig(flip=False)) == "casia-webface:415ef259"
    assert model_id_for("x:1", EmbedConfig(flip=False, margin=14, align=True)) == "x:1+crop160m14+align"


def test_load_embedder_from_weights_file(weights_file: Path, network: InceptionResnetV1) -> None:
    import hashlib

    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    embedder = load_embedder(weights=weights_file, config=SMALL)
    # name from the file name, digest prefix, then the non-default crop
    assert embedder.model_id == f"casia-webface:{digest[:8]}+crop96m32"
    assert embedder.dim == 512
    x = crops(2, seed=3)
    assert np.abs(embedder.embed(x) - FaceNetEmbedder(network, "r", SMALL).embed(x)).max() < 1e-5


def test_load_embedder_from_a_trained_model_file(tmp_path: Path) -> None:
    from facecluster.models.model_file import save_model_file

    torch.manual_seed(5)
    small = InceptionResnetV1(embedding_dim=128)
    sha = save_model_file(tmp_path / "me.pt", small, base="casia-webface:415ef259", meta={"epochs": 1})
    embedder = load_embedder(model_path=tmp_path / "me.pt", config=SMALL)
    assert embedder.model_id == f"trained:{sha[:8]}+crop96m32"
    assert embedder.embed(crops(1)).shape == (1, 128)


def test_load_embedder_errors_are_one_line(tmp_path: Path, weights_file: Path) -> None:
    with pytest.raises(WeightsError, match="20180402-114759-vggface2.pt"):
        load_embedder()  # default vggface2: not cached, offline in tests
    with pytest.raises(ModelError, match="not both"):
        load_embedder(weights=weights_file, model_path=weights_file)
    wrong = tmp_path / "wrong.pt"
    torch.save({"last_linear.weight": torch.zeros(512, 1792)}, wrong)
    with pytest.raises(ModelError, match="does not fit"):
        load_embedder(weights=wrong)
    with pytest.raises(ModelError, match="not a facecluster model file"):
        load_embedder(model_path=weights_file)


def test_open_embedder_names_without_loading_and_loads_once_on_use(
        tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster import embed as embed_module
    from facecluster.models.model_file import save_model_file

    eager = load_embedder(weights=weights_file, config=SMALL)
    builds: list[object] = []
    build = embed_module.build_embedder
    monkeypatch.setattr(embed_module, "build_embedder", lambda *a, **k: builds.append(a) or build(*a, **k))
    lazy = open_embedder(weights=weights_file, config=SMALL)
    assert lazy.model_id == eager.model_id and not lazy.loaded and builds == []  # named from a hash only
    x = crops(2, seed=4)
    assert np.abs(lazy.embed(x) - eager.embed(x)).max() < 1e-5
    assert lazy.dim == 512 and lazy.loaded and len(builds) == 1
    torch.manual_seed(6)
    sha = save_model_file(tmp_path / "t.pt", InceptionResnetV1(embedding_dim=64), base="b", meta={})
    trained = open_embedder(model_path=tmp_path / "t.pt", config=SMALL)
    assert trained.model_id == load_embedder(model_path=tmp_path / "t.pt", config=SMALL).model_id
    assert trained.model_id == f"trained:{sha[:8]}+crop96m32" and trained.dim == 64
    with pytest.raises(ModelError, match="missing.pt does not exist"):
        open_embedder(model_path=tmp_path / "missing.pt")
    os.mkfifo(tmp_path / "fifo.pt")  # not "missing", and never opened (a read would block)
    with pytest.raises(ModelError, match="fifo.pt is not a regular file"):
        open_embedder(model_path=tmp_path / "fifo.pt")
    with pytest.raises(ModelError, match="is a folder, not a file"):
        open_embedder(model_path=tmp_path)
    with pytest.raises(ModelError, match="not both"):
        open_embedder(weights=weights_file, model_path=weights_file)
    lazy_wrong = open_embedder(model_path=weights_file)  # plain weights given as --model: found out on load
    with pytest.raises(ModelError, match="not a facecluster model file"):
        lazy_wrong.embed(x)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_model_error(weights_file: Path) -> None:
    with pytest.raises(ModelError, match="no CUDA GPU"):
        load_embedder(weights=weights_file, device="cuda")
    with pytest.raises(ModelError, match="unknown device"):
        check_device("tpu:0:1")


def test_fused_inference_model_equals_the_original() -> None:
    """Folding BatchNorm into the convs changes nothing but rounding (random weights, random BN stats)."""
    import torch

    from facecluster.models.inception_resnet_v1 import InceptionResnetV1, fuse_for_inference

    torch.manual_seed(0)
    model = InceptionResnetV1(embedding_dim=64)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        expected = model(x)
        got = fuse_for_inference(model)(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_precision_choices_agree_and_bad_precision_is_one_line() -> None:
    import numpy as np
    import pytest
    import torch

    from facecluster.config import EmbedConfig
    from facecluster.embed import FaceNetEmbedder, resolve_precision
    from facecluster.errors import ModelError
    from facecluster.models.inception_resnet_v1 import InceptionResnetV1

    torch.manual_seed(1)
    model = InceptionResnetV1(embedding_dim=32).eval()
    crops = np.random.default_rng(0).integers(0, 256, (3, 160, 160, 3), dtype=np.uint8)
    exact = FaceNetEmbedder(model, "random:0", EmbedConfig(precision="float32")).embed(crops)
    half = FaceNetEmbedder(model, "random:0", EmbedConfig(precision="bfloat16")).embed(crops)
    assert half.dtype == np.float32 and np.allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    assert ((exact - half) ** 2).sum(axis=1).max() < 0.02  # bf16 rounding only, far below any threshold
    assert resolve_precision("auto", "cpu") in ("float32", "bfloat16")
    with pytest.raises(ModelError, match="unknown precision"):
        resolve_precision("fp8", "cpu")
