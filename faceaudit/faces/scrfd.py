"""SCRFD, InsightFace's face detector with 5 landmarks (``scrfd_500m_bnkps.onnx``), and its aligner.

Our reading of the graph (the same decoding as InsightFace's ``SCRFD`` class):

* input: the **RGB** image as ``(pixel - 127.5) / 128``, NCHW; any size with sides that are
  multiples of 32 (we pad bottom/right with black, as InsightFace's letterbox does);
* nine outputs, in graph order: scores (sigmoided) ``[1, cells*A, 1]`` at strides 8, 16, 32,
  then box distances ``[1, cells*A, 4]`` at the same strides, then landmarks ``[1, cells*A, 10]``;
  cells run row-major over the ``(H/s) x (W/s)`` grid, each with ``A`` anchors (2 here)
  in a row;
* the anchor of cell (r, c) sits at ``(c*s, r*s)``; its box is ``(cx - d0*s, cy - d1*s,
  cx + d2*s, cy + d3*s)`` and landmark k ``(cx + k_2k*s, cy + k_2k+1*s)``, in the ArcFace
  template's order (eyes, nose, mouth corners; image left first);
* score >= 0.5, then greedy NMS at IoU 0.4 (InsightFace's defaults).

Face size: the anchors cover faces of about 16-512 pixels, and InsightFace letterboxes every
photo into 640x640. A face that fills its photo (cropped datasets, e.g. ORL) is then too large
to be found (0 of ORL's 400 faces). So the photo is scaled to a longer side of 160 pixels
first, then 320, then 640, and the first size at which a face is found is used: the largest
faces are found first and cheaply, and small faces in large photos still are.
"""
from __future__ import annotations

import os

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.faces.detector import FaceAligner, OnnxDetector
from faceaudit.faces.geometry import as_rgb

SCRFD_FILE = "scrfd_500m_bnkps.onnx"
STRIDES = (8, 16, 32)
#: the longer side a photo is scaled to for detection, tried in this order until a face is found
SIDES = (160, 320, 640)
#: the last axis of the nine outputs: scores, boxes, landmarks at each stride
OUTPUT_WIDTHS = (1,) * len(STRIDES) + (4,) * len(STRIDES) + (10,) * len(STRIDES)


def decode_scrfd(outputs: list[np.ndarray], pad_w: int, pad_h: int, score_threshold: float) -> np.ndarray:
    """The nine raw SCRFD outputs -> ``(N, 15)``: x, y, w, h, 5 landmarks (x, y), score (pre-NMS)."""
    n = len(STRIDES)
    faces = []
    for i, stride in enumerate(STRIDES):
        scores = outputs[i].reshape(-1)
        boxes = outputs[i + n].reshape(-1, 4)
        marks = outputs[i + 2 * n].reshape(-1, 10)
        cols, cells = pad_w // stride, (pad_w // stride) * (pad_h // stride)
        anchors = scores.size // cells if cells else 0
        if not anchors or scores.size != cells * anchors or len(boxes) != scores.size or len(marks) != scores.size:
            raise FaceauditError(f"SCRFD stride {stride}: {scores.size} scores, {len(boxes)} boxes and "
                                 f"{len(marks)} landmark rows for a {pad_w}x{pad_h} input")
        hit = np.nonzero(scores >= score_threshold)[0]
        if not hit.size:
            continue
        cell = hit // anchors
        centre = np.column_stack([cell % cols, cell // cols]).astype(np.float64) * stride
        d = boxes[hit].astype(np.float64) * stride
        top_left, bottom_right = centre - d[:, :2], centre + d[:, 2:]
        points = marks[hit].astype(np.float64).reshape(-1, 5, 2) * stride + centre[:, None, :]
        faces.append(np.column_stack([top_left, bottom_right - top_left, points.reshape(-1, 10), scores[hit]]))
    return np.concatenate(faces) if faces else np.zeros((0, 15))


class SCRFDDetector(OnnxDetector):
    """SCRFD through onnxruntime, at the first of ``sides`` (longer photo side) that finds a face."""

    kind = "SCRFD"

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 sides: tuple[int, ...] = SIDES):
        super().__init__(model_path, score_threshold, nms_threshold)
        self.sides = tuple(sides)

    def output_problem(self, outputs: list[tuple[str, list]]) -> str:
        widths = tuple(shape[-1] if shape else None for _, shape in outputs)
        if len(widths) != len(OUTPUT_WIDTHS) or any(isinstance(got, int) and got != want
                                                    for got, want in zip(widths, OUTPUT_WIDTHS)):
            return (f"{len(outputs)} outputs of widths {list(widths)}; SCRFD with landmarks has "
                    f"{len(OUTPUT_WIDTHS)}: scores, boxes and landmarks at strides {', '.join(map(str, STRIDES))}")
        return ""

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Faces in ``rgb`` (HxWx3 uint8) as ``(N, 15)`` rows, best score first."""
        rgb = as_rgb(rgb)  # once, not at every size
        for side in self.sides:
            faces = self.detect_at(rgb, side)
            if len(faces):
                return faces
        return np.zeros((0, 15))

    def detect_at(self, rgb: np.ndarray, side: int) -> np.ndarray:
        """Faces in ``rgb`` scaled to a longer side of ``side`` pixels, in the photo's pixels."""
        rgb = as_rgb(rgb)
        return self.detect_scaled(rgb, side / max(rgb.shape[:2]))

    def blob(self, image: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
        h, w = image.shape[:2]
        blob = np.full((1, 3, pad_h, pad_w), -127.5 / 128, dtype=np.float32)  # black padding
        blob[0, :, :h, :w] = (image.transpose(2, 0, 1).astype(np.float32) - 127.5) / 128
        return blob

    def decode(self, outputs: list[np.ndarray], pad_w: int, pad_h: int) -> np.ndarray:
        return decode_scrfd(outputs, pad_w, pad_h, self.score_threshold)


class SCRFDAligner(FaceAligner):
    """``aligner(rgb) -> 112x112x3 uint8 | None``: the largest face SCRFD finds, template-aligned."""

    name = "scrfd"

    def __init__(self, model_path: str | os.PathLike, size: int = 112, **detector_options):
        super().__init__(SCRFDDetector(model_path, **detector_options), size)
