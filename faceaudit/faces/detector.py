"""What every ONNX face detector shares: a lazily opened onnxruntime session, the check that a
file is the detector it claims to be, detection on a resized and padded photo, and the aligner that
warps the largest face onto the ArcFace template."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from faceaudit.errors import FaceauditError
from faceaudit.faces.geometry import align_face, as_rgb, nms


class OnnxDetector:
    """A detector run through onnxruntime; picklable (the session is opened lazily, once per process).

    Subclasses set ``kind`` (its name in messages) and implement :meth:`detect` (usually through
    :meth:`detect_scaled`), :meth:`blob`, :meth:`decode` and :meth:`output_problem` (what in the
    session's outputs says the file is another model).
    """

    kind = "face"

    def __init__(self, model_path: str | os.PathLike, score_threshold: float, nms_threshold: float,
                 top_k: int | None = None):
        self.model_path = Path(model_path)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
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

    def blob(self, image: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
        """The network's (1, 3, pad_h, pad_w) float32 input for an HxWx3 uint8 ``image`` at its top left."""
        raise NotImplementedError

    def decode(self, outputs: list[np.ndarray], pad_w: int, pad_h: int) -> np.ndarray:
        """The raw outputs -> ``(N, 15)`` rows above ``score_threshold``, in the padded input's pixels."""
        raise NotImplementedError

    def detect_scaled(self, rgb: np.ndarray, factor: float) -> np.ndarray:
        """Faces in ``rgb`` scaled by ``factor`` and padded to multiples of 32, best first after NMS,
        in the photo's pixels."""
        height, width = rgb.shape[:2]
        if factor != 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        h, w = rgb.shape[:2]
        pad_h, pad_w = -(-h // 32) * 32, -(-w // 32) * 32
        faces = self.decode(self.run(self.blob(rgb, pad_h, pad_w)), pad_w, pad_h)
        if len(faces) > 1:
            faces = faces[nms(faces[:, :4], faces[:, 14], self.nms_threshold, self.top_k)]
        faces[:, :14] /= np.array([w / width, h / height] * 7)  # back to the photo's pixels
        return faces


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
