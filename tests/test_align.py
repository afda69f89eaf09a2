"""faceaudit.faces: Umeyama, the PIL warp, YuNet decoding/NMS, and the aligner on real ORL faces."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from faceaudit.faces import yunet as align
from faceaudit.faces import (ARCFACE_TEMPLATE, YuNetAligner, align_face, create_aligner, decode_yunet, nms,
                             umeyama, warp_affine)
from faceaudit.errors import FaceauditError

from conftest import real_model  # noqa: E402



def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1]])


def apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ T[:2, :2].T + T[:2, 2]


# ---------------------------------------------------------------- geometry

@pytest.mark.parametrize("scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (1.7, 0.3, 5.0, -3.0),
                                               (0.4, -2.5, -30.0, 12.5), (3.0, np.pi, 1.0, 2.0)])
def test_umeyama_recovers_a_known_similarity(scale, angle, tx, ty):
    rng = np.random.default_rng(0)
    src = rng.uniform(-50, 150, size=(5, 2))
    T = similarity(scale, angle, tx, ty)
    estimate = umeyama(src, apply(T, src))
    np.testing.assert_allclose(estimate, T, atol=1e-9)


def test_umeyama_least_squares_with_noise_and_no_reflection():
    rng = np.random.default_rng(1)
    src = ARCFACE_TEMPLATE * 2 + 10
    T = similarity(0.5, 0.2, 3, 4)
    dst = apply(T, src) + rng.normal(0, 0.3, size=src.shape)
    estimate = umeyama(src, dst)
    np.testing.assert_allclose(estimate[:2, :2], T[:2, :2], atol=0.01)
    assert np.abs(apply(estimate, src) - apply(T, src)).max() < 0.5
    assert np.linalg.det(estimate[:2, :2]) > 0
    mirrored = src * [-1, 1]  # a reflection is not a similarity: best rotation only
    assert np.linalg.det(umeyama(mirrored, src)[:2, :2]) > 0
    with pytest.raises(ValueError):
        umeyama(src[:, :1], dst[:, :1])


def test_warp_identity_and_integer_shift():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    assert np.array_equal(warp_affine(image, np.eye(3), (50, 40)), image)
    shifted = warp_affine(image, [[1, 0, 3], [0, 1, -2]], (50, 40))   # dst(x, y) = src(x - 3, y + 2)
    assert np.array_equal(shifted[:38, 3:], image[2:, :47])
    assert (shifted[:, :3] == 0).all()  # outside the source is black


def test_warp_matches_opencv_pixel_convention():
    """Bilinear warp with pixel centres at integers, as cv2.warpAffine (checked with scipy)."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, size=(40, 50), dtype=np.uint8)
    T = similarity(1.6, 0.25, 4.0, -2.0)
    out = warp_affine(src, T, (70, 60)).astype(float)
    yy, xx = np.mgrid[0:60, 0:70]
    back = apply(np.linalg.inv(T), np.column_stack([xx.ravel(), yy.ravel()]))
    expected = map_coordinates(src.astype(float), [back[:, 1], back[:, 0]], order=1).reshape(60, 70)
    inside = ((back[:, 0] > 1) & (back[:, 0] < 48) & (back[:, 1] > 1) & (back[:, 1] < 38)).reshape(60, 70)
    assert inside.sum() > 1000
    assert np.abs(out - expected)[inside].max() <= 1.0  # PIL rounds, scipy does not


def test_align_face_puts_landmarks_on_the_template():
    # a 200x200 photo holding a 112x112 'face' scaled by 1.5, rotated and shifted
    T = similarity(1.5, 0.2, 20, 10)
    rng = np.random.default_rng(4)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    face = np.asarray(Image.fromarray(coarse).resize((112, 112), Image.Resampling.BICUBIC))  # smooth content
    photo = warp_affine(face, T, (200, 200))
    landmarks = apply(T, ARCFACE_TEMPLATE)
    aligned = align_face(photo, landmarks)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    centre = (slice(30, 90), slice(30, 90))
    error = np.abs(aligned[centre].astype(int) - face[centre].astype(int)).mean()
    shifted = np.abs(np.roll(aligned, 4, axis=1)[centre].astype(int) - face[centre].astype(int)).mean()
    assert error < 3 and shifted > 4 * error


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10], [0, 0, 10, 10.0]])
    scores = np.array([0.8, 0.9, 0.7, 0.1])
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 2]
    assert nms(boxes, scores, 0.3, top_k=1).tolist() == [1]


