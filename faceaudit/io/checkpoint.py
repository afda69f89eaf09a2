"""Checkpoints of long chunked work, so that an interrupted run resumes where it stopped.

A checkpoint is one ``.npz`` file beside the outputs, written atomically after each
chunk and removed when the work is done. It records a fingerprint of the inputs and
settings; a checkpoint of other work is ignored (with a warning) and replaced.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditWarning
from faceaudit.io.files import atomic_write

_HASH_ROWS = 1 << 14  # rows hashed at a time: bounded extra memory


def fingerprint(*parts) -> str:
    """A digest of arrays (by content, in row blocks) and plain values (by ``repr``)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(repr((part.dtype.str, part.shape)).encode())
            for start in range(0, len(part), _HASH_ROWS):
                digest.update(np.ascontiguousarray(part[start:start + _HASH_ROWS]).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


class Checkpoint:
    """The arrays of finished chunks, saved at ``path`` for the work identified by ``key``."""

    def __init__(self, path: str | os.PathLike, key: str):
        self.path = Path(path)
        self.key = key

    def load(self) -> dict[str, np.ndarray] | None:
        """The saved arrays, or None when there is no checkpoint of this work."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception:  # a damaged checkpoint only costs the work it held
            warnings.warn(f"{self.path}: unreadable checkpoint, starting over", FaceauditWarning, stacklevel=2)
            return None
        if str(arrays.pop("key", "")) != self.key:
            warnings.warn(f"{self.path}: checkpoint of other inputs or settings, starting over",
                          FaceauditWarning, stacklevel=2)
            return None
        return arrays

    def save(self, **arrays: np.ndarray) -> None:
        with atomic_write(self.path, "wb") as out:
            np.savez(out, key=np.array(self.key), **arrays)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
