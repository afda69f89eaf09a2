"""Embeddings of a few image files in memory, made by the pipeline's own parts (model loading,
decoding, alignment, preprocessing, the batched model side), for two-image checks such as
``faceaudit verify``; whole datasets go through :func:`faceaudit.embed.embed_dataset`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from faceaudit.embed.embedder import Embedder
from faceaudit.embed.reader import model_input
from faceaudit.errors import FaceauditError


@dataclass
class ImageEmbeddings:
    """Unit float32 vectors, one row per image asked for (NaN rows where ``errors`` names a reason)."""

    vectors: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _model_input(path: Path, spec, aligner) -> np.ndarray:
    """One image file -> the model's uint8 HxWxC input; a reason (ValueError) when it cannot be had."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("image not found") from None
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror or exc})") from None
    face, reason = model_input(data, spec.input_size, spec.channel_order, aligner)
    if face is None:
        raise ValueError(reason)
    return face


def embed_images(paths: Sequence[str | os.PathLike], arch: str = "sface", weights: str | os.PathLike | None = None,
                 *, device: str = "auto", align: str | None = None, models_dir: str | os.PathLike = "Models",
                 flip_tta: bool = False, batch_size: int = 32, skip_errors: bool = False) -> ImageEmbeddings:
    """Embed each image file of ``paths`` as ``faceaudit embed`` would (same model, alignment and preprocessing).

    An image that cannot be read, decoded or (with ``align``) aligned is an error naming it, or with
    ``skip_errors`` a NaN row and an entry in ``errors``.
    """
    import faceaudit.models as models
    from faceaudit.device import resolve_device

    paths = [Path(p) for p in paths]
    missing = [row for row, path in enumerate(paths) if not path.is_file()]
    if missing and not skip_errors:  # before the model is loaded
        raise FaceauditError(f"{paths[missing[0]]}: image not found"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    torch_device = resolve_device(device)
    aligner = None
    if align not in (None, "", "none"):
        from faceaudit.faces import create_aligner
        aligner = create_aligner(align, Path(models_dir))
    model, info = models.load_model(arch, weights, torch_device, models_dir)
    spec = models.get_spec(arch).with_preprocessing(info)  # --arch onnx: read from its file
    embedder = Embedder(model, spec, torch_device, flip_tta=flip_tta)
    vectors = np.full((len(paths), spec.embedding_dim), np.nan, dtype=np.float32)
    errors: dict[int, str] = {}
    for start in range(0, len(paths), batch_size):
        rows, batch = [], []
        for row in range(start, min(start + batch_size, len(paths))):
            try:
                batch.append(_model_input(paths[row], spec, aligner))
                rows.append(row)
            except ValueError as exc:
                if not skip_errors:
                    raise FaceauditError(f"{paths[row]}: {exc}") from None
                errors[row] = str(exc)
        if batch:
            vectors[rows] = embedder(torch.from_numpy(np.stack(batch))).cpu().numpy()
    info = dict(info, align=align or "none", flip_tta=flip_tta)
    return ImageEmbeddings(vectors, errors, info)
