"""EmbeddingSet: the one currency of faceaudit, and its files.

Formats:

- the paper's JSON Lines (``.json`` or ``.jsonl``, parsed by :mod:`faceaudit.io.jsonl`):
  one ``{"identity": str, "image_name": str, "embedding": [floats]}`` per line,
  with an optional ``<file>.meta.json`` sidecar holding the metadata;
  a file holding one JSON array of such objects is read too;
- ``.npz`` (:mod:`faceaudit.io.npz`): ``vectors`` (float32 N×D), ``identities``,
  ``image_names`` (strings) and ``metadata`` (a JSON string), read without pickle.

Identities and image names are numpy string arrays whose memory follows the strings' real
size (:func:`as_labels`); vectors are normalised with float64 norms, so neither huge nor tiny
values can overflow or underflow to a silent zero row.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.files import atomic_write, read_json
from faceaudit.io.jsonl import BadRecord, check_record, format_jsonl_lines, parse_file
from faceaudit.io.npz import read_npz, write_npz

JSONL_SUFFIXES = (".json", ".jsonl")
NPZ_SUFFIX = ".npz"


@dataclass
class EmbeddingSet:
    """L2-normalised float32 vectors (N×D) with an identity and image name per row."""

    vectors: np.ndarray
    identities: np.ndarray
    image_names: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.identities = as_labels(self.identities)
        self.image_names = as_labels(self.image_names)
        if self.vectors.ndim != 2:
            raise FaceauditError(f"embeddings must be a 2-D array, got shape {self.vectors.shape}")
        n = len(self.vectors)
        if self.identities.shape != (n,) or self.image_names.shape != (n,):
            raise FaceauditError(
                f"{n} vectors but {self.identities.size} identities and {self.image_names.size} image names"
            )

    @classmethod
    def from_arrays(cls, vectors, identities: Sequence[str], image_names: Sequence[str],
                    metadata: dict | None = None, source: str = "embeddings") -> "EmbeddingSet":
        """Validate (finite, non-zero) and L2-normalise raw vectors."""
        return cls(normalize(np.asarray(vectors), source), identities, image_names, dict(metadata or {}))

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def subset(self, indices) -> "EmbeddingSet":
        return EmbeddingSet(self.vectors[indices], self.identities[indices], self.image_names[indices],
                            dict(self.metadata))


def as_labels(values) -> np.ndarray:
    """Strings as a numpy array whose memory follows their real size.

    Fixed-width unicode (fast to sort and compare) unless the longest string is far longer
    than the typical one; then numpy's variable-width ``StringDType``, so that one
    10,000-character name does not make every row 40 kB.
    """
    if isinstance(values, np.ndarray) and (values.dtype.kind == "U" or isinstance(values.dtype, np.dtypes.StringDType)):
        return values
    strings = [v if type(v) is str else str(v) for v in values]
    if not strings:
        return np.array([], dtype=str)
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    if lengths.max() <= 2 * lengths.mean() + 16:
        return np.array(strings, dtype=str)
    return np.array(strings, dtype=np.dtypes.StringDType())


def unit_rows(vectors: np.ndarray, source: str = "embeddings", row_name=None) -> np.ndarray:
    """``vectors`` (float32) divided by their float64 norms, in place, in row blocks.

    NaN/inf or a zero norm is an error naming ``source`` and the first bad row
    (``row_name(i)`` says how, e.g. as a line number; default ``row i + 1``).
    """
    row_name = row_name or (lambda i: f"row {i + 1}")
    for start in range(0, len(vectors), 1 << 16):
        block = vectors[start:start + (1 << 16)]
        wide = block.astype(np.float64)
        finite = np.isfinite(wide).all(axis=1)
        if not finite.all():
            raise FaceauditError(f"{source}: {row_name(start + int(np.argmin(finite)))} has NaN or infinite values")
        norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
        if not norms.all():
            raise FaceauditError(f"{source}: {row_name(start + int(np.argmin(norms != 0)))} is an all-zero vector")
        block[:] = wide / norms[:, None]
    return vectors


def normalize(vectors: np.ndarray, source: str = "embeddings") -> np.ndarray:
    """A float32 unit-row copy of ``vectors``; bad rows are an error naming the first one."""
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise FaceauditError(f"{source}: embeddings must be a non-empty N×D array, got shape {vectors.shape}")
    with np.errstate(over="ignore"):
        narrow = vectors.astype(np.float32)
    if not np.isfinite(narrow).all() and np.isfinite(vectors).all():
        row = int(np.argmin(np.isfinite(narrow).all(axis=1)))
        raise FaceauditError(f"{source}: row {row + 1} has values beyond the float32 range")
    return unit_rows(narrow, source)


# ---------------------------------------------------------------- reading

def load_embeddings(path: str | os.PathLike, *, skip_invalid: bool = False,
                    expected_dim: int | None = None) -> EmbeddingSet:
    """Read a ``.json``/``.jsonl``/``.npz`` embedding file into an EmbeddingSet.

    A malformed line is an error naming the file and line; with ``skip_invalid``
    it is skipped, counted and warned about. Duplicate (identity, image_name)
    pairs are warned about.
    """
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"{path}: embedding file not found")
    if path.stat().st_size == 0:
        raise FaceauditError(f"{path}: embedding file is empty")
    suffix = path.suffix.lower()
    if suffix == NPZ_SUFFIX:
        eset = _load_npz(path)
    elif suffix in JSONL_SUFFIXES:
        eset = _load_jsonl(path, skip_invalid, expected_dim)
    else:
        raise FaceauditError(f"{path}: unsupported embedding file type {suffix!r} (use .json, .jsonl or .npz)")
    if expected_dim is not None and eset.dim != expected_dim:
        raise FaceauditError(f"{path}: vectors have {eset.dim} dimensions, expected {expected_dim}")
    eset.metadata.setdefault("source_file", str(path))
    _warn_duplicates(eset, path)
    return eset


def _load_npz(path: Path) -> EmbeddingSet:
    vectors, identities, names, metadata = read_npz(path)
    if len(vectors) == 0:
        raise FaceauditError(f"{path}: embedding file holds no vectors")
    return EmbeddingSet.from_arrays(vectors, identities, names, metadata, source=str(path))


def _read_sidecar(path: Path) -> dict:
    sidecar = path.with_name(path.name + ".meta.json")
    if not sidecar.is_file():
        return {}
    metadata = read_json(sidecar)
    if not isinstance(metadata, dict):
        raise FaceauditError(f"{sidecar}: expected a JSON object, got {type(metadata).__name__}")
    return metadata


def _first_char(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]


def _load_jsonl(path: Path, skip_invalid: bool, expected_dim: int | None) -> EmbeddingSet:
    if _first_char(path) == b"[":
        return _load_json_array(path, skip_invalid, expected_dim)
    results, vectors = parse_file(path, path.stat().st_size, expected_dim, skip_invalid)
    offset, skipped = 0, []
    for result in results:
        if result["error"] is not None:
            number, reason = result["error"]
            raise FaceauditError(f"{path}:{offset + number + 1}: {reason}")
        skipped += [offset + n + 1 for n in result["skipped"]]
        offset += result["lines"]
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"{path}: skipped {len(skipped)} invalid line(s) (line {shown})", FaceauditWarning, stacklevel=3)
    if not len(vectors):
        raise FaceauditError(f"{path}: no embeddings found" + (" (every line was invalid)" if skipped else ""))
    identities = results[0]["ids"] + results[1]["ids"] if len(results) > 1 else results[0]["ids"]
    names = results[0]["names"] + results[1]["names"] if len(results) > 1 else results[0]["names"]
    unit_rows(vectors, str(path), lambda row: f"line {_line_of_row(path, row, set(skipped))}")
    return EmbeddingSet(vectors, identities, names, _read_sidecar(path))


def _line_of_row(path: Path, row: int, skipped: set[int]) -> int:
    """The line number of data row ``row`` (blank and skipped lines hold no row); for error messages."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip() and number not in skipped:
                if row == 0:
                    return number
                row -= 1
    return -1


