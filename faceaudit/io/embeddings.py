"""EmbeddingSet: the one currency of faceaudit, and its files.

Formats:

- the paper's JSON Lines (``.json`` or ``.jsonl``, parsed by :mod:`faceaudit.io.jsonl`):
  one ``{"identity": str, "image_name": str, "embedding": [floats]}`` per line,
  with an optional ``<file>.meta.json`` sidecar holding the metadata;
  a file holding one JSON array of such objects is read too;
- ``.npz``: ``vectors`` (float32 N×D), ``identities``, ``image_names`` (unicode)
  and ``metadata`` (a JSON string). Read with ``allow_pickle=False``.
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
from faceaudit.io.files import atomic_write
from faceaudit.io.jsonl import BadRecord, check_record, format_jsonl_lines, loads, parse_file

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
        self.identities = np.asarray(self.identities, dtype=str)
        self.image_names = np.asarray(self.image_names, dtype=str)
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


def normalize(vectors: np.ndarray, source: str = "embeddings") -> np.ndarray:
    """Float32 unit rows; NaN/inf or all-zero rows are an error naming the first bad row."""
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise FaceauditError(f"{source}: embeddings must be a non-empty N×D array, got shape {vectors.shape}")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise FaceauditError(f"{source}: row {int(np.argmin(finite)) + 1} has NaN or infinite values")
    norms = np.linalg.norm(vectors.astype(np.float64, copy=False), axis=1)
    if (norms == 0).any():
        raise FaceauditError(f"{source}: row {int(np.argmin(norms != 0)) + 1} is an all-zero vector")
    return (vectors / norms[:, None]).astype(np.float32)


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
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("vectors", "identities", "image_names") if k not in data.files]
            if missing:
                raise FaceauditError(f"{path}: missing array(s) {', '.join(missing)}")
            vectors = data["vectors"]
            identities, names = data["identities"], data["image_names"]
            metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
    except FaceauditError:
        raise
    except Exception as exc:  # BadZipFile, pickled object arrays, truncated files
        raise FaceauditError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(metadata, dict):
        raise FaceauditError(f"{path}: 'metadata' must be a JSON object, got {type(metadata).__name__}")
    if len(vectors) == 0:
        raise FaceauditError(f"{path}: embedding file holds no vectors")
    return EmbeddingSet.from_arrays(vectors, identities, names, metadata, source=str(path))


def _read_sidecar(path: Path) -> dict:
    sidecar = path.with_name(path.name + ".meta.json")
    if not sidecar.is_file():
        return {}
    try:
        metadata = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise FaceauditError(f"{sidecar}: invalid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise FaceauditError(f"{sidecar}: expected a JSON object, got {type(metadata).__name__}")
    return metadata


def _first_char(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
    return head[:1]


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
    return EmbeddingSet(_normalize_inplace(vectors), identities, names, _read_sidecar(path))


def _normalize_inplace(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    vectors /= norms[:, None]
    return vectors


def _load_json_array(path: Path, skip_invalid: bool, expected_dim: int | None) -> EmbeddingSet:
    try:
        records = loads(path.read_bytes())
    except ValueError:
        try:
            records = json.loads(path.read_bytes())
        except ValueError as exc:
            raise FaceauditError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(records, list):
        raise FaceauditError(f"{path}: expected a JSON array of records")
    ids, names, rows, skipped = [], [], [], 0
    dim = expected_dim
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


def _warn_duplicates(eset: EmbeddingSet, path: Path) -> None:
    n = len(eset)
    if n < 2:
        return
    # each row's (identity, image_name) as one fixed-width run of bytes: one sort finds the repeats
    rows = np.concatenate([np.ascontiguousarray(eset.identities).view(np.uint32).reshape(n, -1),
                           np.ascontiguousarray(eset.image_names).view(np.uint32).reshape(n, -1)], axis=1)
    keys = rows.view(np.dtype((np.void, rows.shape[1] * 4))).ravel()
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
            np.savez(out, vectors=eset.vectors, identities=eset.identities, image_names=eset.image_names,
                     metadata=np.array(json.dumps(eset.metadata)))
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
