"""Random-hyperplane LSH, the challenge notebook's method, vectorised: ``bits`` random hyperplanes
give each vector a bucket (its sign bits), a query looks in every bucket within Hamming distance
``radius`` of its own (multi-probe), and the candidates found there are re-ranked by cosine.

The notebook loops over queries and buckets in Python. Here the references are sorted by bucket
once; queries are sorted by bucket too and taken in blocks, so that neighbouring queries share
most of their probed buckets: each block scores the union of its probed buckets with one matrix
product, masks the pairs outside a query's own Hamming ball (popcount of the XOR), and keeps each
query's top k. With several ``tables`` (independent hyperplane sets) the lists are merged. The
final k candidates are re-scored exactly (:func:`~faceaudit.search.backend.rescore`).
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import torch

from faceaudit.errors import FaceauditError
from faceaudit.search.backend import Index, IndexOptions, check_queries, rescore
from faceaudit.search.exact import Neighbours

_QUERY_BLOCK = 256
_UNION_COLUMNS = 1 << 15  # union rows scored at a time per query block
_CODE_ROWS = 1 << 16
_MAX_PROBES = 1 << 20
_POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)


def hamming_masks(bits: int, radius: int) -> np.ndarray:
    """Every ``bits``-bit pattern with at most ``radius`` ones (XORed onto a code: the probed buckets)."""
    count = sum(math.comb(bits, w) for w in range(radius + 1))
    if count > _MAX_PROBES:
        raise FaceauditError(f"LSH: {count:,} buckets per query at {bits} bits and radius {radius}; "
                             "lower the radius")
    masks = [np.zeros(1, dtype=np.int64)]
    for w in range(1, radius + 1):
        chosen = np.array(list(combinations(range(bits), w)), dtype=np.int64)
        masks.append(np.sum(np.left_shift(1, chosen), axis=1))
    return np.concatenate(masks)


def popcount(x: np.ndarray, bits: int = 64) -> np.ndarray:
    """Ones in each (non-negative int64) entry of at most ``bits`` bits, 16 bits at a time."""
    out = _POPCOUNT16[x & 0xFFFF]
    for shift in range(16, bits, 16):
        out = out + _POPCOUNT16[(x >> shift) & 0xFFFF]
    return out


class LSHIndex(Index):
    kind = "lsh"

    @classmethod
    def prepare(cls, references, options: IndexOptions):
        """The hyperplanes (tables x bits x D, standard normal, seeded), shared by every shard."""
        bits, radius, tables = options.lsh_bits, options.lsh_radius, options.lsh_tables
        if not 1 <= bits <= 62:
            raise FaceauditError(f"LSH: bits must be in 1..62, got {bits}")
        if not 0 <= radius <= bits:
            raise FaceauditError(f"LSH: the probe radius must be in 0..{bits}, got {radius}")
        if tables < 1:
            raise FaceauditError(f"LSH: tables must be >= 1, got {tables}")
        rng = np.random.default_rng(options.seed)
        return rng.standard_normal((tables * bits, references.shape[1])).astype(np.float32)

    def __init__(self, references: np.ndarray, options: IndexOptions, shared=None):
        super().__init__(references, options)
        self.planes = shared if shared is not None else self.prepare(references, options)
        self.bits, self.tables = options.lsh_bits, options.lsh_tables
        self.masks = hamming_masks(self.bits, options.lsh_radius)
        self.radius = options.lsh_radius
        codes = self.codes(references)
        self.order, self.keys, self.starts, self.counts = [], [], [], []
        for t in range(self.tables):  # the references sorted by bucket; each bucket a run of that order
            order = np.argsort(codes[:, t], kind="stable")
            keys, starts, counts = np.unique(codes[order, t], return_index=True, return_counts=True)
            self.order.append(order)
            self.keys.append(keys)
            self.starts.append(starts)
            self.counts.append(counts)

    def codes(self, vectors) -> np.ndarray:
        """Bucket of each row in each table (rows x tables): bit j set when the row is on the
        positive side of hyperplane j."""
        weights = np.left_shift(1, np.arange(self.bits, dtype=np.int64))
        out = np.empty((len(vectors), self.tables), dtype=np.int64)
        planes = torch.from_numpy(self.planes)
        for s in range(0, len(vectors), _CODE_ROWS):
            block = torch.from_numpy(np.ascontiguousarray(vectors[s:s + _CODE_ROWS], dtype=np.float32))
            signs = (block @ planes.T > 0).numpy().reshape(len(block), self.tables, self.bits)
            out[s:s + len(block)] = signs.astype(np.int64) @ weights
        return out

    def _distinct(self, probed: np.ndarray) -> np.ndarray:
        """The distinct probed buckets, sorted (a presence table for up to 24 bits: faster than a sort)."""
        if self.bits > 24:
            return np.unique(probed)
        present = np.zeros(1 << self.bits, dtype=bool)
        present[probed] = True
        return np.flatnonzero(present)

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        q = check_queries(queries, self.references.shape[1])
        codes = self.codes(q)
        found = [self._search_table(t, q, codes[:, t], k) for t in range(self.tables)]
        return rescore(q, self.references, np.hstack(found), k)

    def _search_table(self, t: int, q: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
        """Each query's k best candidates (reference rows, -1 padded) in its probed buckets of table t."""
        keys, starts, counts, order = self.keys[t], self.starts[t], self.counts[t], self.order[t]
        out = np.full((len(q), k), -1, dtype=np.int64)
        by_code = np.argsort(codes, kind="stable")
        q_t = torch.from_numpy(q)
        for b in range(0, len(q), _QUERY_BLOCK):
            rows = by_code[b:b + _QUERY_BLOCK]
            probed = self._distinct((codes[rows, None] ^ self.masks[None, :]).ravel())
            pos = np.searchsorted(keys, probed)
            pos = pos[(pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == probed)]
            if pos.size == 0:
                continue
            lengths = counts[pos]
            first = np.repeat(starts[pos] - np.cumsum(lengths) + lengths, lengths)
            union = order[first + np.arange(lengths.sum())]   # reference rows of the probed buckets
            union_codes = np.repeat(keys[pos], lengths)
            best_s = torch.full((len(rows), 0), -np.inf)
            best_i = torch.empty((len(rows), 0), dtype=torch.long)
            for c in range(0, len(union), _UNION_COLUMNS):
                cols = union[c:c + _UNION_COLUMNS]
                block = q_t[rows] @ torch.from_numpy(np.ascontiguousarray(self.references[cols], np.float32)).T
                outside = popcount(codes[rows, None] ^ union_codes[None, c:c + _UNION_COLUMNS], self.bits) > self.radius
                block.masked_fill_(torch.from_numpy(outside), -np.inf)
                top_s, top = torch.topk(block, min(k, block.shape[1]), dim=1)
                s = torch.cat([best_s, top_s], dim=1)
                i = torch.cat([best_i, torch.from_numpy(cols)[top]], dim=1)
                best_s, keep = torch.topk(s, min(k, s.shape[1]), dim=1)
                best_i = torch.gather(i, 1, keep)
            chosen = torch.where(torch.isfinite(best_s), best_i, -1).numpy()
            out[rows, :chosen.shape[1]] = chosen
        return out