def _load_json_array(path: Path, skip_invalid: bool, expected_dim: int | None) -> EmbeddingSet:
    records = read_json(path, "a JSON array of embedding records")
    if not isinstance(records, list):
        raise FaceauditError(f"{path}: expected a JSON array of records")
    ids, names, rows, skipped = [], [], [], 0
    dim = expected_dim or _common_length(records)  # so that an odd first record is the one blamed
    for index, record in enumerate(records):
        try:
            identity, name, array = check_record(record, dim)
        except BadRecord as exc:
            if not skip_invalid:
                raise FaceauditError(f"{path}: record {index + 1}: {exc}") from None
            skipped += 1
            continue
        dim = dim or array.size
        ids.append(identity)
        names.append(name)
        rows.append(array)
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} invalid record(s)", FaceauditWarning, stacklevel=3)
    if not rows:
        raise FaceauditError(f"{path}: no embeddings found")
    return EmbeddingSet.from_arrays(np.asarray(rows), ids, names, _read_sidecar(path), source=str(path))


def _common_length(records: list) -> int | None:
    """The most common length of the records' 'embedding' lists (ties: the first seen)."""
    lengths = [len(r["embedding"]) for r in records
               if isinstance(r, dict) and isinstance(r.get("embedding"), list) and r["embedding"]]
    if not lengths:
        return None
    values, counts = np.unique(lengths, return_counts=True)
    return int(values[np.argmax(counts)]) if counts.max() > 1 else lengths[0]


