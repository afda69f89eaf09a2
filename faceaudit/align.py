"""Face alignment for unaligned photos: YuNet detection + 5-point similarity warp to 112x112.

``create_aligner("yunet", models_dir)`` returns a picklable callable: ``aligner(rgb)`` takes
an ``HxWx3`` uint8 RGB image and returns the largest face warped to the standard ArcFace
112x112 template (``112x112x3`` uint8), or ``None`` when no face is found. The detector's
onnxruntime session is opened lazily, once per process, so aligners can be sent to
DataLoader workers.

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

The warp estimates the similarity transform (Umeyama, with scale) from the 5 landmarks to
the ArcFace template, as OpenCV's ``FaceRecognizerSF.alignCrop`` does, and resamples with
PIL's ``Image.transform(AFFINE, inverse matrix, BILINEAR)`` (pixel centres handled as
OpenCV's ``warpAffine``; outside the photo is black).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from faceaudit.errors import FaceauditError

#: The standard ArcFace / InsightFace 5-point template for 112x112 crops (x, y):
#: left-of-image eye, right-of-image eye, nose tip, left and right mouth corners.
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
STRIDES = (8, 16, 32)


# ---------------------------------------------------------------- geometry

def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """The least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama 1991).

    ``src``, ``dst``: ``(N, 2)`` arrays. Returns the 3x3 homogeneous matrix ``T`` with
    ``dst ~ T @ [x, y, 1]``: rotation (no reflection), uniform scale, translation.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"umeyama needs two (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    T = np.eye(dim + 1)
    if rank == 0:
        T[:dim, dim] = dst_mean - src_mean
        return T
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(vt) <= 0:
        # degenerate (collinear) points: pick the proper rotation
        d_alt = d.copy()
        d_alt[-1] = -1
        rotation = u @ np.diag(d_alt) @ vt
    else:
        rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum() if estimate_scale else 1.0
    T[:dim, :dim] = scale * rotation
    T[:dim, dim] = dst_mean - scale * rotation @ src_mean
    return T


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Warp ``image`` (HxW or HxWxC uint8) by the forward affine ``matrix`` (2x3 or 3x3).

    ``matrix`` maps source pixel coordinates to output coordinates with OpenCV's convention
    (pixel centres at integers); output ``size`` is (width, height). Bilinear, black outside.
    """
    forward = np.eye(3)
    forward[:2] = np.asarray(matrix, dtype=np.float64)[:2]
    inverse = np.linalg.inv(forward)
    a, b = inverse[0, 0], inverse[0, 1]
    d, e = inverse[1, 0], inverse[1, 1]
    # PIL samples output pixel centres at (x + 0.5, y + 0.5) in a continuous frame where
    # source pixel i spans [i, i + 1); shift by half a pixel on both sides to match OpenCV.
    c = inverse[0, 2] + 0.5 * (1 - a - b)
    f = inverse[1, 2] + 0.5 * (1 - d - e)
    picture = Image.fromarray(np.ascontiguousarray(image))
    warped = picture.transform(tuple(size), Image.Transform.AFFINE, (a, b, c, d, e, f),
                               resample=Image.Resampling.BILINEAR)
    return np.asarray(warped)


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``rgb`` so that the 5 ``landmarks`` (in YuNet/ArcFace order) land on the template."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    matrix = umeyama(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), template)
    return warp_affine(rgb, matrix, (size, size))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, top_k: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; ``boxes`` are ``(N, 4)`` x, y, w, h. Kept indices, best first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if top_k is not None:
        order = order[:top_k]
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------- YuNet

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


class YuNetDetector:
    """YuNet through onnxruntime; picklable (the session is opened lazily per process).

    Photos whose longer side exceeds ``max_side`` are shrunk to it, and those whose longer
    side is under ``min_side`` are enlarged to it, before detection (coordinates are
    returned in the original photo's pixels).
    """

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, top_k: int = 5000, min_side: int = 160, max_side: int = 640):
        self.model_path = Path(model_path)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.min_side = min_side
        self.max_side = max_side
        self._session = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    @property
    def session(self):
        if self._session is None:
            from faceaudit.models.onnx_weights import onnxruntime_session
            self._session = onnxruntime_session(self.model_path, what="--align yunet (face detection)", threads=1)
        return self._session

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Faces in ``rgb`` (HxWx3 uint8) as ``(N, 15)`` rows, best score first."""
        rgb = as_rgb(rgb)
        height, width = rgb.shape[:2]
        longest = max(height, width)
        factor = 1.0
        if longest > self.max_side:
            factor = self.max_side / longest
        elif longest < self.min_side:
            factor = self.min_side / longest
        image = rgb
        if factor != 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            image = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        h, w = image.shape[:2]
        pad_h, pad_w = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, pad_h, pad_w), dtype=np.float32)
        blob[0, :, :h, :w] = image[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR, HWC -> CHW
        names = [o.name for o in self.session.get_outputs()]
        outputs = dict(zip(names, self.session.run(names, {self.session.get_inputs()[0].name: blob})))
        faces = decode_yunet(outputs, pad_w, pad_h, self.score_threshold)
        if len(faces) > 1:
            faces = faces[nms(faces[:, :4], faces[:, 14], self.nms_threshold, self.top_k)]
        faces[:, :14] /= np.array([w / width, h / height] * 7)  # back to the photo's pixels
        return faces


def as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW grey, HxWx1, HxWx3 or HxWx4 uint8 -> HxWx3 uint8 RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise FaceauditError(f"aligner needs a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise FaceauditError(f"aligner needs an HxWx3 image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


class YuNetAligner:
    """``aligner(rgb) -> 112x112x3 uint8 | None``: the largest detected face, template-aligned."""

    name = "yunet"

    def __init__(self, model_path: str | os.PathLike, size: int = 112, **detector_options):
        self.detector = YuNetDetector(model_path, **detector_options)
        self.size = size

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        rgb = as_rgb(rgb)
        faces = self.detector.detect(rgb)
        if not len(faces):
            return None
        largest = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        return align_face(rgb, largest[4:14], self.size)

    def __repr__(self) -> str:
        return f"YuNetAligner({str(self.detector.model_path)!r})"


ALIGNERS = ("yunet",)


def create_aligner(name: str, models_dir: str | os.PathLike = "Models") -> YuNetAligner | None:
    """The aligner called ``name`` (``"yunet"``; ``"none"`` gives ``None``: images used as they are).

    Fails early, with one line, when the detector file or onnxruntime is missing.
    """
    key = (name or "none").strip().lower()
    if key == "none":
        return None
    if key != "yunet":
        raise FaceauditError(f"unknown aligner {name!r}; known: none, {', '.join(ALIGNERS)}")
    path = Path(models_dir) / YUNET_FILE
    if not path.is_file():
        raise FaceauditError(f"--align yunet needs {path}; get it with: faceaudit models fetch yunet"
                             f"{'' if Path(models_dir) == Path('Models') else f' --models-dir {models_dir}'}")
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        from faceaudit.models.onnx_weights import ORT_MISSING
        raise FaceauditError(ORT_MISSING.format(what="--align yunet")) from None
    return YuNetAligner(path)
