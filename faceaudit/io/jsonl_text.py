"""Text of the paper's JSON lines, many at once: a line's head, and rounded values as the bytes
orjson (and Python's ``repr``) write, built with numpy a character column at a time."""
from __future__ import annotations

import functools
from json.encoder import encode_basestring as _quote  # json.dumps's quoting, ensure_ascii=False
from typing import Sequence

import numpy as np

@functools.lru_cache(maxsize=6)
def _value_texts(decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """The text of +-k / 10**decimals for every k in 0..10**decimals, as a table of zero-padded
    rows in four blocks (positive, negative; each with and without a trailing comma), and the
    length of each text. Row ``k + (10**decimals + 1) * (negative + 2 * last)``."""
    scale = 10 ** decimals
    places = max(decimals, 1)
    k = np.arange(scale + 1)
    digits = (k[:, None] % scale // 10 ** np.arange(places - 1, -1, -1)) % 10
    nonzero = digits != 0  # digits kept: up to the last non-zero one, at least one ("1.0", "0.5")
    kept = np.where(nonzero.any(axis=1), places - np.argmax(nonzero[:, ::-1], axis=1), 1)
    width = places + 4  # sign, whole digit, point, places, comma
    blocks, lengths = [], []
    for last in (False, True):
        for negative in (False, True):
            chars = np.zeros((scale + 1, width), np.uint8)  # the zeros are dropped from the text
            chars[:, 0] = ord("-")
            text = chars[:, int(negative):]
            text[:, 0] = ord("0") + k // scale
            text[:, 1] = ord(".")
            text[:, 2:2 + places] = np.where(np.arange(places) < kept[:, None], ord("0") + digits, 0)
            size = int(negative) + 2 + kept
            if not last:
                chars[np.arange(scale + 1), size] = ord(",")
            blocks.append(chars)
            lengths.append(size + (not last))
    return np.concatenate(blocks), np.concatenate(lengths)


def decimal_texts(values: np.ndarray, decimals: int) -> tuple[bytes, np.ndarray] | None:
    """The rows of ``values`` rounded to ``decimals`` as ``numpy.round`` rounds them (in float64),
    as comma-separated JSON numbers: ``(text of every row, one after the other; row offsets)``.

    Row ``i`` is ``text[offsets[i]:offsets[i + 1]]``, e.g. ``-0.01234,0.5,1.0,-0.0``: the shortest
    text that reads back as the rounded float64, which is what orjson and ``repr`` write.
    Applies to ``decimals`` 0..5 and values within [-1, 1] after rounding (unit embeddings), where
    every non-zero value is at least 1e-5 and so written without an exponent; returns None
    otherwise (callers then format value by value). Each value's text is looked up in a table.
    """
    values = np.asarray(values)
    if not 0 <= int(decimals) <= 5 or values.ndim != 2 or values.size == 0:
        return None
    scale = 10 ** int(decimals)
    scaled = np.rint(values.astype(np.float64) * float(scale))  # numpy.round's own steps: multiply, rint
    if not np.isfinite(scaled).all() or np.abs(scaled).max() > scale:
        return None
    table, lengths = _value_texts(int(decimals))
    rows = np.abs(scaled).astype(np.intp)
    rows += (scale + 1) * np.signbit(scaled)  # -0.0 too: orjson writes "-0.0"
    rows[:, -1] += 2 * (scale + 1)  # a row's last value has no comma
    text = np.take(table, rows, axis=0).tobytes().replace(b"\0", b"")
    offsets = np.concatenate([[0], np.cumsum(lengths[rows].sum(axis=1))])
    return text, offsets


def line_head(identity, name) -> bytes:
    """A line up to its first value, ``{"identity":...,"image_name":...,"embedding":[``, as orjson
    writes it (``json.dumps`` quoting with ``ensure_ascii=False``)."""
    return f'{{"identity":{_quote(str(identity))},"image_name":{_quote(str(name))},"embedding":['.encode()


def decimal_lines(identities: Sequence[str], image_names: Sequence[str], vectors: np.ndarray,
                  decimals: int | None) -> bytes | None:
    """Whole lines through :func:`decimal_texts` (None where it does not apply)."""
    texts = decimal_texts(vectors, decimals) if decimals is not None else None
    if texts is None:
        return None
    blob, offsets = texts
    return b"".join(line_head(identity, name) + blob[offsets[i]:offsets[i + 1]] + b"]}\n"
                    for i, (identity, name) in enumerate(zip(identities, image_names)))