def _warn_duplicates(eset: EmbeddingSet, path: Path) -> None:
    n = len(eset)
    if n < 2:
        return
    if eset.identities.dtype.kind == eset.image_names.dtype.kind == "U":
        # each row's (identity, image_name) as one fixed-width run of bytes: one sort finds the repeats
        rows = np.concatenate([np.ascontiguousarray(eset.identities).view(np.uint32).reshape(n, -1),
                               np.ascontiguousarray(eset.image_names).view(np.uint32).reshape(n, -1)], axis=1)
        keys = rows.view(np.dtype((np.void, rows.shape[1] * 4))).ravel()
    else:
        keys = np.strings.add(np.strings.add(eset.identities.astype(np.dtypes.StringDType()), "\x00"),
                              eset.image_names.astype(np.dtypes.StringDType()))
    unique, counts = np.unique(keys, return_counts=True)
    if len(unique) == n:
        return
    row = np.flatnonzero(keys == unique[np.argmax(counts > 1)])[0]
    warnings.warn(f"{path}: {n - len(unique)} duplicate (identity, image_name) pair(s), "
                  f"e.g. {eset.identities[row]}/{eset.image_names[row]}", FaceauditWarning, stacklevel=3)


def save_embeddings(eset: EmbeddingSet, path: str | os.PathLike, *, decimals: int | None = None) -> Path:
    """Write ``.json``/``.jsonl`` (paper format, plus a ``.meta.json`` sidecar) or ``.npz``, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == NPZ_SUFFIX:
        with atomic_write(path, "wb") as out:
            write_npz(out, eset.vectors, eset.identities, eset.image_names, eset.metadata)
        return path
    if suffix not in JSONL_SUFFIXES:
        raise FaceauditError(f"{path}: unsupported embedding file type {suffix!r} (use .json, .jsonl or .npz)")
    with atomic_write(path, "wb") as out:
        for start in range(0, len(eset), 4096):
            stop = start + 4096
            out.write(format_jsonl_lines(eset.identities[start:stop], eset.image_names[start:stop],
                                         eset.vectors[start:stop], decimals))
    sidecar = path.with_name(path.name + ".meta.json")
    if eset.metadata:
        with atomic_write(sidecar) as out:
            json.dump(eset.metadata, out, indent=2)
    else:  # an older file's metadata must not be read back as this one's
        sidecar.unlink(missing_ok=True)
    return path
