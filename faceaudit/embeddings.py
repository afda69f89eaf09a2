"""EmbeddingSet: the one currency of faceaudit, and its files.

Formats:

- the paper's JSON Lines (``.json`` or ``.jsonl``): one
  ``{"identity": str, "image_name": str, "embedding": [floats]}`` per line,
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
from typing import Iterator, Sequence

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write

try:  # orjson parses the paper's lines about 5x faster than json
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without the optional extra
    _orjson = None

JSONL_SUFFIXES = (".json", ".jsonl")
NPZ_SUFFIX = ".npz"
_BLOCK_LINES = 512


class FaceauditWarning(UserWarning):
    """Something worth telling the user that does not stop the run."""


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

    def identity_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(code per row, sorted unique identities): ``identities == uniques[codes]``."""
        uniques, codes = np.unique(self.identities, return_inverse=True)
        return codes.astype(np.int64), uniques

    def paths(self, indices=None) -> np.ndarray:
        """``identity/image_name`` of the given rows (all rows by default)."""
        ids = self.identities if indices is None else self.identities[indices]
        names = self.image_names if indices is None else self.image_names[indices]
        return np.char.add(np.char.add(ids, "/"), names)


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
    if len(vectors) == 0:
        raise FaceauditError(f"{path}: embedding file holds no vectors")
    return EmbeddingSet.from_arrays(vectors, identities, names, metadata, source=str(path))


def _read_sidecar(path: Path) -> dict:
    sidecar = path.with_name(path.name + ".meta.json")
    if not sidecar.is_file():
        return {}
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise FaceauditError(f"{sidecar}: invalid JSON ({exc})") from None


