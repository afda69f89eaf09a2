"""Reading result folders for ``faceaudit paper``: the paper's published ``Best_Matches/``,
``Closest/``, ``CI/`` and mated scores, and the same kinds of files our own stages write.

Files are found by name in each folder and its direct sub-folders:
``<name>_BestMatches_<n>.csv`` (``faceaudit leakage``), ``<name>_Top<K>Global_<n>.json``
(``faceaudit closest``), the paper's ``eer_95.csv``/``fmr_95.csv``/``mean_95.csv``/``fdr_95.csv``,
``All_Datasets_metrics.csv`` (``faceaudit variability``) and ``<name>_mated_similarities.txt``.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.io.files import read_csv_table
from faceaudit.stages import variability
from faceaudit.stages.closest import read_closest_json
from faceaudit.stages.leakage import BEST_MATCH_COLUMNS

BEST_MATCHES_NAME = re.compile(r"^(?P<name>.+)_BestMatches_(?P<n>\d+)\.csv$")
CLOSEST_NAME = re.compile(r"^(?P<name>.+)_Top(?P<k>\d+)Global_(?P<n>\d+)\.json$")

#: the interval metrics: key, label, published file, its (point, lower, upper) columns
INTERVAL_METRICS = (
    ("eer", "EER", "eer_95.csv", ("EER", "CI_Lower", "CI_Upper")),
    ("fmr100", "FNMR at FMR 1% (pyeer's FMR100)", "fmr_95.csv",
     ("FMR100", "FMR100_CI_Lower", "FMR100_CI_Upper")),
    ("fmr1000", "FNMR at FMR 0.1% (pyeer's FMR1000)", "fmr_95.csv",
     ("FMR1000", "FMR1000_CI_Lower", "FMR1000_CI_Upper")),
    ("fdr", "FDR", "fdr_95.csv", ("FDR", "FDR_CI_Lower", "FDR_CI_Upper")),
    ("gmean", "Genuine mean", "mean_95.csv", ("Genuine_Mean", "Genuine_CI_Lower", "Genuine_CI_Upper")),
    ("imean", "Impostor mean", "mean_95.csv", ("Impostor_Mean", "Impostor_CI_Lower", "Impostor_CI_Upper")),
)
#: the published CI files and their columns, in order
PUBLISHED_CI_FILES = {
    "eer_95.csv": ("Dataset", "EER", "CI_Lower", "CI_Upper", "Margin"),
    "fmr_95.csv": ("Dataset", "FMR100", "FMR100_CI_Lower", "FMR100_CI_Upper", "FMR1000", "FMR1000_CI_Lower",
                   "FMR1000_CI_Upper"),
    "mean_95.csv": ("Dataset", "Genuine_Mean", "Genuine_CI_Lower", "Genuine_CI_Upper", "Impostor_Mean",
                    "Impostor_CI_Lower", "Impostor_CI_Upper"),
    "fdr_95.csv": ("Dataset", "FDR", "FDR_CI_Lower", "FDR_CI_Upper", "FDR_Margin"),
}
_OUR_METRIC_COLUMNS = {key: name for name, key in variability.CI_COLUMNS}


@dataclass
class BestMatchFile:
    """A ``Best_Matches`` CSV: row ``i`` is sampled image ``sample_index[i]`` and its best match."""

    path: Path
    n_in_name: int
    header: list[str]
    sample_index: np.ndarray  # int64
    scores: np.ndarray        # float64
    pairs: np.ndarray         # object (rows, 4): sample identity, sample image, match identity, match image


@dataclass
class ClosestFile:
    """A ``<name>_Top<K>Global_<n>.json`` document, with its results' scores as an array."""

    path: Path
    k_in_name: int
    n_in_name: int
    document: dict
    scores: np.ndarray = field(init=False)

    def __post_init__(self):
        try:
            self.scores = np.array([float(r["similarity_score"]) for r in self.document["results"]])
        except (KeyError, TypeError, ValueError):
            raise FaceauditError(f"{self.path}: every result needs a numeric similarity_score") from None
        if not np.isfinite(self.scores).all():
            raise FaceauditError(f"{self.path}: similarity scores must be finite")

    @property
    def reference_identities(self) -> set[str]:
        return {str(r.get("casia_identity", str(r["casia_path"]).split("/")[0])) for r in self.document["results"]}


@dataclass
class Interval:
    point: float
    lower: float
    upper: float
    path: Path


@dataclass
class IntervalFile:
    """A table of intervals (a published ``CI/*_95.csv`` or our ``All_Datasets_metrics.csv``)."""

    path: Path
    header: list[str]
    expected: tuple[str, ...]  # the columns it must have, in order for published files
    rows: dict[str, dict[str, Interval]]  # dataset -> metric key -> interval


