"""Small file helpers shared by every stage: atomic writes, score files, JSON, CSV."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from faceaudit.errors import FaceauditError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs):
    """Write to a temporary file beside ``path`` and rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_scores(path: str | os.PathLike, scores: np.ndarray) -> Path:
    """One full-precision float a line (``repr`` round-trips float64 exactly)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    with atomic_write(path) as out:
        if scores.size:
            out.write("\n".join(map(repr, scores.tolist())))
            out.write("\n")
    return Path(path)


def read_scores(path: str | os.PathLike) -> np.ndarray:
    """Read a one-score-a-line file; an empty or malformed file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"{path}: score file not found")
    text = path.read_text()
    lines = text.split()
    if not lines:
        raise FaceauditError(f"{path}: score file is empty")
    try:
        return np.array(lines, dtype=np.float64)
    except ValueError:
        for number, line in enumerate(text.splitlines(), 1):
            try:
                float(line)
            except ValueError:
                if line.strip():
                    raise FaceauditError(f"{path}:{number}: not a number: {line.strip()[:60]!r}") from None
        raise


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    with atomic_write(path) as out:
        json.dump(obj, out, indent=indent, allow_nan=False)
        out.write("\n")
    return Path(path)


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    with atomic_write(path, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def read_csv_columns(path: str | os.PathLike, required: Sequence[str]) -> list[dict]:
    """Rows of a CSV as dicts; a missing column is an error naming the file and column."""
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"{path}: CSV file not found")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise FaceauditError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
        return [{k.strip(): v for k, v in row.items() if k is not None} for row in reader]
