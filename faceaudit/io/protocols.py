"""Verification pair protocols: LFW's ``pairs.txt`` and CSV pair lists, parsed with their line numbers,
and resolved to rows of an :class:`~faceaudit.io.embeddings.EmbeddingSet`.

- LFW ``pairs.txt``: a header ``FOLDS PAIRS`` (View 2, e.g. ``10 300``) or ``PAIRS`` (View 1), then per
  fold ``PAIRS`` matched lines ``name n1 n2`` and ``PAIRS`` mismatched lines ``name1 n1 name2 n2``;
  image ``name n`` is ``name/name_NNNN.jpg`` (LFW's names, matched with or without extension).
- CSV: ``path1,path2,label`` (``identity/image`` paths; deeper paths use their last two parts) or
  ``identity1,image1,identity2,image2,label``, either with a trailing ``fold`` column, and an optional
  header naming those columns. Labels are 1/0 or true/false (1: same person).

An image in a protocol matches an embedding of the same identity whose ``image_name`` equals it, or
equals it once the embedding's extension is dropped.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.io.embeddings import EmbeddingSet
from faceaudit.io.files import read_text

LABELS = {"1": True, "0": False, "true": True, "false": False}
PATH_COLUMNS = ("path1", "path2", "label")
NAME_COLUMNS = ("identity1", "image1", "identity2", "image2", "label")
SHOWN_MISSING = 5


@dataclass
class PairList:
    """The pairs of a protocol file, one entry per pair, in file order."""

    source: str
    kind: str                  # "lfw" or "csv"
    identity1: np.ndarray      # str
    image1: np.ndarray
    identity2: np.ndarray
    image2: np.ndarray
    mated: np.ndarray          # bool: the same person
    lines: np.ndarray          # int: the line each pair is on
    folds: np.ndarray | None   # int fold of each pair (0-based), or None when the file has none

    def __len__(self) -> int:
        return len(self.mated)


def read_pair_protocol(path: str | os.PathLike) -> PairList:
    """An LFW ``pairs.txt`` (its first line is one or two integers) or a CSV pair list."""
    path = Path(path)
    text = _read_text(path)
    first = next((line.split() for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise FaceauditError(f"{path}: pairs file is empty")
    if 1 <= len(first) <= 2 and all(token.isdigit() for token in first):
        pairs = _parse_lfw(path, text)
    else:
        pairs = _parse_csv(path, text)
    _check_classes(pairs)
    return pairs


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FaceauditError(f"{path}: pairs file not found")
    return read_text(path, "a text file of pairs")


def _check_classes(pairs: PairList) -> None:
    n_mated = int(pairs.mated.sum())
    if n_mated == 0 or n_mated == len(pairs):
        kind = "mated (same person)" if n_mated else "non-mated (different people)"
        raise FaceauditError(f"{pairs.source}: holds only {kind} pairs; verification needs both kinds")


# ---------------------------------------------------------------- LFW pairs.txt

def _parse_lfw(path: Path, text: str) -> PairList:
    rows = [(number, line.split()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    (header_line, header), body = rows[0], rows[1:]
    n_folds, per = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    if n_folds <= 0 or per <= 0:
        raise FaceauditError(f"{path}:{header_line}: the header must give positive counts, got {' '.join(header)}")
    expected = 2 * n_folds * per
    out = {key: [] for key in ("identity1", "image1", "identity2", "image2")}
    for index, (number, tokens) in enumerate(body[:expected]):
        mated = index % (2 * per) < per
        if mated and len(tokens) == 3:
            name1, n1, name2, n2 = tokens[0], tokens[1], tokens[0], tokens[2]
        elif not mated and len(tokens) == 4:
            name1, n1, name2, n2 = tokens
        else:
            shape = "'name n1 n2' (a matched pair)" if mated else "'name1 n1 name2 n2' (a mismatched pair)"
            raise FaceauditError(f"{path}:{number}: expected {shape}, got {len(tokens)} field(s): "
                                 f"{' '.join(tokens)[:80]!r}")
        for name, n, side in ((name1, n1, "1"), (name2, n2, "2")):
            if not n.isdigit() or int(n) == 0:
                raise FaceauditError(f"{path}:{number}: image number {n!r} is not a positive integer")
            out["identity" + side].append(name)
            out["image" + side].append(f"{name}_{int(n):04d}")
    if len(body) != expected:
        where = f"{path}:{body[expected][0]}: more pair lines than" if len(body) > expected else \
            f"{path}: {len(body)} pair lines, fewer than"
        raise FaceauditError(f"{where} the header (line {header_line}) promises: {n_folds} fold(s) of "
                             f"{per} matched + {per} mismatched = {expected}")
    index = np.arange(expected)
    return PairList(str(path), "lfw", *(np.array(out[k], dtype=str) for k in out),
                    mated=index % (2 * per) < per, lines=np.array([n for n, _ in body], dtype=np.int64),
                    folds=index // (2 * per) if n_folds > 1 else None)


# ---------------------------------------------------------------- CSV

def _label(value: str) -> bool | None:
    return LABELS.get(value.strip().lower())


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, stripped cells) of each CSV record that is not blank; quoted cells may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    return [(reader.line_num, [cell.strip() for cell in row]) for row in reader if any(cell.strip() for cell in row)]


def _parse_csv(path: Path, text: str) -> PairList:
    rows = _csv_rows(text)
    columns = None
    first_number, first = rows[0]
    if len(first) in (3, 4, 5, 6) and _label(first[2 if len(first) < 5 else 4]) is None:
        columns = _header(path, first_number, first)
        rows = rows[1:]
    if not rows:
        raise FaceauditError(f"{path}: no pairs after the header")
    width = len(columns) if columns else len(rows[0][1])
    if width not in (3, 4, 5, 6):
        raise FaceauditError(f"{path}:{rows[0][0]}: expected path1,path2,label or identity1,image1,identity2,"
                             f"image2,label (each optionally followed by fold), got {width} columns")
    columns = columns or list((PATH_COLUMNS if width < 5 else NAME_COLUMNS) + (("fold",) if width in (4, 6) else ()))
    out = {key: [] for key in ("identity1", "image1", "identity2", "image2")}
    mated, folds, lines = [], [], []
    for number, cells in rows:
        if len(cells) != width:
            raise FaceauditError(f"{path}:{number}: expected {width} columns ({','.join(columns)}), got {len(cells)}")
        record = dict(zip(columns, cells))
        label = _label(record["label"])
        if label is None:
            raise FaceauditError(f"{path}:{number}: label {record['label']!r} is not 1/0 or true/false")
        if "path1" in record:
            record.update(_split_path(path, number, record["path1"], "1"))
            record.update(_split_path(path, number, record["path2"], "2"))
        for key in out:
            if not record[key]:
                raise FaceauditError(f"{path}:{number}: empty {key}")
            out[key].append(record[key])
        if "fold" in record:
            if not record["fold"].isdigit():
                raise FaceauditError(f"{path}:{number}: fold {record['fold']!r} is not a non-negative integer")
            folds.append(int(record["fold"]))
        mated.append(label)
        lines.append(number)
    fold_codes = np.unique(folds, return_inverse=True)[1].astype(np.int64) if "fold" in columns else None
    return PairList(str(path), "csv", *(np.array(out[k], dtype=str) for k in out),
                    mated=np.array(mated, dtype=bool), lines=np.array(lines, dtype=np.int64), folds=fold_codes)


def _header(path: Path, number: int, cells: list[str]) -> list[str]:
    names = [cell.lower() for cell in cells]
    for base in (PATH_COLUMNS, NAME_COLUMNS):
        if sorted(names) in (sorted(base), sorted(base + ("fold",))):
            return names
    raise FaceauditError(f"{path}:{number}: header {','.join(cells)!r} names unknown columns; use "
                         f"{','.join(PATH_COLUMNS)} or {','.join(NAME_COLUMNS)} (and optionally fold)")


def _split_path(path: Path, number: int, value: str, side: str) -> dict:
    parts = [p for p in value.replace("\\", "/").split("/") if p]
    if len(parts) < 2:
        raise FaceauditError(f"{path}:{number}: path{side} {value!r} has no identity folder (identity/image)")
    return {f"identity{side}": parts[-2], f"image{side}": parts[-1]}


# ---------------------------------------------------------------- resolving names to rows

def _keys(identities, images) -> np.ndarray:
    return np.char.add(np.char.add(np.asarray(identities, dtype=str), "\0"), np.asarray(images, dtype=str))


class _Index:
    """Sorted (identity, image) keys of an EmbeddingSet, by full image name and by name without extension."""

    def __init__(self, eset: EmbeddingSet):
        stems = np.array([os.path.splitext(name)[0] for name in eset.image_names.tolist()], dtype=str)
        self.tables = []
        for images in (eset.image_names, stems):
            keys, first = np.unique(_keys(eset.identities, images), return_index=True)
            self.tables.append((keys, first))

    def rows(self, identities, images) -> np.ndarray:
        """Row of each (identity, image), or -1 when absent."""
        query = _keys(identities, images)
        out = np.full(query.size, -1, dtype=np.int64)
        for keys, first in self.tables:
            todo = np.flatnonzero(out < 0)
            if not todo.size or not keys.size:
                break
            at = np.minimum(np.searchsorted(keys, query[todo]), keys.size - 1)
            hit = keys[at] == query[todo]
            out[todo[hit]] = first[at[hit]]
        return out


def resolve_pairs(pairs: PairList, eset: EmbeddingSet, skip_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(row pairs ``(m, 2)``, kept: bool per protocol pair) for the pairs whose two images are in ``eset``.

    A pair naming an image that is not there is an error listing the first few (file, line, image),
    or, with ``skip_missing``, left out (``kept`` is False) for the caller to count.
    """
    index = _Index(eset)
    rows = np.stack([index.rows(pairs.identity1, pairs.image1), index.rows(pairs.identity2, pairs.image2)], axis=1)
    kept = (rows >= 0).all(axis=1)
    if not kept.all() and not skip_missing:
        bad = np.flatnonzero(~kept)
        shown = []
        for i in bad[:SHOWN_MISSING]:
            side = "1" if rows[i, 0] < 0 else "2"
            identity, image = getattr(pairs, "identity" + side)[i], getattr(pairs, "image" + side)[i]
            shown.append(f"line {pairs.lines[i]}: {identity}/{image}")
        more = f" and {bad.size - SHOWN_MISSING} more" if bad.size > SHOWN_MISSING else ""
        raise FaceauditError(f"{pairs.source}: {bad.size} pair(s) name images not in "
                             f"{eset.metadata.get('source_file', 'the embeddings')} ({'; '.join(shown)}{more}); "
                             f"--skip-missing leaves them out")
    return rows[kept], kept


