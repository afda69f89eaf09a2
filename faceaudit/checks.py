"""Argument checks shared by the library and the command line, so that every entry point refuses
the same bad values, with the same one-line message, before any work starts."""
from __future__ import annotations

import math
from typing import Iterable

from faceaudit.errors import FaceauditError

MAX_SEED = 2 ** 63 - 1
#: ``--precision`` of an embedding run: fp32 (IEEE float32, TF32 off: the CPU's numbers on every
#: device), and on CUDA only tf32, bf16, fp16 (see :mod:`faceaudit.embed.embedder`)
EMBED_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def seed(value, what: str = "seed") -> int:
    """A random seed: an integer from 0 to 2**63 - 1 (numpy's and Python's generators both take it)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise FaceauditError(f"{what} must be an integer from 0 to 2**63-1, got {value!r}")
    return value


def finite(value, what: str) -> float:
    """A finite number (not NaN, not infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FaceauditError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise FaceauditError(f"{what} must be a finite number, got {value!r}")
    return number


def cosine(value, what: str = "threshold") -> float:
    """A cosine-similarity threshold: a finite number in [-1, 1]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not -1.0 <= number <= 1.0:  # NaN fails this too
        raise FaceauditError(f"{what} must be a finite number in [-1, 1] (a cosine similarity), got {value!r}")
    return number


def cosines(values: Iterable, what: str = "threshold") -> list[float]:
    return [cosine(v, what) for v in values]


def embed_precision(value, device_type: str) -> str:
    """One of :data:`EMBED_PRECISIONS` that ``device_type`` runs (precisions below fp32 need CUDA)."""
    if value not in EMBED_PRECISIONS:
        raise FaceauditError(f"unknown precision {value!r}: use {', '.join(EMBED_PRECISIONS)}")
    if value != "fp32" and device_type != "cuda":
        raise FaceauditError(f"precision {value} is for CUDA GPUs; on {device_type} the model runs in fp32 "
                             "(the default)")
    return value
