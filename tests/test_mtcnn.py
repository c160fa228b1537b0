"""facecluster.models.mtcnn without weights: network shapes, state-dict compatibility with facenet-pytorch, NMS
against brute force, resampling against ``interpolate(mode="area")``, batched detection equal to one-by-one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from facecluster.models.mtcnn import (
    CascadeSettings,
    ONet,
    PNet,
    RNet,
    _nms_sequential,
    _Photos,
    box_overlap,
    detect_faces,
    integral_image,
    nms,
    pyramid_scales,
)
from reference import load_reference


def _random_nets(seed: int = 0) -> tuple[PNet, RNet, ONet]:
    torch.manual_seed(seed)
    nets = (PNet(), RNet(), ONet())
    for net in nets:
        for name, param in net.named_parameters():
            # Weights of this size give varied scores, so every stage has candidates (seed 0: 30 faces).
            with torch.no_grad():
                param.normal_(0, 0.1)
    return nets


def test_random_weight_nets_output_shapes() -> None:
    pnet, rnet, onet = PNet(), RNet(), ONet()
    with torch.inference_mode():
        reg, prob = pnet(torch.zeros(2, 3, 30, 40))
        assert reg.shape == (2, 4, 10, 15) and prob.shape == (2, 2, 10, 15)
        assert torch.allclose(prob.sum(1), torch.ones(2, 10, 15))
        reg, prob = rnet(torch.zeros(5, 3, 24, 24))
        assert reg.shape == (5, 4) and prob.shape == (5, 2)
        reg, marks, prob = onet(torch.zeros(5, 3, 48, 48))
        assert reg.shape == (5, 4) and marks.shape == (5, 10) and prob.shape == (5, 2)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["PNet", "RNet", "ONet"])
def test_state_dicts_match_facenet_pytorch_and_outputs_agree(name: str) -> None:
    ref_cls = getattr(load_reference(), name)
    ours_cls = {"PNet": PNet, "RNet": RNet, "ONet": ONet}[name]
    torch.manual_seed(1)
    ref = ref_cls(pretrained=False).eval()
    ours = ours_cls()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict(), strict=True)
    size = {"PNet": 37, "RNet": 24, "ONet": 48}[name]
    x = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        for a, b in zip(ours(x), ref(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _brute_force_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray, mode: str,
                     plus_one: bool) -> list[int]:
    # The textbook definition, one box at a time, in float64.
    one = 1.0 if plus_one else 0.0
    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: (-scores[k], k)):
        ok = True
        for j in kept:
            if groups[i] != groups[j]:
                continue
            iw = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + one)
            ih = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + one)
            ai = (boxes[i, 2] - boxes[i, 0] + one) * (boxes[i, 3] - boxes[i, 1] + one)
            aj = (boxes[j, 2] - boxes[j, 0] + one) * (boxes[j, 3] - boxes[j, 1] + one)
            inter = iw * ih
            overlap = inter / min(ai, aj) if mode == "min" else inter / (ai + aj - inter)
            if overlap > threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


@pytest.mark.parametrize(("mode", "plus_one"), [("union", False), ("min", True), ("union", True)])
def test_nms_equals_brute_force(mode: str, plus_one: bool) -> None:
    rng = np.random.default_rng(0)
    for trial in range(25):
        n = int(rng.integers(1, 50))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], 1).round(1)  # rounding makes exact ties
        scores = rng.permutation(n).astype(np.float64) / n  # distinct scores: the order is well defined
        groups = rng.integers(0, 3, n)
        threshold = float(rng.choice([0.3, 0.5, 0.7]))
        expected = _brute_force_nms(boxes, scores, threshold, groups, mode, plus_one)
        got = nms(torch.tensor(boxes), torch.tensor(scores), threshold, torch.tensor(groups), mode, plus_one)  # type: ignore[arg-type]
        assert got.tolist() == expected, trial
        single = nms(torch.tensor(boxes), torch.tensor(scores), threshold, None, mode, plus_one)  # type: ignore[arg-type]
        assert single.tolist() == _brute_force_nms(boxes, scores, threshold, np.zeros(n), mode, plus_one), trial
        seq = _nms_sequential(torch.tensor(boxes), torch.tensor(scores), threshold, torch.tensor(groups), mode, plus_one)  # type: ignore[arg-type]
        assert seq.tolist() == expected, trial


def test_nms_edge_cases() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]
    same = torch.tensor([[0.0, 0, 10, 10]] * 3)
    assert nms(same, torch.tensor([0.1, 0.9, 0.5]), 0.5).tolist() == [1]
    assert nms(same, torch.tensor([0.1, 0.9, 0.5]), 0.5, groups=torch.tensor([0, 1, 2])).tolist() == [1, 2, 0]
    torch.testing.assert_close(box_overlap(same[:1], torch.tensor([[5.0, 0, 15, 10]])), torch.tensor([[1 / 3]]))


def test_integral_image_and_resampling_equal_interpolate_area() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
              rng.integers(0, 256, (20, 31, 3), dtype=np.uint8)]
    table = integral_image(images[2])
    assert table.shape == (21, 32, 4)
    np.testing.assert_array_equal(table[1:, 1:, :3], images[2].astype(np.int64).cumsum(0).cumsum(1))
    assert not table[0].any() and not table[:, 0].any() and not table[..., 3].any()
    photos = _Photos(images, torch.device("cpu"))
    as_tensor = torch.from_numpy(np.stack(images[:2])).permute(0, 3, 1, 2).float()
    for out in [(27, 38), (12, 12), (37, 53), (50, 70)]:  # down, far down, same size, up
        torch.testing.assert_close(photos.level([0, 1], *out), interpolate(as_tensor, size=out, mode="area"))
    # Crops: facenet-pytorch's pad (1-based start clipped to 1, end to the photo) then area resampling.
    boxes = torch.tensor([[3.7, 2.2, 30.9, 25.0], [-5.0, -3.0, 12.0, 40.0], [10.0, 5.0, 11.5, 7.0], [60.0, 0, 70, 9]])
    photo = torch.tensor([0, 1, 2, 2])
    crops, ok = photos.crops(photo, boxes, 24)
    assert ok.tolist() == [True, True, True, False]  # the last box lies outside its 31-px-wide photo
    for crop, (x1, y1, x2, y2), p in zip(crops, [(3, 2, 30, 25), (1, 1, 12, 37), (10, 5, 11, 7)], photo.tolist(), strict=False):
        pixels = torch.from_numpy(images[p][y1 - 1 : y2, x1 - 1 : x2]).permute(2, 0, 1)[None].float()
        expected = (interpolate(pixels, size=(24, 24), mode="area")[0] - 127.5) * 0.0078125
        torch.testing.assert_close(crop, expected)


def test_pyramid_scales_follow_min_face_size_and_factor() -> None:
    scales = pyramid_scales(250, 250, 20, 0.709)
    assert scales[0] == pytest.approx(0.6) and scales[1] == pytest.approx(0.6 * 0.709)
    assert 250 * scales[-1] >= 12 > 250 * scales[-1] * 0.709
    assert pyramid_scales(10, 500, 20, 0.709) == []  # too thin for a 20-px face


def test_detect_faces_batched_equals_one_by_one() -> None:
    pnet, rnet, onet = _random_nets()
    settings = CascadeSettings(min_face_size=12, thresholds=(0.5, 0.5, 0.5))
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 56, 3), (64, 48, 3), (40, 56, 3), (30, 30, 3)]]
    batched = detect_faces(images, pnet, rnet, onet, settings)
    assert len(batched) == len(images)
    assert sum(len(b) for b, _, _ in batched) > 0, "the random nets should find something to compare"
    for image, (boxes, probs, points) in zip(images, batched, strict=True):
        [(b1, p1, l1)] = detect_faces([image], pnet, rnet, onet, settings)
        assert boxes.shape[1:] == (4,) and points.shape[1:] == (5, 2)
        torch.testing.assert_close(boxes, b1, rtol=0, atol=1e-3)
        torch.testing.assert_close(probs, p1, rtol=0, atol=1e-5)
        torch.testing.assert_close(points, l1, rtol=0, atol=1e-3)
        assert (probs[:-1] >= probs[1:]).all()  # best first


def test_torch_gather_path_equals_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA uses torch gathers, the CPU numpy ones: force the torch path here and compare.
    from facecluster.models import mtcnn

    nets = _random_nets()
    settings = CascadeSettings(min_face_size=12, thresholds=(0.5, 0.5, 0.5))
    images = [np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)]
    expected = detect_faces(images, *nets, settings)
    monkeypatch.setattr(mtcnn, "_numpy_ok", lambda device: False)
    got = detect_faces(images, *nets, settings)
    assert len(expected[0][0]) > 0
    for a, b in zip(expected[0], got[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_detect_faces_handles_empty_and_tiny_inputs() -> None:
    pnet, rnet, onet = _random_nets()
    assert detect_faces([], pnet, rnet, onet) == []
    [(boxes, probs, points)] = detect_faces([np.zeros((8, 8, 3), np.uint8)], pnet, rnet, onet)
    assert boxes.shape == (0, 4) and probs.shape == (0,) and points.shape == (0, 5, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_detect_faces_on_cuda_equals_cpu() -> None:
    nets = _random_nets()
    settings = CascadeSettings(min_face_size=12, thresholds=(0.5, 0.5, 0.5))
    images = [np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)]
    cpu = detect_faces(images, *nets, settings)
    gpu = detect_faces(images, *(net.to("cuda") for net in nets), settings)
    for a, b in zip(cpu[0], gpu[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-2)
