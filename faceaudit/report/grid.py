"""The pairs figure: reference images on top, query images below, the similarity between them.

Images are read in place from folders or archives (:mod:`faceaudit.io.sources`), looked up by
relative path (with or without a top-level folder), else by unique file name. A missing or
unreadable image becomes an "Image not found" placeholder and a warning. The only file
written is the figure, inside the output folder.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.files import read_csv_columns

PAIR_COLUMNS = ("query_path", "casia_path", "similarity_score")
THUMBNAIL = (300, 300)


@dataclass
class Pair:
    query_path: str
    reference_path: str
    score: float


def read_pairs_csv(path: str | os.PathLike, samples: int | None = None) -> list[Pair]:
    """The first ``samples`` rows of a ``query_path,casia_path,similarity_score`` CSV."""
    if samples is not None and samples <= 0:
        raise FaceauditError(f"the number of samples must be > 0, got {samples}")
    rows = read_csv_columns(path, PAIR_COLUMNS)
    pairs = []
    for number, row in enumerate(rows, 2):
        if samples is not None and len(pairs) >= samples:
            break
        try:
            score = float(row["similarity_score"])
        except (TypeError, ValueError):
            raise FaceauditError(f"{path}:{number}: similarity_score {row['similarity_score']!r} is not a number") \
                from None
        pairs.append(Pair(str(row["query_path"]).strip('"'), str(row["casia_path"]).strip('"'), score))
    if not pairs:
        raise FaceauditError(f"{path}: no pairs in the CSV")
    return pairs


def load_thumbnail(source, relpath: str, size=THUMBNAIL, what: str = "image") -> np.ndarray | None:
    """The image at ``relpath`` in ``source`` as an RGB array fitting ``size``, or None (with a warning)."""
    from PIL import Image

    member = source.find(relpath)
    if member is None:
        warnings.warn(f"{source.path}: {what} {relpath!r} not found", FaceauditWarning, stacklevel=2)
        return None
    try:
        with Image.open(io.BytesIO(source.read(member))) as img:
            img = img.convert("RGB")
            img.thumbnail(size, Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.uint8)
    except (FaceauditError, OSError, ValueError, Image.DecompressionBombError) as exc:
        warnings.warn(f"{source.path}: cannot read {what} {member!r} ({exc})", FaceauditWarning, stacklevel=2)
        return None


def _label(path: str) -> str:
    p = PurePosixPath(path.replace("\\", "/"))
    identity = p.parent.name or "Unknown"
    return f"Identity: {identity}\nImage: {p.name}"


def draw_pairs(images: Sequence[tuple[np.ndarray | None, np.ndarray | None]], pairs: Sequence[Pair],
               reference_label: str = "Reference", query_label: str = "Query"):
    """The figure: one column per pair, reference on top, query below, score in between."""
    from faceaudit.report.plots import plt

    n = len(pairs)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 8), squeeze=False)
    for col, ((ref_img, query_img), pair) in enumerate(zip(images, pairs)):
        for row, img, path, kind in ((0, ref_img, pair.reference_path, reference_label),
                                     (1, query_img, pair.query_path, query_label)):
            ax = axes[row, col]
            if img is not None:
                ax.imshow(img)
            else:
                ax.text(0.5, 0.5, "Image not found", ha="center", va="center", transform=ax.transAxes,
                        fontsize=11, color="red")
            ax.set_title(f"{kind}\n{_label(path)}", fontsize=9, fontweight="bold")
            ax.axis("off")
    fig.tight_layout()
    fig.subplots_adjust(hspace=0.7, wspace=0.2)
    for col, pair in enumerate(pairs):
        top = axes[0, col].get_position()
        fig.text((top.x0 + top.x1) / 2, top.y0 - 0.025, f"{pair.score:.4f}", ha="center", va="top",
                 fontsize=16, fontweight="bold", bbox=dict(boxstyle="round,pad=0.3", facecolor="lightblue", alpha=0.8))
    return fig


def _safe_stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "query"


def figure_name(query_images: str | os.PathLike, n: int) -> str:
    """``comparison_<query set>_<n>_samples.png`` as the paper's plot_similar.py names it."""
    return f"comparison_{_safe_stem(query_images)}_{n}_samples.png"


def pairs_figure(pairs: Sequence[Pair] | str | os.PathLike, reference_images, query_images, out_dir,
                 *, samples: int = 5, filename: str | None = None, dpi: int = 150) -> Path:
    """Draw the first ``samples`` pairs (a list or a pairs CSV) with images from the two sources.

    ``reference_images``/``query_images`` are paths (folder, .zip, .tar, .tar.gz/.tgz) or open
    :class:`faceaudit.io.sources.ImageSource` objects. Returns the PNG written into ``out_dir``.
    """
    from faceaudit.report.plots import save_figure
    from faceaudit.io.sources import ImageSource, open_source

    if samples <= 0:
        raise FaceauditError(f"the number of samples must be > 0, got {samples}")
    if not isinstance(pairs, (list, tuple)):
        pairs = read_pairs_csv(pairs, samples)
    pairs = list(pairs)[:samples]
    if not pairs:
        raise FaceauditError("no pairs to draw")
    opened = []
    try:
        ref = reference_images if isinstance(reference_images, ImageSource) else open_source(reference_images)
        if ref is not reference_images:
            opened.append(ref)
        qry = query_images if isinstance(query_images, ImageSource) else open_source(query_images)
        if qry is not query_images:
            opened.append(qry)
        images = [(load_thumbnail(ref, p.reference_path, what="reference image"),
                   load_thumbnail(qry, p.query_path, what="query image")) for p in pairs]
    finally:
        for source in opened:
            source.close()
    out_dir = Path(out_dir)
    name = Path(filename).name if filename else figure_name(getattr(query_images, "path", query_images), len(pairs))
    fig = draw_pairs(images, pairs)
    return save_figure(fig, out_dir / name, formats=("png",), dpi=dpi, bbox_inches="tight")[0]