def _first_char(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
    return head[:1]


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _loads(line: bytes):
    return _orjson.loads(line) if _orjson is not None else json.loads(line)


def _parse_record(path: Path, number: int, line: bytes, dim: int | None):
    """Parse and check one line; raise FaceauditError naming file and line."""
    where = f"{path}:{number}"
    try:
        record = _loads(line)
    except ValueError as exc:
        raise FaceauditError(f"{where}: malformed JSON ({exc})") from None
    if not isinstance(record, dict):
        raise FaceauditError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("identity", "image_name", "embedding"):
        if key not in record:
            raise FaceauditError(f"{where}: missing key {key!r}")
    vector = record["embedding"]
    if not isinstance(vector, list) or not vector:
        raise FaceauditError(f"{where}: 'embedding' must be a non-empty list of numbers")
    try:
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise FaceauditError(f"{where}: 'embedding' holds a non-number") from None
    if array.ndim != 1:
        raise FaceauditError(f"{where}: 'embedding' must be a flat list of numbers")
    if dim is not None and array.size != dim:
        raise FaceauditError(f"{where}: embedding has length {array.size}, expected {dim}")
    if not np.isfinite(array).all():
        raise FaceauditError(f"{where}: embedding has NaN or infinite values")
    if not np.any(array):
        raise FaceauditError(f"{where}: embedding is an all-zero vector")
    return str(record["identity"]), str(record["image_name"]), array


def _iter_line_blocks(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(first line number, lines) in blocks, blank lines kept so numbering stays true."""
    with open(path, "rb") as handle:
        number = 1
        block: list[bytes] = []
        for line in handle:
            block.append(line)
            if len(block) == _BLOCK_LINES:
                yield number, block
                number += len(block)
                block = []
        if block:
            yield number, block


def _load_jsonl(path: Path, skip_invalid: bool, expected_dim: int | None) -> EmbeddingSet:
    if _first_char(path) == b"[":
        return _load_json_array(path, skip_invalid, expected_dim)
    capacity = _count_lines(path)
    vectors: np.ndarray | None = None
    identities: list[str] = []
    names: list[str] = []
    dim = expected_dim
    skipped: list[int] = []
    row = 0
    for first, block in _iter_line_blocks(path):
        parsed = _fast_block(block, dim)
        if parsed is not None and vectors is not None:
            try:
                vectors[row:row + len(parsed[0])] = parsed[2]
            except (ValueError, TypeError):  # a non-number inside a list
                parsed = None
        if parsed is None:  # find and report (or skip) the bad line(s)
            parsed = _slow_block(path, first, block, dim, skip_invalid, skipped)
            if vectors is not None and parsed[0]:
                vectors[row:row + len(parsed[0])] = parsed[2]
        block_ids, block_names, block_vectors = parsed
        if not block_ids:
            continue
        if vectors is None:
            dim = len(block_vectors[0])
            vectors = np.empty((capacity, dim), dtype=np.float32)
            vectors[:len(block_ids)] = block_vectors
        stop = row + len(block_ids)
        _check_rows(path, vectors[row:stop], row)
        row = stop
        identities.extend(block_ids)
        names.extend(block_names)
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"{path}: skipped {len(skipped)} invalid line(s) (line {shown})", FaceauditWarning, stacklevel=3)
    if row == 0:
        raise FaceauditError(f"{path}: no embeddings found" + (" (every line was invalid)" if skipped else ""))
    vectors = vectors[:row]
    return EmbeddingSet(_normalize_inplace(vectors), identities, names, _read_sidecar(path))


def _slow_block(path: Path, first: int, block: list[bytes], dim: int | None, skip_invalid: bool,
                skipped: list[int]):
    ids, names, rows = [], [], []
    for offset, line in enumerate(block):
        if not line.strip():
            continue
        try:
            identity, name, array = _parse_record(path, first + offset, line, dim)
        except FaceauditError:
            if not skip_invalid:
                raise
            skipped.append(first + offset)
            continue
        dim = dim or array.size
        ids.append(identity)
        names.append(name)
        rows.append(array)
    return ids, names, rows


def _check_rows(path: Path, rows: np.ndarray, offset: int) -> None:
    good = np.isfinite(rows).all(axis=1) & rows.any(axis=1)
    if not good.all():
        bad = offset + int(np.argmin(good)) + 1
        raise FaceauditError(f"{path}: embedding {bad} has NaN, infinite or all-zero values")


def _normalize_inplace(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    vectors /= norms[:, None]
    return vectors


def _fast_block(block: list[bytes], dim: int | None):
    """Parse a block of well-formed lines in one go; None if any line is off."""
    try:
        records = [_loads(line) for line in block]
        ids = [r["identity"] for r in records]
        names = [r["image_name"] for r in records]
        vectors = [r["embedding"] for r in records]
    except (ValueError, KeyError, TypeError):
        return None
    want = dim or (len(vectors[0]) if isinstance(vectors[0], list) else 0)
    if not want or any(not isinstance(v, list) or len(v) != want for v in vectors):
        return None
    if not all(isinstance(s, str) for s in ids) or not all(isinstance(s, str) for s in names):
        return None
    return ids, names, vectors


def _load_json_array(path: Path, skip_invalid: bool, expected_dim: int | None) -> EmbeddingSet:
    try:
        records = _loads(path.read_bytes())
    except ValueError as exc:
        raise FaceauditError(f"{path}: malformed JSON ({exc})") from None
    ids, names, rows, skipped = [], [], [], 0
    dim = expected_dim
    for index, record in enumerate(records):
        try:
            line = json.dumps(record).encode()
            identity, name, array = _parse_record(path, index + 1, line, dim)
        except FaceauditError as exc:
            if not skip_invalid:
                raise FaceauditError(str(exc).replace(f"{path}:{index + 1}:", f"{path}: record {index + 1}:")) from None
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
    keys = set(zip(eset.identities.tolist(), eset.image_names.tolist()))
    if len(keys) == len(eset):
        return
    seen, example = set(), None
    for key in zip(eset.identities.tolist(), eset.image_names.tolist()):
        if key in seen:
            example = key
            break
        seen.add(key)
    warnings.warn(f"{path}: {len(eset) - len(keys)} duplicate (identity, image_name) pair(s), "
                  f"e.g. {example[0]}/{example[1]}", FaceauditWarning, stacklevel=3)


# ---------------------------------------------------------------- writing

def format_jsonl_line(identity: str, image_name: str, vector: np.ndarray, decimals: int | None = 5) -> bytes:
    """One paper-format line, newline included.

    With ``decimals`` the values are rounded in float64, so they print short
    (``-7e-05``, not ``-7.000000186963007e-05``); with None, float32 values are
    written in their shortest round-tripping form.
    """
    return format_jsonl_lines([identity], [image_name], np.asarray(vector)[None, :], decimals)


def format_jsonl_lines(identities: Sequence[str], image_names: Sequence[str], vectors: np.ndarray,
                       decimals: int | None = 5) -> bytes:
    """Many paper-format lines at once (see ``format_jsonl_line``)."""
    vectors = np.asarray(vectors)
    if decimals is not None:
        values = np.round(vectors.astype(np.float64), decimals).tolist()
    elif _orjson is not None:
        values = list(vectors.astype(np.float32))
    else:
        values = vectors.astype(np.float32).astype(np.float64).tolist()
    parts = []
    for identity, name, vector in zip(identities, image_names, values):
        record = {"identity": str(identity), "image_name": str(name), "embedding": vector}
        if _orjson is not None:
            parts.append(_orjson.dumps(record, option=_orjson.OPT_SERIALIZE_NUMPY))
        else:
            parts.append(json.dumps(record, separators=(", ", ": ")).encode())
    return b"".join(part + b"\n" for part in parts)


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
    if eset.metadata:
        with atomic_write(path.with_name(path.name + ".meta.json")) as out:
            json.dump(eset.metadata, out, indent=2)
    return path
