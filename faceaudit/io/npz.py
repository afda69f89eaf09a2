"""The ``.npz`` embedding format: ``vectors`` (N x D numbers), ``identities`` and ``image_names``
(strings), ``metadata`` (a JSON string), read without pickle and with every array checked.

Strings are stored as fixed-width unicode arrays, or, where one long string would make
that width wasteful, as UTF-8 bytes plus offsets (``<name>_utf8``, ``<name>_offsets``), so
neither the file nor the memory that reads it grows with the longest string.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError, first_line

STRING_KEYS = ("identities", "image_names")
#: a string array may take at most this many times the file's size in memory, plus the slack
_EXPANSION_LIMIT, _EXPANSION_SLACK = 16, 64 << 20


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(raw vectors, identities, image names, metadata) of an ``.npz`` embedding file."""
    return _read(path, with_arrays=True)


def read_npz_metadata(path: Path) -> dict:
    """Only the metadata of an ``.npz`` embedding file (the arrays are not read)."""
    return _read(path, with_arrays=False)[3]


def _read(path: Path, with_arrays: bool):
    if not zipfile.is_zipfile(path):
        raise FaceauditError(f"{path}: not an .npz file (an .npz is a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            vectors = _numeric(path, data, "vectors") if with_arrays else None
            labels = [_strings(path, data, key) if with_arrays else None for key in STRING_KEYS]
            metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
    except FaceauditError:
        raise
    except Exception as exc:  # BadZipFile, pickled object arrays, truncated files, bad JSON
        raise FaceauditError(f"{path}: not a readable .npz embedding file ({first_line(exc)})") from None
    if not isinstance(metadata, dict):
        raise FaceauditError(f"{path}: 'metadata' must be a JSON object, got {type(metadata).__name__}")
    return vectors, labels[0], labels[1], metadata


def _numeric(path: Path, data, key: str) -> np.ndarray:
    if key not in data.files:
        raise FaceauditError(f"{path}: missing array {key!r}")
    _check_size(path, data, key)
    array = data[key]
    if array.dtype.kind not in "fiu":
        raise FaceauditError(f"{path}: {key!r} holds {array.dtype} values, expected numbers")
    return array


def _strings(path: Path, data, key: str) -> np.ndarray:
    if key in data.files:
        _check_size(path, data, key)
        array = data[key]
        if array.dtype.kind != "U":
            raise FaceauditError(f"{path}: {key!r} holds {array.dtype} values, expected strings")
        return array
    if f"{key}_utf8" not in data.files or f"{key}_offsets" not in data.files:
        raise FaceauditError(f"{path}: missing array {key!r}")
    raw, offsets = data[f"{key}_utf8"], data[f"{key}_offsets"].astype(np.int64)
    if raw.dtype != np.uint8 or offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 \
            or offsets[-1] != raw.size or (np.diff(offsets) < 0).any():
        raise FaceauditError(f"{path}: {key}_utf8 / {key}_offsets do not describe a list of strings")
    encoded = raw.tobytes()
    try:
        strings = [encoded[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError:
        raise FaceauditError(f"{path}: {key}_utf8 is not UTF-8") from None
    return np.array(strings, dtype=np.dtypes.StringDType())


def _check_size(path: Path, data, key: str) -> None:
    """Refuse an array that would expand far beyond the file (e.g. a compressed fixed-width string bomb)."""
    info = data.zip.getinfo(f"{key}.npy")
    limit = _EXPANSION_LIMIT * path.stat().st_size + _EXPANSION_SLACK
    if info.file_size > limit:
        raise FaceauditError(f"{path}: array {key!r} expands to {info.file_size:,} bytes, more than "
                             f"{_EXPANSION_LIMIT}x the file's size; refused")


def write_npz(out, vectors: np.ndarray, identities: np.ndarray, image_names: np.ndarray, metadata: dict) -> None:
    """Write the arrays to the open binary file ``out`` (no pickled objects)."""
    arrays = {"vectors": vectors, "metadata": np.array(json.dumps(metadata))}
    for key, values in zip(STRING_KEYS, (identities, image_names)):
        if values.dtype.kind == "U":
            arrays[key] = values
        else:  # variable-width strings: UTF-8 bytes and where each string starts
            encoded = [s.encode("utf-8") for s in values.tolist()]
            arrays[f"{key}_utf8"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            arrays[f"{key}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in encoded])]).astype(np.int64)
    np.savez(out, **arrays)
