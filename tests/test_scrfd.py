"""--align scrfd: SCRFD's outputs decoded in numpy, the input size chosen from the photo, the aligner on
real ORL faces, and a detector file that is not SCRFD refused in one line naming it."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.faces import SCRFDAligner, create_aligner, decode_scrfd
from faceaudit.faces.scrfd import SCRFD_FILE, STRIDES

from conftest import real_model, shared_path


def blank_outputs(pad_w: int, pad_h: int, anchors: int = 2) -> list[np.ndarray]:
    """SCRFD's nine outputs for a pad_w x pad_h input, all zero: scores, boxes, landmarks per stride."""
    cells = [(pad_w // s) * (pad_h // s) * anchors for s in STRIDES]
    return ([np.zeros((1, n, 1), np.float32) for n in cells] + [np.zeros((1, n, 4), np.float32) for n in cells]
            + [np.zeros((1, n, 10), np.float32) for n in cells])


def test_decode_scrfd_grid_arithmetic():
    """One confident anchor: stride 16, row 2, col 3, second anchor, of a 96x64 (WxH) input."""
    outputs = blank_outputs(96, 64)
    row = (2 * (96 // 16) + 3) * 2 + 1             # cell (2, 3), anchor 1: anchors of a cell are adjacent
    outputs[1][0, row] = 0.8                         # scores at stride 16
    outputs[4][0, row] = [1.0, 0.5, 2.0, 1.5]        # distances left, top, right, bottom, in strides
    outputs[7][0, row] = np.arange(10) / 10          # landmark offsets, in strides
    faces = decode_scrfd(outputs, pad_w=96, pad_h=64, score_threshold=0.5)
    assert faces.shape == (1, 15)
    cx, cy = 3 * 16, 2 * 16                          # the anchor centre: (col * s, row * s)
    np.testing.assert_allclose(faces[0, :4], [cx - 16, cy - 8, 3 * 16, 2 * 16])
    np.testing.assert_allclose(faces[0, 4:14:2], cx + np.arange(0, 10, 2) / 10 * 16)
    np.testing.assert_allclose(faces[0, 5:14:2], cy + np.arange(1, 10, 2) / 10 * 16)
    assert faces[0, 14] == pytest.approx(0.8)
    assert decode_scrfd(outputs, 96, 64, 0.9).shape == (0, 15)
    with pytest.raises(FaceauditError, match="SCRFD stride 8: 192 scores, 192 boxes and 192 landmark rows for a 128x64 input"):
        decode_scrfd(outputs, 128, 64, 0.5)          # outputs of another input size


def test_create_aligner_needs_the_file_and_refuses_another_detector(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="SCRFD runs through onnxruntime (faceaudit[onnx])")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    with pytest.raises(FaceauditError, match="--align scrfd needs .*; get it with: faceaudit models fetch scrfd"):
        create_aligner("scrfd", tmp_path)
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / SCRFD_FILE))
    with pytest.raises(FaceauditError) as err:
        create_aligner("scrfd", tmp_path)
    assert str(err.value) == (f"{tmp_path / SCRFD_FILE}: not the SCRFD face detector (1 outputs of widths [1]; "
                              "SCRFD with landmarks has 9: scores, boxes and landmarks at strides 8, 16, 32)")
    faces = tmp_path / "faces" / "p1"
    faces.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(faces / "a.png")
    assert main(["embed", str(tmp_path / "faces"), "-o", str(tmp_path / "e.jsonl"), "--arch", "sface",
                 "--align", "scrfd", "--models-dir", str(tmp_path), "--no-progress"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and f"{tmp_path / SCRFD_FILE}: not the SCRFD face detector" in message
    assert not (tmp_path / "e.jsonl").exists()


# ---------------------------------------------------------------- SCRFD on real faces

@pytest.fixture(scope="module")
def aligner():
    pytest.importorskip("onnxruntime", reason="SCRFD runs through onnxruntime (faceaudit[onnx])")
    return create_aligner("scrfd", real_model("scrfd").parent)


@pytest.fixture(scope="module")
def photos():
    root = shared_path("orl")
    return [np.asarray(Image.open(root / f"s{s}" / f"{k}.pgm")) for s in (1, 9, 17, 25, 33, 40) for k in (1, 6)]


def test_scrfd_finds_faces_that_fill_the_photo(aligner, photos):
    detector = aligner.detector
    for grey in photos:                               # 92x112 grey photos: HxW grey is accepted too
        faces = detector.detect(grey)
        assert len(faces) == 1, len(faces)
        x, y, w, h = faces[0, :4]
        marks = faces[0, 4:14].reshape(5, 2)
        assert 50 < w < 100 and 60 < h < 125          # the face fills most of the photo
        assert marks[0, 0] < marks[1, 0]              # eyes: image left first
        assert marks[:2, 1].max() < marks[2, 1] < marks[3:, 1].min()  # eyes, nose, mouth
        assert (x <= marks[:, 0]).all() and (marks[:, 0] <= x + w).all()
    # InsightFace's single 640-pixel input misses them all: why the smaller sizes come first
    assert all(len(detector.detect_at(grey, 640)) == 0 for grey in photos[:4])


def test_a_small_face_in_a_large_photo_is_found_where_it_is(aligner, photos):
    face = Image.fromarray(photos[0]).convert("RGB")
    canvas = Image.new("RGB", (800, 600), (90, 90, 90))
    canvas.paste(face, (500, 300))                    # a 92x112 face at (500, 300) of an 800x600 photo
    faces = aligner.detector.detect(np.asarray(canvas))
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])[:4]
    assert 495 < x and x + w < 597 and 295 < y and y + h < 417
    # the landmarks, mapped back to the photo, are where they are found in the face's own photo
    # (mouth corners move by a few pixels: that photo ends just below the mouth)
    moved = (max(faces, key=lambda f: f[2] * f[3])[4:14] - [500, 300] * 5).reshape(5, 2)
    direct = aligner.detector.detect(photos[0])[0, 4:14].reshape(5, 2)
    assert np.abs(moved[:3] - direct[:3]).max() < 3 and np.abs(moved - direct).max() < 8


def test_aligner_output_no_face_and_pickling(aligner, photos):
    rgb = np.repeat(photos[0][:, :, None], 3, axis=2)
    out = aligner(rgb)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert aligner(np.full((120, 100, 3), 128, np.uint8)) is None
    clone = pickle.loads(pickle.dumps(aligner))
    assert isinstance(clone, SCRFDAligner) and clone.detector._session is None
    assert np.array_equal(clone(rgb), out)
