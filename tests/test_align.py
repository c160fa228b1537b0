"""Face crops: margin in crop pixels, black padding outside the photo, landmark alignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from facecluster.align import LANDMARK_TEMPLATE, _similarity, centre_face, crop_face
from facecluster.errors import ImageError


@dataclass
class Face:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None
    probability: float = 1.0


def square_photo() -> np.ndarray:
    # A 200×200 grey photo with a red 80×80 square at (60, 60)-(140, 140).
    pixels = np.full((200, 200, 3), 128, np.uint8)
    pixels[60:140, 60:140] = (255, 0, 0)
    return pixels


def test_crop_without_margin_is_the_box() -> None:
    crop = crop_face(square_photo(), Face((60, 60, 140, 140)), size=40, margin=0)
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    assert np.all(crop[2:-2, 2:-2] == (255, 0, 0))


def test_margin_is_counted_in_crop_pixels() -> None:
    # size 160, margin 32: the box fills 128 px, 16 px of surroundings on each side.
    crop = crop_face(square_photo(), Face((60, 60, 140, 140)), size=160, margin=32)
    red = np.all(crop == (255, 0, 0), axis=2)
    rows = np.flatnonzero(red.any(axis=1))
    assert abs(rows[0] - 16) <= 1 and abs(rows[-1] - 143) <= 1
    assert np.all(crop[5, 5] == 128)


def test_outside_the_photo_is_black_not_squeezed() -> None:
    crop = crop_face(square_photo(), Face((-100, 60, -20, 140)), size=32, margin=0)
    assert crop.max() == 0
    half = crop_face(square_photo(), Face((-40, 60, 40, 140)), size=32, margin=0)
    assert half[:, :14].max() == 0 and half[:, 18:].min() > 0


@pytest.mark.parametrize("box", [(10, 10, 10, 50), (50, 50, 20, 80), (np.nan, 0, 10, 10)])
def test_bad_boxes_raise_image_error(box: tuple[float, ...]) -> None:
    with pytest.raises(ImageError):
        crop_face(square_photo(), Face(box))


def test_non_rgb_uint8_input_is_refused() -> None:
    with pytest.raises(ImageError, match="uint8"):
        crop_face(np.zeros((10, 10), np.uint8), Face((0, 0, 5, 5)))
    with pytest.raises(ImageError):
        crop_face(np.zeros((10, 10, 3), np.float32), Face((0, 0, 5, 5)))


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    matrix = _similarity(src, dst)
    assert np.allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    assert np.allclose(matrix[:, 2], shift, atol=1e-9)


def test_align_with_template_landmarks_matches_the_box_crop() -> None:
    # A textured photo; landmarks exactly where the template puts them on a square box: the aligned
    # crop must be (nearly) the plain margin crop.
    rng = np.random.default_rng(1)
    pixels = np.repeat(np.repeat(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8), 4, 0), 4, 1)
    box = np.array([50.0, 50.0, 150.0, 150.0])
    landmarks = box[:2] + LANDMARK_TEMPLATE * 100
    plain = crop_face(pixels, Face(tuple(box)), size=80, margin=16)
    aligned = crop_face(pixels, Face(tuple(box), landmarks), size=80, margin=16, align=True)
    assert aligned.shape == plain.shape
    assert np.mean(np.abs(aligned.astype(int) - plain.astype(int))) < 12


def test_align_undoes_an_in_plane_rotation() -> None:
    # A square, rotated by 30° about its centre with its landmarks: aligned, it stands upright again.
    pixels = np.zeros((200, 200, 3), np.uint8)
    yy, xx = np.mgrid[0:200, 0:200]
    angle = np.deg2rad(30)
    u = (xx - 100) * np.cos(angle) + (yy - 100) * np.sin(angle)
    v = -(xx - 100) * np.sin(angle) + (yy - 100) * np.cos(angle)
    pixels[(np.abs(u) < 40) & (np.abs(v) < 40)] = 255
    box_points = (LANDMARK_TEMPLATE - 0.5) * 80  # template on an 80 px upright square centred at 0
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = box_points @ rot.T + 100
    crop = crop_face(pixels, Face((60, 60, 140, 140), landmarks), size=100, margin=20, align=True)
    inside = crop[15:85, 15:85, 0]
    assert inside.mean() > 240  # the upright square fills the box region of the crop
    assert crop[3, 3, 0] == 0 and crop[3, 96, 0] == 0  # corners outside the square are dark


def test_align_falls_back_to_the_box_without_landmarks() -> None:
    plain = crop_face(square_photo(), Face((60, 60, 140, 140)), size=64, margin=8)
    assert np.array_equal(crop_face(square_photo(), Face((60, 60, 140, 140)), size=64, margin=8, align=True), plain)


def test_centre_face_is_central() -> None:
    face = centre_face((250, 250))
    x1, y1, x2, y2 = face.box
    assert (x1 + x2) / 2 == 125 and (y1 + y2) / 2 == 125
    assert x2 - x1 < y2 - y1  # taller than wide, like MTCNN boxes
    assert face.landmarks is None
