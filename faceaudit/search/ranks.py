"""Exact closed-set ranks in one blocked pass over the gallery, at the cost of a best-match search.

For every probe: its mated score (the highest exact score over the gallery images of its own
identity) and its rank, 1 + the number of other gallery identities with at least one image
scoring ``>=`` the mated score (the identity's score is its best image; ties count against the
probe, as bob.measure). Never an N x M matrix and never a per-probe loop:

1. mated scores: the exact scores of every (probe, image of its identity) pair, maximum per probe;
2. one blocked pass (:class:`~faceaudit.search.engine.Engine` tiles): an image whose fast score
   is ``>= mated + err`` surely counts, one below ``mated - err`` surely not (err: the proven bound
   of the fast product), the few in between are re-scored exactly. Hits are counted per run of
   one identity in the tile (a cumulative sum), so an identity counts once; a run cut by a tile
   or shard boundary carries its hit over to the next tile.

The gallery's identities must form contiguous runs (sort an in-memory gallery by identity first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from faceaudit.device import resolve_device
from faceaudit.errors import FaceauditError
from faceaudit.search.engine import Engine, exact_pair_scores, reference_parts

_MATED_PAIRS = 1 << 15


@dataclass
class MatedRanks:
    scores: np.ndarray  # float32 (n,): exact mated score of each probe
    ranks: np.ndarray   # int64 (n,): 1 = the mated identity scores highest


def identity_runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row, row count) of each identity code's run; an error when a code has two runs."""
    codes = np.asarray(codes, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    run_codes = codes[starts]
    if len(np.unique(run_codes)) != len(run_codes):
        raise FaceauditError("the gallery's images of one identity must be next to each other "
                             "(sort the gallery by identity; write shards from an identity-sorted file)")
    first = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    count = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    first[run_codes] = starts
    count[run_codes] = np.diff(np.r_[starts, len(codes)])
    return first, count


def mated_scores(probes: np.ndarray, probe_codes: np.ndarray, gallery, first: np.ndarray,
                 count: np.ndarray) -> np.ndarray:
    """Each probe's highest exact score over the gallery images of its identity."""
    lengths = count[probe_codes]
    if (lengths == 0).any():
        raise FaceauditError("every probe passed to mated_ranks needs a gallery image of its identity")
    ends = np.cumsum(lengths)
    best = np.full(len(probes), -np.inf, dtype=np.float32)
    total = int(ends[-1])
    for s in range(0, total, _MATED_PAIRS):  # pairs s..e of the flat (probe, its identity's image) list
        e = min(s + _MATED_PAIRS, total)
        flat = np.arange(s, e)
        rows = np.searchsorted(ends, flat, side="right")
        images = first[probe_codes[rows]] + flat - (ends[rows] - lengths[rows])
        np.maximum.at(best, rows, exact_pair_scores(probes, gallery, rows, images))
    return best


def mated_ranks(probes, probe_codes, gallery, gallery_codes, *, device="auto", precision="fp32",
                memory_budget_bytes=None, progress=True) -> MatedRanks:
    """Exact mated score and rank of every probe (see the module docstring)."""
    probes = np.ascontiguousarray(np.asarray(probes, dtype=np.float32))
    probe_codes = np.asarray(probe_codes, dtype=np.int64)
    gallery_codes = np.asarray(gallery_codes, dtype=np.int64)
    if len(gallery_codes) != len(gallery):
        raise FaceauditError(f"{len(gallery_codes)} identity codes for {len(gallery)} gallery images")
    first, count = identity_runs(gallery_codes)
    if probe_codes.size and (probe_codes.max() >= len(first) or probe_codes.min() < 0):
        raise FaceauditError("probe identity codes must be codes of gallery identities")
    s_m = mated_scores(probes, probe_codes, gallery, first, count)
    dev = resolve_device(device)  # everything below goes to the device once, whatever the shards
    hits = torch.zeros(len(probes), dtype=torch.long, device=dev)
    carry = torch.zeros(len(probes), dtype=torch.bool, device=dev)  # the run open at a tile's end was hit
    codes_dev = torch.from_numpy(gallery_codes).to(dev)
    mated = torch.from_numpy(probe_codes).to(dev)
    s_dev = torch.from_numpy(s_m).to(dev)
    for offset, part in reference_parts(gallery):
        eng = Engine(probes, part, dev, precision, memory_budget_bytes, progress, "ranks")

        def scan(start, stop, offset=offset, eng=eng, codes_dev=codes_dev, mated=mated, s_dev=s_dev):
            for q0, q1, r0, r1 in eng.blocks(start, stop):
                g0, g1 = offset + r0, offset + r1
                tile = eng.tile(q0, q1, r0, r1)
                hit = _tile_hits(eng, tile, q0, r0, s_dev[q0:q1], codes_dev[g0:g1], mated[q0:q1])
                if g0 > 0 and gallery_codes[g0] == gallery_codes[g0 - 1]:  # the first run began earlier
                    hit[:, 0] |= carry[q0:q1]
                if g1 < len(gallery_codes) and gallery_codes[g1] == gallery_codes[g1 - 1]:  # the last goes on
                    carry[q0:q1] = hit[:, -1]
                    hit = hit[:, :-1]
                hits[q0:q1] += hit.sum(dim=1)

        eng.run(scan)
    return MatedRanks(s_m, hits.cpu().numpy() + 1)


def _tile_hits(eng: Engine, tile: torch.Tensor, q0: int, r0: int, s_m: torch.Tensor, codes: torch.Tensor,
               mated: torch.Tensor) -> torch.Tensor:
    """(probes x identity runs of the tile): does the run have an image scoring >= the mated score?"""
    starts = torch.nonzero(torch.cat([codes.new_ones(1, dtype=torch.bool), codes[1:] != codes[:-1]])).squeeze(1)
    n_runs = len(starts)
    hit = torch.zeros((tile.shape[0], n_runs), dtype=torch.bool, device=tile.device)
    low = eng.threshold_for_tile(s_m - eng.err)
    live = torch.nonzero(tile.amax(dim=1).float() >= s_m - eng.err).squeeze(1)  # most probes: nothing here
    if live.numel() == 0:
        return hit
    block = tile.index_select(0, live)
    sure = block >= eng.threshold_for_tile(s_m[live] + eng.err)[:, None]
    if n_runs == codes.numel():  # one image per run: no counting needed
        run_hit = sure
    else:
        ends = torch.cat([starts[1:], starts.new_tensor([codes.numel()])]) - 1
        csum = sure.cumsum(dim=1)
        before = torch.where(starts > 0, csum[:, (starts - 1).clamp(min=0)], 0)
        run_hit = (csum[:, ends] - before) > 0
    # images within the error bound of the mated score: decide with their exact scores
    rows, cols = torch.nonzero((block >= low[live][:, None]) & ~sure, as_tuple=True)
    if rows.numel():
        exact = eng.exact(live[rows] + q0, cols + r0)
        yes = exact >= s_m[live[rows]]
        run_of = torch.searchsorted(starts, cols, right=True) - 1
        run_hit[rows[yes], run_of[yes]] = True
    run_hit &= codes[starts][None, :] != mated[live][:, None]  # the probe's own identity never counts
    hit[live] = run_hit
    return hit
