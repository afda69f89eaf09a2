"""What every ONNX face detector shares: a lazily opened onnxruntime session, the check that a
file is the detector it claims to be, resizing a photo for detection, and the aligner that warps
the largest face onto the ArcFace template."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from faceaudit.errors import FaceauditError
from faceaudit.faces.geometry import align_face, as_rgb


class OnnxDetector:
    """A detector run through onnxruntime; picklable (the session is opened lazily, once per process).

    Subclasses set ``kind`` (its name in messages), implement :meth:`detect` and
    :meth:`output_problem` (what in the session's outputs says the file is another model).
    """

    kind = "face"

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = Path(model_path)
        self._session = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    @property
    def session(self):
        if self._session is None:
            from faceaudit.models.onnx_weights import onnxruntime_session
            self._session = onnxruntime_session(self.model_path, what=f"--align {self.kind.lower()} (face detection)",
                                                threads=1)
        return self._session

    def check(self) -> None:
        """Open the session and refuse, in one line naming the file, a model that is not this detector."""
        inputs = self.session.get_inputs()
        problem = (f"{len(inputs)} inputs, not one image" if len(inputs) != 1 or len(inputs[0].shape) != 4
                   else self.output_problem([(o.name, o.shape) for o in self.session.get_outputs()]))
        if problem:
            raise FaceauditError(f"{self.model_path}: not the {self.kind} face detector ({problem})")

    def output_problem(self, outputs: list[tuple[str, list]]) -> str:
        """Why these (name, shape) outputs are not this detector's ('' when they are)."""
        raise NotImplementedError

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """The session's outputs, in graph order, for one NCHW float32 blob."""
        return self.session.run(None, {self.session.get_inputs()[0].name: blob})

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Faces in ``rgb`` (HxWx3 uint8) as ``(N, 15)`` rows: x, y, w, h, 5 landmarks (x, y), score."""
        raise NotImplementedError


def resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    """``rgb`` scaled by ``factor`` (PIL bilinear; at least 1 pixel a side)."""
    if factor == 1.0:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def padded_side(side: int, multiple: int = 32) -> int:
    """``side`` rounded up to a multiple of ``multiple`` (what strided detectors need)."""
    return -(-side // multiple) * multiple


class FaceAligner:
    """``aligner(rgb) -> 112x112x3 uint8 | None``: the largest detected face, template-aligned."""

    name = "face"

    def __init__(self, detector: OnnxDetector, size: int = 112):
        self.detector = detector
        self.size = size

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        rgb = as_rgb(rgb)
        faces = self.detector.detect(rgb)
        if not len(faces):
            return None
        largest = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        return align_face(rgb, largest[4:14], self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.detector.model_path)!r})"
