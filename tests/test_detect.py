"""facecluster.detect: the Detector interface with random-weight nets, loading weights, and (with ../shared)
agreement with facenet-pytorch's MTCNN on real LFW photos plus an EXIF-rotated copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_file
from facecluster.config import DetectConfig
from facecluster.detect import DetectedFace, Detector, MTCNNDetector
from facecluster.errors import ModelError, WeightsError
from facecluster.images import load_image
from facecluster.models.mtcnn import ONet, PNet, RNet
from reference import load_reference

LOOSE = DetectConfig(min_face_size=12, thresholds=(0.5, 0.5, 0.5))


def _random_detector(config: DetectConfig = LOOSE) -> MTCNNDetector:
    torch.manual_seed(0)
    nets = (PNet(), RNet(), ONet())
    for net in nets:
        for param in net.parameters():
            with torch.no_grad():
                param.normal_(0, 0.1)  # varied scores: this seed finds boxes on the noise images below
    return MTCNNDetector(*nets, config=config)


def test_detector_returns_detected_faces_best_first() -> None:
    detector: Detector = _random_detector()
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)]
    results = detector.detect(images)
    assert isinstance(results, list) and len(results) == 2
    assert sum(map(len, results)) > 0
    for faces in results:
        assert [f.probability for f in faces] == sorted((f.probability for f in faces), reverse=True)
        for face in faces:
            assert isinstance(face, DetectedFace)
            assert len(face.box) == 4 and all(isinstance(v, float) for v in face.box)
            assert len(face.landmarks) == 5 and all(len(p) == 2 for p in face.landmarks)
            assert 0.0 <= face.probability <= 1.0


def test_detector_empty_and_tiny_inputs_and_bad_arrays() -> None:
    detector = _random_detector()
    assert detector.detect([]) == []
    assert detector.detect([np.zeros((5, 5, 3), np.uint8)]) == [[]]
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect([np.zeros((20, 20), np.uint8)])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect([np.zeros((20, 20, 3), np.float32)])


def test_detected_face_scaled_to_full_size() -> None:
    face = DetectedFace(box=(10.0, 20.0, 30.0, 40.0), landmarks=((4.0, 8.0),) * 5, probability=0.9)
    full = face.scaled(0.5)
    assert full.box == (20.0, 40.0, 60.0, 80.0) and full.landmarks[0] == (8.0, 16.0) and full.probability == 0.9


def test_from_weights_round_trip_and_clear_errors(tmp_path: Path) -> None:
    nets = _random_detector()
    paths = []
    for name, net in zip(("pnet", "rnet", "onet"), (nets.pnet, nets.rnet, nets.onet), strict=True):
        paths.append(tmp_path / f"{name}.pt")
        torch.save(net.state_dict(), paths[-1])
    loaded = MTCNNDetector.from_weights(*paths, config=LOOSE)
    image = np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    assert loaded.detect([image]) == nets.detect([image])
    with pytest.raises(WeightsError, match="not a facenet-pytorch PNet"):
        MTCNNDetector.from_weights(paths[1], paths[1], paths[2])
    with pytest.raises(WeightsError, match="does not exist"):
        MTCNNDetector.from_weights(tmp_path / "missing.pt", paths[1], paths[2])
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch state dict"):  # the user's file: not called corrupt
        MTCNNDetector.from_weights(tmp_path / "junk.pt", paths[1], paths[2])


def test_pretrained_resolves_through_weights_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facecluster.weights as weights

    files = {}
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        files[name] = tmp_path / f"{name}.pt"
        torch.save(net.state_dict(), files[name])
    asked: list[str] = []

    def fake_resolve(name: str, path: Path | None = None, progress: object = None) -> Path:
        asked.append(name)
        return files[name]

    monkeypatch.setattr(weights, "resolve_weights", fake_resolve)
    detector = MTCNNDetector.pretrained(device="cpu")
    assert asked == ["pnet", "rnet", "onet"] and detector.device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="cannot use device"):
        MTCNNDetector(PNet(), RNet(), ONet(), device="cuda")


# -- with the shared weights and LFW photos ------------------------------------------------------------


def _shared_detector() -> MTCNNDetector:
    folder = shared_file("weights", "mtcnn")
    return MTCNNDetector.from_weights(folder / "pnet.pt", folder / "rnet.pt", folder / "onet.pt")


def _lfw_photos(count: int) -> list[Path]:
    root = shared_file("data", "lfw-dev")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    step = max(1, len(people) // count)
    return [sorted(person.glob("*.jpg"))[0] for person in people[::step][:count]]


@pytest.mark.shared
@pytest.mark.reference
def test_matches_facenet_pytorch_on_lfw_photos() -> None:
    ref = load_reference().MTCNN(keep_all=True, device="cpu")
    detector = _shared_detector()
    paths = _lfw_photos(24)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    ours = detector.detect(images)  # one batched call, as the pipeline makes it
    # facenet-pytorch batches photos of equal size (LFW: all 250×250), which keeps this test short.
    reference = zip(*ref.detect([Image.fromarray(image) for image in images], landmarks=True), strict=True)
    compared = 0
    for path, faces, (boxes, probs, points) in zip(paths, ours, reference, strict=True):
        if boxes is None:
            assert faces == [], path
            continue
        boxes, probs, points = (np.asarray(a, dtype=np.float64) for a in (boxes, probs, points))
        assert len(faces) == len(boxes), path
        # facenet-pytorch orders by area (select_largest); ours by probability: match by box.
        for face in faces:
            k = int(np.argmin(np.abs(boxes - np.array(face.box)).sum(1)))
            np.testing.assert_allclose(face.box, boxes[k], atol=1.0, rtol=0)
            np.testing.assert_allclose(face.landmarks, points[k], atol=1.0, rtol=0)
            assert abs(face.probability - float(probs[k])) < 1e-4
            compared += 1
    assert compared >= 20


@pytest.mark.shared
def test_exif_rotated_copy_is_detected_upright(tmp_path: Path) -> None:
    detector = _shared_detector()
    path = _lfw_photos(1)[0]
    upright = load_image(path)
    # What a camera held sideways writes: pixels turned 90° and orientation 6 ("rotate 90° CW to view").
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "sideways.jpg"
    Image.open(path).transpose(Image.Transpose.ROTATE_90).save(rotated, quality=95, exif=exif.tobytes())
    loaded = load_image(rotated)
    assert loaded.orientation == 6 and loaded.pixels.shape == upright.pixels.shape
    [[expected, *_]] = detector.detect([upright.pixels])
    [[found, *_]] = detector.detect([loaded.pixels])
    np.testing.assert_allclose(found.box, expected.box, atol=4.0)  # JPEG re-encoding moves it a little
    left_eye, right_eye = found.landmarks[0], found.landmarks[1]
    assert left_eye[0] < right_eye[0] and abs(left_eye[1] - right_eye[1]) < 10  # eyes level: upright
