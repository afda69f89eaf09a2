"""Reference sets larger than RAM: unit vectors in memory-mapped ``.npy`` shards, with the identities
and image names beside them, read piece by piece instead of into memory.

A shard folder holds ``shards.json`` (the manifest) and, per shard, three ``.npy`` files written
by :func:`write_shards`: ``part-00000.npy`` (float32, rows x D, L2-normalised),
``part-00000.identities.npy`` and ``part-00000.image_names.npy`` (unicode, one per row)::

    {"format": "faceaudit-shards", "version": 1, "dim": 512, "metadata": {...},
     "shards": [{"vectors": "part-00000.npy", "identities": "part-00000.identities.npy",
                 "image_names": "part-00000.image_names.npy", "rows": 1000000}, ...]}

:func:`open_shards` maps every file (nothing is read until used) and checks the manifest, the
shapes and that every shard has the same dimension. Row ``i`` of the set is row ``i`` of the
concatenation of the shards in manifest order, so a shard folder written from an embedding file
gives the same indices (and the same search results) as the file itself.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.io.embeddings import EmbeddingSet, load_embeddings
from faceaudit.io.files import atomic_write, write_json

MANIFEST = "shards.json"
FORMAT = "faceaudit-shards"
DEFAULT_ROWS_PER_SHARD = 1 << 20
_NORM_TOLERANCE = 1e-3
_CHECK_ROWS = 1 << 16  # rows checked at a time


class RowArray:
    """The rows of several (memory-mapped) arrays as one read-only array.

    Indexing by an int, a slice or an integer array reads only those rows; :meth:`parts`
    gives the arrays themselves with their first row's index. It never turns into one
    in-memory array by accident: ``np.asarray`` on it is an error.
    """

    def __init__(self, arrays: list[np.ndarray], files: list[Path] | None = None):
        if not arrays:
            raise FaceauditError("a shard set needs at least one shard")
        self._arrays = arrays
        self._files = files or []
        self._offsets = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def shape(self) -> tuple:
        return (len(self),) + self._arrays[0].shape[1:]

    @property
    def dtype(self):
        return self._arrays[0].dtype

    @property
    def ndim(self) -> int:
        return self._arrays[0].ndim

    def parts(self) -> list[tuple[int, np.ndarray]]:
        """(index of its first row, array) for every shard, in order."""
        return [(int(o), a) for o, a in zip(self._offsets[:-1], self._arrays)]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            s = int(np.searchsorted(self._offsets, i, side="right")) - 1
            return self._arrays[s][i - self._offsets[s]]
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        rows = np.asarray(index, dtype=np.int64)
        flat = rows.ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"row indices out of range for {len(self)} rows")
        out = np.empty((flat.size,) + self.shape[1:], dtype=self._common_dtype())
        shard = np.searchsorted(self._offsets, flat, side="right") - 1
        for s in np.unique(shard):  # one fancy-index per shard touched, never per row
            hit = shard == s
            out[hit] = self._arrays[s][flat[hit] - self._offsets[s]]
        return out.reshape(rows.shape + self.shape[1:])

    def _common_dtype(self):
        return np.result_type(*[a.dtype for a in self._arrays])

    def __array__(self, dtype=None, copy=None):
        raise FaceauditError("a sharded array is memory-mapped: search it part by part (.parts()) "
                             "or index the rows you need")

    def __repr__(self) -> str:  # identifies the data for checkpoints: files, sizes, modification times
        stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in self._files]
        return f"RowArray(shape={self.shape}, dtype={self.dtype}, files={stats})"


@dataclass
class ShardSet:
    """A reference set on disk: what :class:`~faceaudit.io.embeddings.EmbeddingSet` offers for
    reading (``vectors``, ``identities``, ``image_names``, ``metadata``, ``len``, ``dim``), memory-mapped."""

    vectors: RowArray
    identities: RowArray
    image_names: RowArray
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def is_shard_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / MANIFEST).is_file() or (path.name == MANIFEST and path.is_file())


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise FaceauditError(f"{path}: shard file not found")
    try:
        # copy-on-write mapping: readable as a writable array (torch needs one), never written back
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except Exception as exc:  # truncated file, bad header, object arrays
        raise FaceauditError(f"{path}: not a readable .npy file of {what} ({exc})") from None


def open_shards(path: str | os.PathLike, check_norms: bool = True) -> ShardSet:
    """Map the shards of a folder written by :func:`write_shards` (nothing is read into memory).

    Every shard must be float32 rows x D with the manifest's D, and its label files one entry per
    row. ``check_norms`` streams through each shard once to make sure every row is finite and
    unit-norm (the search relies on it), reading ``1 << 16`` rows at a time.
    """
    path = Path(path)
    folder = path.parent if path.name == MANIFEST else path
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FaceauditError(f"{folder}: not a shard folder (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FaceauditError(f"{manifest_path}: invalid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("shards"), list):
        raise FaceauditError(f"{manifest_path}: expected a {FORMAT!r} manifest with a 'shards' list")
    if not manifest["shards"]:
        raise FaceauditError(f"{manifest_path}: the shard list is empty")
    vectors, identities, names, files = [], [], [], []
    dim = manifest.get("dim")
    for number, entry in enumerate(manifest["shards"]):
        keys = ("vectors", "identities", "image_names", "rows")
        if not isinstance(entry, dict) or any(k not in entry for k in keys):
            raise FaceauditError(f"{manifest_path}: shard {number} lacks one of {', '.join(keys)}")
        vec_path = folder / Path(entry["vectors"]).name  # names only: nothing outside the folder
        v = _load_npy(vec_path, "vectors")
        if v.dtype != np.float32 or v.ndim != 2 or not v.flags.c_contiguous:
            raise FaceauditError(f"{vec_path}: shard vectors must be a C-ordered float32 rows x D array, "
                                 f"got {v.dtype} {v.shape}")
        if dim is None:
            dim = v.shape[1]
        if v.shape[1] != dim:
            raise FaceauditError(f"{vec_path}: shard vectors have {v.shape[1]} dimensions but the set has {dim}; "
                                 "every shard must come from the same model")
        if len(v) != entry["rows"]:
            raise FaceauditError(f"{vec_path}: {len(v)} rows, the manifest says {entry['rows']}")
        for key, store in (("identities", identities), ("image_names", names)):
            label_path = folder / Path(entry[key]).name
            labels = _load_npy(label_path, key)
            if labels.dtype.kind != "U" or labels.shape != (len(v),):
                raise FaceauditError(f"{label_path}: expected {len(v)} unicode {key}, got {labels.dtype} {labels.shape}")
            store.append(labels)
        vectors.append(v)
        files.append(vec_path)
    shard_set = ShardSet(RowArray(vectors, files), RowArray(identities), RowArray(names),
                         dict(manifest.get("metadata") or {}), folder)
    shard_set.metadata.setdefault("source_file", str(folder))
    if check_norms:
        for vec_path, v in zip(files, vectors):
            _check_unit_rows(v, vec_path)
    return shard_set


def _check_unit_rows(vectors: np.ndarray, path: Path) -> None:
    for start in range(0, len(vectors), _CHECK_ROWS):
        block = np.asarray(vectors[start:start + _CHECK_ROWS])
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        bad = ~(np.abs(norms - 1) <= _NORM_TOLERANCE)  # NaN fails too
        if bad.any():
            row = start + int(np.argmax(bad))
            raise FaceauditError(f"{path}: row {row} has norm {norms[row - start]:.6g}; shard rows must be "
                                 "finite unit vectors (write shards with faceaudit shards)")


def load_reference_set(path: str | os.PathLike, *, skip_invalid: bool = False) -> EmbeddingSet | ShardSet:
    """A shard folder (memory-mapped) or an embedding file (read into memory)."""
    if is_shard_folder(path):
        return open_shards(path)
    return load_embeddings(path, skip_invalid=skip_invalid)


# ---------------------------------------------------------------- writing

def _shard_names(number: int) -> dict:
    stem = f"part-{number:05d}"
    return {"vectors": f"{stem}.npy", "identities": f"{stem}.identities.npy",
            "image_names": f"{stem}.image_names.npy"}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as out:
        np.save(out, array, allow_pickle=False)


def write_shards(sets: Iterable[EmbeddingSet], folder: str | os.PathLike, *,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, append: bool = False) -> Path:
    """Write the rows of ``sets`` (in order) as shards of ``rows_per_shard`` rows; returns the manifest.

    Each set is split across shards as needed, so only one set and one shard are in memory at a
    time. With ``append`` the rows are added after those of an existing shard folder (same
    dimension). The manifest is written last, so an interrupted run leaves the folder as it was.
    """
    if int(rows_per_shard) <= 0:
        raise FaceauditError(f"rows per shard must be > 0, got {rows_per_shard}")
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if manifest_path.exists() and not append:
        raise FaceauditError(f"{folder}: already holds shards; choose another folder or append to it")
    manifest = {"format": FORMAT, "version": 1, "dim": None, "metadata": {}, "shards": []}
    if append and manifest_path.exists():
        existing = open_shards(folder, check_norms=False)
        manifest.update(dim=existing.dim, metadata=existing.metadata,
                        shards=json.loads(manifest_path.read_text())["shards"])
    sources = list(manifest["metadata"].get("sources", []))
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (vectors, identities, image names)
    pending_rows = 0

    def flush(final: bool) -> None:
        """Write every full shard of the pending rows (and the rest too when ``final``)."""
        nonlocal pending, pending_rows
        vectors, ids, names = (np.concatenate(column) for column in zip(*pending))
        start = 0
        while len(vectors) - start >= rows_per_shard or (final and start < len(vectors)):
            stop = min(start + rows_per_shard, len(vectors))
            entry = _shard_names(len(manifest["shards"]))
            for key, column in (("vectors", vectors), ("identities", ids), ("image_names", names)):
                _save_npy(folder / entry[key], column[start:stop])
            manifest["shards"].append({**entry, "rows": int(stop - start)})
            start = stop
        pending = [(vectors[start:], ids[start:], names[start:])] if start < len(vectors) else []
        pending_rows = len(vectors) - start

    for eset in sets:
        if manifest["dim"] is None:
            manifest["dim"] = eset.dim
            manifest["metadata"] = {k: v for k, v in eset.metadata.items() if k != "source_file"}
        elif eset.dim != manifest["dim"]:
            source = eset.metadata.get("source_file", "embeddings")
            raise FaceauditError(f"{source}: vectors have {eset.dim} dimensions but the shards have "
                                 f"{manifest['dim']}; every shard must come from the same model")
        sources.append(str(eset.metadata.get("source_file", "")))
        pending.append((eset.vectors, eset.identities, eset.image_names))
        pending_rows += len(eset)
        if pending_rows >= rows_per_shard:
            flush(final=False)
    if pending:
        flush(final=True)
    if not manifest["shards"]:
        raise FaceauditError("no embeddings to write as shards")
    manifest["metadata"]["sources"] = sources
    write_json(manifest_path, manifest)
    return manifest_path