@dataclass
class DatasetResults:
    """Everything found about one dataset, in one input folder."""

    name: str
    folder: str  # the input folder's label
    best: BestMatchFile | None = None
    closest: ClosestFile | None = None
    intervals: dict[str, Interval] = field(default_factory=dict)
    mated: Path | None = None


@dataclass
class Results:
    """The datasets of every input folder (names made unique), and the interval files read."""

    datasets: dict[str, DatasetResults]
    interval_files: list[IntervalFile]
    folders: list[tuple[str, Path]]


# ---------------------------------------------------------------- single files

def _numbers(path: Path, columns: dict[str, list[str]], column: str, dtype=np.float64, *,
             blank_is_nan: bool = False, finite: bool = True) -> np.ndarray:
    """A column as numbers. A cell that is not a number (an integer for int dtypes; finite unless
    ``finite=False``; blank allowed, as NaN, with ``blank_is_nan``) is an error naming the file,
    line and column."""
    values = [v if v.strip() or not blank_is_nan else "nan" for v in columns[column]]
    integer = np.issubdtype(dtype, np.integer)
    try:
        out = np.array(values, dtype=np.float64)
    except ValueError:
        out = None
    if out is not None:
        ok = np.isfinite(out) | (np.isnan(out) if blank_is_nan else False) | (np.isinf(out) if not finite else False)
        if ok.all() and (not integer or (out == np.round(out)).all()):
            return out.astype(dtype)
    for line, (value, cell) in enumerate(zip(values, columns[column]), 2):  # only on error: name the line
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is None or (math.isnan(number) and cell.strip()) or (math.isinf(number) and finite) \
                or (integer and number != round(number)):
            raise FaceauditError(f"{path}:{line}: {column} is {cell!r}, not a "
                                 f"{'finite ' if finite else ''}{'integer' if integer else 'number'}")
    raise FaceauditError(f"{path}: unreadable {column} column")


def read_best_matches(path: str | os.PathLike) -> BestMatchFile:
    path = Path(path)
    match = BEST_MATCHES_NAME.match(path.name)
    if not match:
        raise FaceauditError(f"{path}: not named <dataset>_BestMatches_<n>.csv")
    header, columns = read_csv_table(path, BEST_MATCH_COLUMNS)
    if not columns["similarity"]:
        raise FaceauditError(f"{path}: no rows")
    pairs = np.array([columns[c] for c in ("sample_identity", "sample_image_name", "best_match_identity",
                                           "best_match_image_name")], dtype=object).T
    return BestMatchFile(path, int(match["n"]), header, _numbers(path, columns, "sample_index", np.int64),
                         _numbers(path, columns, "similarity"), pairs)


def read_closest(path: str | os.PathLike) -> ClosestFile:
    path = Path(path)
    match = CLOSEST_NAME.match(path.name)
    if not match:
        raise FaceauditError(f"{path}: not named <dataset>_Top<K>Global_<n>.json")
    document = read_closest_json(path)
    if not isinstance(document.get("metadata"), dict):
        raise FaceauditError(f"{path}: expected a 'metadata' object")
    return ClosestFile(path, int(match["k"]), int(match["n"]), document)


def _interval_rows(path: Path, table: dict[str, list[str]], metrics: dict[str, tuple[str, str, str]],
                   ours: bool) -> dict[str, dict[str, Interval]]:
    """dataset -> metric -> Interval. ``ours``: a blank bound (no bootstrap) is NaN, and an infinite
    value (FDR when both score spreads are 0) is kept."""
    names = table["Dataset"]
    if len(set(names)) != len(names):
        raise FaceauditError(f"{path}: a dataset appears twice in the Dataset column")
    rows: dict[str, dict[str, Interval]] = {}
    for key, (point, lower, upper) in metrics.items():
        points, *bounds = (_numbers(path, table, column, blank_is_nan=ours and column != point,
                                    finite=not ours) for column in (point, lower, upper))
        for name, p, lo, hi in zip(names, points.tolist(), bounds[0].tolist(), bounds[1].tolist()):
            rows.setdefault(name, {})[key] = Interval(p, lo, hi, path)
    return rows


def read_published_ci(path: str | os.PathLike) -> IntervalFile:
    """One of the paper's ``CI/*_95.csv`` tables."""
    path = Path(path)
    expected = PUBLISHED_CI_FILES.get(path.name)
    if expected is None:
        raise FaceauditError(f"{path}: not one of the paper's CI files ({', '.join(PUBLISHED_CI_FILES)})")
    metrics = {key: cols for key, _, name, cols in INTERVAL_METRICS if name == path.name}
    header, table = read_csv_table(path, ["Dataset", *(c for cols in metrics.values() for c in cols)])
    return IntervalFile(path, header, expected, _interval_rows(path, table, metrics, False))


