"""Face detection and alignment for unaligned photos: a detector finds the largest face and its
5 landmarks, and :mod:`.geometry` warps it onto the ArcFace 112x112 template.

``create_aligner(name, models_dir)`` returns a picklable callable: ``aligner(rgb)`` takes an
``HxWx3`` uint8 RGB image and returns the aligned ``112x112x3`` uint8 face, or ``None`` when
no face is found. Detectors open their onnxruntime session lazily, once per process, so
aligners can be sent to DataLoader workers.
"""
from __future__ import annotations

import os
from pathlib import Path

from faceaudit.errors import FaceauditError
from faceaudit.faces.detector import FaceAligner
from faceaudit.faces.geometry import ARCFACE_TEMPLATE, align_face, nms, umeyama, warp_affine
from faceaudit.faces.scrfd import SCRFD_FILE, SCRFDAligner, SCRFDDetector, decode_scrfd
from faceaudit.faces.yunet import YUNET_FILE, YuNetAligner, YuNetDetector, decode_yunet

#: aligner name -> (its detector's file under the models folder, its class)
ALIGNERS: dict[str, tuple[str, type[FaceAligner]]] = {
    "yunet": (YUNET_FILE, YuNetAligner),
    "scrfd": (SCRFD_FILE, SCRFDAligner),
}


def create_aligner(name: str, models_dir: str | os.PathLike = "Models") -> FaceAligner | None:
    """The aligner called ``name`` (``"yunet"``, ``"scrfd"``; ``"none"`` gives ``None``: images used as
    they are).

    Fails early, with one line, when the detector file or onnxruntime is missing, or when the
    file is not the detector.
    """
    key = (name or "none").strip().lower()
    if key == "none":
        return None
    if key not in ALIGNERS:
        raise FaceauditError(f"unknown aligner {name!r}; known: none, {', '.join(ALIGNERS)}")
    filename, aligner_class = ALIGNERS[key]
    path = Path(models_dir) / filename
    if not path.is_file():
        raise FaceauditError(f"--align {key} needs {path}; get it with: faceaudit models fetch {key}"
                             f"{'' if Path(models_dir) == Path('Models') else f' --models-dir {models_dir}'}")
    from faceaudit.models.onnx_weights import import_onnxruntime

    import_onnxruntime(f"--align {key}")  # the one-line error before any image is read
    aligner = aligner_class(path)
    aligner.detector.check()
    return aligner


__all__ = ["ALIGNERS", "ARCFACE_TEMPLATE", "SCRFD_FILE", "SCRFDAligner", "SCRFDDetector", "YUNET_FILE",
           "FaceAligner", "YuNetAligner", "YuNetDetector", "align_face", "create_aligner", "decode_scrfd",
           "decode_yunet", "nms", "umeyama", "warp_affine"]
