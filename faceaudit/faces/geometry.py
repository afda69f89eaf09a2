"""Face geometry shared by every detector: the ArcFace 5-point template, the Umeyama
similarity transform, the warp to a 112x112 crop, non-maximum suppression of boxes, and
the RGB conversion detectors expect.

The warp estimates the similarity transform (Umeyama, with scale) from the 5 landmarks to
the ArcFace template, as OpenCV's ``FaceRecognizerSF.alignCrop`` does, and resamples with
PIL's ``Image.transform(AFFINE, inverse matrix, BILINEAR)`` (pixel centres handled as
OpenCV's ``warpAffine``; outside the photo is black).
"""
from __future__ import annotations

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
