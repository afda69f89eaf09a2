"""YuNet, OpenCV Zoo's face detector with 5 landmarks, and the aligner built on it.

YuNet (OpenCV Zoo ``face_detection_yunet_2023mar.onnx``) is decoded here as OpenCV's
``FaceDetectorYN`` does (``modules/objdetect/src/face_detect.cpp``):

* input: the **BGR** image, pixels 0..255 as float, no normalisation, zero-padded at the
  bottom/right to a multiple of 32 (the network is fully convolutional; the file's fixed
  640x640 input is made dynamic in memory);
* outputs, for each stride s in (8, 16, 32), over the ``rows x cols`` grid (row-major):
  ``cls_s``, ``obj_s`` [1, HW, 1] (sigmoided); ``bbox_s`` [1, HW, 4]; ``kps_s`` [1, HW, 10];
* score = sqrt(clip(cls, 0, 1) * clip(obj, 0, 1)); cell (r, c) decodes to
  centre ((c + dx) * s, (r + dy) * s), size (exp(dw) * s, exp(dh) * s),
  landmark k = ((c + kx_k) * s, (r + ky_k) * s), in the order right eye, left eye, nose tip,
  right mouth corner, left mouth corner (subject's right = image left);
* then greedy NMS on the boxes (IoU > ``nms_threshold`` suppressed), best score first.

The warp to the template is :func:`faceaudit.faces.geometry.align_face`.
"""
from __future__ import annotations

import os

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.faces.detector import FaceAligner, OnnxDetector
from faceaudit.faces.geometry import as_rgb

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
STRIDES = (8, 16, 32)


def decode_yunet(outputs: dict[str, np.ndarray], pad_w: int, pad_h: int,
                 score_threshold: float) -> np.ndarray:
    """Raw YuNet outputs -> ``(N, 15)``: x, y, w, h, 5 landmarks (x, y), score (pre-NMS)."""
    faces = []
    for stride in STRIDES:
        cols, rows = pad_w // stride, pad_h // stride
        cls = outputs[f"cls_{stride}"].reshape(-1)
        obj = outputs[f"obj_{stride}"].reshape(-1)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)
        kps = outputs[f"kps_{stride}"].reshape(-1, 10)
        if cls.size != rows * cols:
            raise FaceauditError(f"YuNet stride {stride}: {cls.size} cells, expected {rows}x{cols}")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        hit = np.nonzero(score >= score_threshold)[0]
        if not hit.size:
            continue
        r, c = (hit // cols).astype(np.float64), (hit % cols).astype(np.float64)
        b = bbox[hit].astype(np.float64)
        cx, cy = (c + b[:, 0]) * stride, (r + b[:, 1]) * stride
        w, h = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
        k = kps[hit].astype(np.float64).reshape(-1, 5, 2)
        lx, ly = (k[:, :, 0] + c[:, None]) * stride, (k[:, :, 1] + r[:, None]) * stride
        marks = np.stack([lx, ly], axis=2).reshape(-1, 10)
        faces.append(np.column_stack([cx - w / 2, cy - h / 2, w, h, marks, score[hit]]))
    return np.concatenate(faces) if faces else np.zeros((0, 15))


class YuNetDetector(OnnxDetector):
    """YuNet through onnxruntime.

    Photos whose longer side exceeds ``max_side`` are shrunk to it, and those whose longer
    side is under ``min_side`` are enlarged to it, before detection (coordinates are
    returned in the original photo's pixels).
    """

    kind = "YuNet"

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, top_k: int = 5000, min_side: int = 160, max_side: int = 640):
        super().__init__(model_path, score_threshold, nms_threshold, top_k)
        self.min_side = min_side
        self.max_side = max_side

    def output_problem(self, outputs: list[tuple[str, list]]) -> str:
        names = {name for name, _ in outputs}
        absent = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in STRIDES
                  if f"{kind}_{stride}" not in names]
        return f"no output {', '.join(absent)}" if absent else ""

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Faces in ``rgb`` (HxWx3 uint8) as ``(N, 15)`` rows, best score first."""
        rgb = as_rgb(rgb)
        longest = max(rgb.shape[:2])
        factor = 1.0
        if longest > self.max_side:
            factor = self.max_side / longest
        elif longest < self.min_side:
            factor = self.min_side / longest
        return self.detect_scaled(rgb, factor)

    def blob(self, image: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
        h, w = image.shape[:2]
        blob = np.zeros((1, 3, pad_h, pad_w), dtype=np.float32)
        blob[0, :, :h, :w] = image[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR, HWC -> CHW
        return blob

    def decode(self, outputs: list[np.ndarray], pad_w: int, pad_h: int) -> np.ndarray:
        names = [o.name for o in self.session.get_outputs()]
        return decode_yunet(dict(zip(names, outputs)), pad_w, pad_h, self.score_threshold)


class YuNetAligner(FaceAligner):
    """``aligner(rgb) -> 112x112x3 uint8 | None``: the largest face YuNet finds, template-aligned."""

    name = "yunet"

    def __init__(self, model_path: str | os.PathLike, size: int = 112, **detector_options):
        super().__init__(YuNetDetector(model_path, **detector_options), size)
