"""Small file helpers shared by every stage: atomic writes, score files, JSON, CSV."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from faceaudit.errors import FaceauditError

_NON_BLANK_LINE = re.compile(r"^[ \t]*\S", re.MULTILINE)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs):
    """Write to a temporary file beside ``path`` and rename it into place on success.

    An OS error (a full disk, a permission, a folder in the way) becomes a one-line
    :class:`FaceauditError` naming ``path``; the temporary file is removed.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise FaceauditError(f"{path}: is a folder, not a file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FaceauditError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise FaceauditError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_text(path: str | os.PathLike, what: str = "a UTF-8 text file") -> str:
    """The text of ``path`` as UTF-8, a leading byte-order mark removed.

    Bytes that are not UTF-8 are an error naming the file and the first bad line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FaceauditError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FaceauditError(f"{path}:{line}: not {what} (byte 0x{data[exc.start]:02x} is not UTF-8)") from None


def read_json(path: str | os.PathLike, what: str = "JSON"):
    """A JSON document (UTF-8, BOM allowed); invalid JSON is an error naming the file, line and column."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FaceauditError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None


def write_scores(path: str | os.PathLike, scores: np.ndarray, decimals: int | None = None) -> Path:
    """One score a line: full precision (``repr`` round-trips float64 exactly), or ``decimals``
    fixed digits as the paper's CASIA SimilarityScores files."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    text = repr if decimals is None else f"{{:.{int(decimals)}f}}".format
    with atomic_write(path) as out:
        if scores.size:
            out.write("\n".join(map(text, scores.tolist())))
            out.write("\n")
    return Path(path)


def read_scores(path: str | os.PathLike) -> np.ndarray:
    """Read a one-score-a-line file (blank lines ignored) as float64.

    A missing or empty file, a line that is not exactly one number, or a NaN/inf score is an
    error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"{path}: score file not found")
    text = read_text(path, "a text file of scores")
    tokens = text.split()
    if not tokens:
        raise FaceauditError(f"{path}: score file is empty")
    scores = None
    if len(tokens) == len(_NON_BLANK_LINE.findall(text)):  # one token a line
        try:
            scores = np.array(tokens, dtype=np.float64)
        except ValueError:
            pass
    if scores is not None and np.isfinite(scores).all():
        return scores
    for number, line in enumerate(text.splitlines(), 1):  # only on error: find the line to name
        if not line.strip():
            continue
        try:
            value = float(line)
        except ValueError:
            raise FaceauditError(f"{path}:{number}: not one number: {line.strip()[:60]!r}") from None
        if not np.isfinite(value):
            raise FaceauditError(f"{path}:{number}: score is {line.strip()}; scores must be finite")
    raise FaceauditError(f"{path}: unreadable scores")


def jsonable(obj):
    """``obj`` with numpy scalars as Python numbers and inf/NaN as None (JSON has neither)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # e.g. FDR is inf when both spreads are 0
    return obj


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


def _checked_header(path: Path, header: Sequence[str], required: Sequence[str]) -> list[str]:
    columns = [c.strip() for c in header]
    missing = [c for c in required if c not in columns]
    if missing:
        raise FaceauditError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
    return columns


def _csv_file(path: Path) -> io.StringIO:
    """The CSV's text (UTF-8, a BOM removed, bad bytes named by line) as a file for ``csv``."""
    if not path.is_file():
        raise FaceauditError(f"{path}: CSV file not found")
    return io.StringIO(read_text(path, "a CSV file"), newline="")


def read_csv_columns(path: str | os.PathLike, required: Sequence[str]) -> list[dict]:
    """Rows of a CSV as dicts; a missing column is an error naming the file and column."""
    path = Path(path)
    with _csv_file(path) as handle:
        reader = csv.DictReader(handle)
        try:
            _checked_header(path, reader.fieldnames or [], required)
            return [{k.strip(): v for k, v in row.items() if k is not None} for row in reader]
        except csv.Error as exc:
            raise FaceauditError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def read_csv_table(path: str | os.PathLike, required: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """A CSV as (header, column -> its cells), several times faster than :func:`read_csv_columns`
    on large files. Blank lines are skipped; short rows are padded with ''; a missing column is an
    error naming the file and column."""
    path = Path(path)
    with _csv_file(path) as handle:
        reader = csv.reader(handle)
        try:
            header = _checked_header(path, next(reader, []), required)
            rows = [row for row in reader if row]
        except csv.Error as exc:
            raise FaceauditError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    width = len(header)
    cells = list(zip(*(row if len(row) == width else (row + [""] * width)[:width] for row in rows)))
    return header, {name: list(cells[i]) if cells else [] for i, name in enumerate(header)}