def test_decode_yunet_grid_arithmetic():
    """One confident cell at stride 16, row 2, col 3 of a 64x96 (HxW) padded input."""
    outputs = {}
    for stride in align.STRIDES:
        cells = (64 // stride) * (96 // stride)
        outputs[f"cls_{stride}"] = np.zeros((1, cells, 1), np.float32)
        outputs[f"obj_{stride}"] = np.zeros((1, cells, 1), np.float32)
        outputs[f"bbox_{stride}"] = np.zeros((1, cells, 4), np.float32)
        outputs[f"kps_{stride}"] = np.zeros((1, cells, 10), np.float32)
    idx = 2 * (96 // 16) + 3
    outputs["cls_16"][0, idx] = 0.81
    outputs["obj_16"][0, idx] = 1.5   # clipped to 1
    outputs["bbox_16"][0, idx] = [0.5, 0.25, np.log(2), 0.0]
    outputs["kps_16"][0, idx] = np.arange(10) / 10
    faces = decode_yunet(outputs, pad_w=96, pad_h=64, score_threshold=0.6)
    assert faces.shape == (1, 15)
    x, y, w, h = faces[0, :4]
    np.testing.assert_allclose([w, h, x + w / 2, y + h / 2], [32, 16, (3 + 0.5) * 16, (2 + 0.25) * 16], rtol=1e-6)
    np.testing.assert_allclose(faces[0, 4:14:2], (3 + np.arange(0, 10, 2) / 10) * 16)
    np.testing.assert_allclose(faces[0, 5:14:2], (2 + np.arange(1, 10, 2) / 10) * 16)
    assert faces[0, 14] == pytest.approx(0.9)
    assert decode_yunet(outputs, 96, 64, 0.95).shape == (0, 15)


def test_create_aligner_errors(tmp_path):
    assert create_aligner("none", tmp_path) is None
    with pytest.raises(FaceauditError, match="unknown aligner 'mtcnn'"):
        create_aligner("mtcnn", tmp_path)
    with pytest.raises(FaceauditError, match="faceaudit models fetch yunet"):
        create_aligner("yunet", tmp_path)


# ---------------------------------------------------------------- YuNet on real faces



@pytest.fixture(scope="module")
def aligner():
    pytest.importorskip("onnxruntime", reason="YuNet runs through onnxruntime (faceaudit[onnx])")
    pytest.importorskip("onnx")
    return create_aligner("yunet", real_model("yunet").parent)


def test_yunet_finds_faces_on_orl(aligner, shared_data):
    root = shared_data("orl")
    found, total = 0, 0
    for s in range(1, 41):
        for k in (1, 5, 9):
            grey = np.asarray(Image.open(root / f"s{s}" / f"{k}.pgm"))   # HxW grey is accepted too
            faces = aligner.detector.detect(grey)
            total += 1
            if len(faces):
                found += 1
                x, y, w, h = faces[0, :4]
                marks = faces[0, 4:14].reshape(5, 2)
                assert 20 < w < 120 and 20 < h < 140            # a face-sized box on a 92x112 photo
                assert marks[0, 0] < marks[1, 0]                 # right eye on the image's left
                assert marks[:2, 1].max() < marks[2, 1] < marks[3:, 1].min()  # eyes, nose, mouth
    assert found >= 0.95 * total, f"YuNet found a face on {found}/{total} ORL images"


def test_aligner_output_and_no_face(aligner, shared_data):
    rgb = np.asarray(Image.open(shared_data("orl", "s1", "1.pgm")).convert("RGB"))
    out = aligner(rgb)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert aligner(np.full((120, 100, 3), 128, np.uint8)) is None
    big = np.asarray(Image.fromarray(rgb).resize((920, 1120)))  # shrunk to max_side for detection
    assert aligner(big) is not None


def test_aligner_pickles_after_use(aligner, shared_data):
    rgb = np.asarray(Image.open(shared_data("orl", "s2", "3.pgm")).convert("RGB"))
    first = aligner(rgb)
    assert aligner.detector._session is not None
    clone = pickle.loads(pickle.dumps(aligner))
    assert isinstance(clone, YuNetAligner) and clone.detector._session is None
    assert np.array_equal(clone(rgb), first)