def read_metrics_csv(path: str | os.PathLike) -> IntervalFile:
    """Our ``Metrics/All_Datasets_metrics.csv`` (``faceaudit variability``); blank bounds: no bootstrap."""
    path = Path(path)
    metrics = {key: (_OUR_METRIC_COLUMNS[key], f"{_OUR_METRIC_COLUMNS[key]} CI Lower",
                     f"{_OUR_METRIC_COLUMNS[key]} CI Upper") for key, *_ in INTERVAL_METRICS}
    header, table = read_csv_table(path, ["Dataset", *(c for cols in metrics.values() for c in cols)])
    return IntervalFile(path, header, tuple(variability.CSV_COLUMNS), _interval_rows(path, table, metrics, True))


# ---------------------------------------------------------------- folders

def _candidates(folder: Path, skip: set[Path]) -> list[Path]:
    """Files of ``folder`` and of its direct, non-hidden sub-folders (except ``skip``), sorted."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            found.append(entry)
        elif entry.is_dir() and entry.resolve() not in skip:
            found += sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
    return found


def read_folder(folder: str | os.PathLike, label: str, skip: set[Path] = frozenset()) -> tuple[
        dict[str, DatasetResults], list[IntervalFile]]:
    """Every result file of one input folder, grouped by dataset name."""
    folder = Path(folder)
    datasets: dict[str, DatasetResults] = {}
    interval_files: list[IntervalFile] = []

    def entry(name: str) -> DatasetResults:
        return datasets.setdefault(name, DatasetResults(name, label))

    def put(name: str, attribute: str, value) -> None:
        item = entry(name)
        old = getattr(item, attribute)
        if old is not None:
            old_path = old if isinstance(old, Path) else old.path
            new_path = value if isinstance(value, Path) else value.path
            raise FaceauditError(f"{new_path}: a second {attribute} file for {name} (the first is {old_path}); "
                                 "keep one per folder")
        setattr(item, attribute, value)

    for path in _candidates(folder, set(skip)):
        if match := BEST_MATCHES_NAME.match(path.name):
            put(match["name"], "best", read_best_matches(path))
        elif match := CLOSEST_NAME.match(path.name):
            put(match["name"], "closest", read_closest(path))
        elif (name := path.name.removesuffix(variability.MATED_SUFFIX)) not in ("", path.name) \
                and not path.name.endswith(variability.NON_MATED_SUFFIX):
            put(name, "mated", path)
        elif path.name in PUBLISHED_CI_FILES:
            interval_files.append(read_published_ci(path))
        elif path.name == variability.CSV_NAME:
            interval_files.append(read_metrics_csv(path))
    for table in interval_files:
        for name, metrics in table.rows.items():
            for key, interval in metrics.items():
                if key in entry(name).intervals:
                    raise FaceauditError(f"{interval.path}: {name}'s {key} is also in "
                                         f"{entry(name).intervals[key].path}; keep one per folder")
                entry(name).intervals[key] = interval
    return datasets, interval_files


def read_folders(folders, skip: set[Path] = frozenset()) -> Results:
    """Every folder's results together. A dataset name found in two folders gets the later
    folder's name in brackets, e.g. ``DCFace [my_run]``, so both stay in the figures."""
    resolved = [Path(f).resolve() for f in folders]
    if not folders:
        raise FaceauditError("no result folder given")
    for folder, path in zip(folders, resolved):
        if not path.is_dir():
            raise FaceauditError(f"{folder}: result folder not found")
    if len(set(resolved)) != len(resolved):
        raise FaceauditError("the same result folder is given twice")
    datasets: dict[str, DatasetResults] = {}
    interval_files: list[IntervalFile] = []
    labels = []
    for folder, path in zip(folders, resolved):
        label = path.name or str(path)
        labels.append((label, Path(folder)))
        found, tables = read_folder(folder, label, skip)
        if not found:
            raise FaceauditError(f"{folder}: no Best_Matches, Top-K, CI, metrics or mated-score files in it or "
                                 "its sub-folders")
        for name, item in found.items():
            unique = name if name not in datasets else f"{name} [{label}]"
            if unique in datasets:
                raise FaceauditError(f"{folder}: dataset {name} is already read from a folder named {label}")
            item.name = unique
            datasets[unique] = item
        interval_files += tables
    return Results(datasets, interval_files, labels)


def source_name(path: Path, results: Results) -> str:
    """``path`` as '<folder label>/<path inside it>' for the pages' "source" notes."""
    resolved = path.resolve()
    for label, folder in results.folders:
        try:
            return f"{label}/{resolved.relative_to(folder.resolve()).as_posix()}"
        except ValueError:
            continue
    return str(path)