# ---------------------------------------------------------------- image pairs (faceaudit verify --pairs)

@dataclass
class ImagePairs:
    """Pairs of image files from a CSV ``image1,image2[,label]`` (optional header), with line numbers."""

    source: str
    path1: list[str]
    path2: list[str]
    lines: list[int]
    labels: list[bool] | None


def read_image_pairs(path: str | os.PathLike) -> ImagePairs:
    """A CSV of image file pairs: two columns, or three with a 1/0 (true/false) same-person label.

    A first row whose third cell is not a label, or whose cells name the columns
    (``image1,image2[,label]``), is a header.
    """
    path = Path(path)
    rows = _csv_rows(_read_text(path))
    if rows and [cell.lower() for cell in rows[0][1]][:2] in (["image1", "image2"], ["path1", "path2"]):
        rows = rows[1:]
    if not rows:
        raise FaceauditError(f"{path}: no image pairs")
    width = len(rows[0][1])
    if width not in (2, 3):
        raise FaceauditError(f"{path}:{rows[0][0]}: expected image1,image2 or image1,image2,label, got {width} columns")
    out = ImagePairs(str(path), [], [], [], [] if width == 3 else None)
    for number, cells in rows:
        if len(cells) != width:
            raise FaceauditError(f"{path}:{number}: expected {width} columns, got {len(cells)}")
        if not cells[0] or not cells[1]:
            raise FaceauditError(f"{path}:{number}: empty image path")
        if width == 3:
            label = _label(cells[2])
            if label is None:
                raise FaceauditError(f"{path}:{number}: label {cells[2]!r} is not 1/0 or true/false")
            out.labels.append(label)
        out.path1.append(cells[0])
        out.path2.append(cells[1])
        out.lines.append(number)
    return out
