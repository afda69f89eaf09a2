"""Long searches in chunks of queries, checkpointed, so that an interrupted run resumes where it stopped.

Each chunk is one exact blocked search (:mod:`.exact`) per piece of the reference set: the array
itself, or each memory-mapped shard of a :class:`faceaudit.io.shards.RowArray` in turn, merged
with the same tie rules, so a sharded reference set gives the results of the file it was written
from. After each finished chunk the results so far are saved to a fingerprinted checkpoint
(:mod:`faceaudit.io.checkpoint`), which is removed when the search is done. Results equal one
uninterrupted search.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
from tqdm.auto import tqdm

from faceaudit.errors import Interrupted
from faceaudit.io.checkpoint import Checkpoint, fingerprint
from faceaudit.search.engine import reference_parts
from faceaudit.search.exact import BestMatches, TopPairs, best_match, top_pairs

#: queries searched between two checkpoints of a long run
CHECKPOINT_QUERIES = 1 << 16


def _store(checkpoint: str | os.PathLike | None, n_queries: int, *key_parts) -> Checkpoint | None:
    """A checkpoint only where the work spans several chunks."""
    if checkpoint is None or n_queries <= CHECKPOINT_QUERIES:
        return None
    return Checkpoint(checkpoint, fingerprint(*key_parts))


def _chunks(n: int, done: int, progress: bool, desc: str):
    """(start, stop) of the query chunks still to search, with a bar over all of them."""
    bar = tqdm(total=n, initial=done, desc=desc, unit="query", disable=not progress or n <= CHECKPOINT_QUERIES,
               leave=False)
    try:
        for start in range(done, n, CHECKPOINT_QUERIES):
            stop = min(start + CHECKPOINT_QUERIES, n)
            yield start, stop
            bar.update(stop - start)
    finally:
        bar.close()


@contextlib.contextmanager
def _say_what_is_kept(store: Checkpoint | None):
    """A Ctrl-C says whether finished chunks were kept, and where."""
    try:
        yield
    except KeyboardInterrupt:
        if store is not None and store.path.is_file():
            raise Interrupted(f"interrupted; the finished queries are kept in {store.path}: run the same "
                              "command again to resume") from None
        raise


def best_match_resumable(queries: np.ndarray, references: np.ndarray, *, rows: np.ndarray | None = None,
                         checkpoint: str | os.PathLike | None = None, device: str = "auto",
                         precision: str = "fp32", memory_budget_bytes: int | None = None,
                         progress: bool = True) -> BestMatches:
    """:func:`~.exact.best_match` of ``queries[rows]`` (every row when None), chunk by chunk.

    With ``checkpoint`` (a file path) finished chunks are saved there and a rerun resumes from them.
    """
    rows = np.arange(len(queries), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    n = len(rows)
    store = _store(checkpoint, n, "best", rows, queries, references, precision)
    saved = store.load() if store else None
    scores, indices = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.int64)
    done = 0
    if saved is not None:
        done = int(saved["done"])
        scores[:done], indices[:done] = saved["scores"], saved["indices"]
    with _say_what_is_kept(store):
        for start, stop in _chunks(n, done, progress, "best matches"):
            chunk = queries[rows[start:stop]]
            best_s, best_i = None, None
            for offset, part in reference_parts(references):
                found = best_match(chunk, part, device=device, precision=precision,
                                   memory_budget_bytes=memory_budget_bytes, progress=progress,
                                   desc=f"best matches of queries {start + 1:,}-{stop:,}")
                if best_s is None:
                    best_s, best_i = found.scores, found.indices + offset
                else:  # a later shard wins only with a higher score: ties keep the lower index
                    better = found.scores > best_s
                    best_s = np.where(better, found.scores, best_s)
                    best_i = np.where(better, found.indices + offset, best_i)
            scores[start:stop], indices[start:stop] = best_s, best_i
            if store and stop < n:
                store.save(done=np.int64(stop), scores=scores[:stop], indices=indices[:stop])
    if store:
        store.clear()
    return BestMatches(scores, indices)


def top_pairs_resumable(queries: np.ndarray, references: np.ndarray, k: int, *, positive_only: bool = False,
                        checkpoint: str | os.PathLike | None = None, device: str = "auto",
                        precision: str = "fp32", memory_budget_bytes: int | None = None,
                        progress: bool = True) -> TopPairs:
    """:func:`~.exact.top_pairs` over query chunks: the K best of the chunks' own top-K lists."""
    n = len(queries)
    store = _store(checkpoint, n, "top", k, positive_only, queries, references, precision)
    saved = store.load() if store else None
    best = (np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64))
    done = 0
    if saved is not None:
        done, best = int(saved["done"]), (saved["scores"], saved["query_indices"], saved["reference_indices"])
    with _say_what_is_kept(store):
        for start, stop in _chunks(n, done, progress, "closest pairs"):
            for offset, part in reference_parts(references):
                found = top_pairs(queries[start:stop], part, k, positive_only=positive_only, device=device,
                                  precision=precision, memory_budget_bytes=memory_budget_bytes, progress=progress,
                                  desc=f"closest pairs of queries {start + 1:,}-{stop:,}")
                s, q, r = (np.concatenate(pair) for pair in zip(best, (found.scores, found.query_indices + start,
                                                                       found.reference_indices + offset)))
                order = np.lexsort((r, q, -s.astype(np.float64)))[:k]  # score desc, then query, then reference
                best = (s[order], q[order], r[order])
            if store and stop < n:
                store.save(done=np.int64(stop), scores=best[0], query_indices=best[1], reference_indices=best[2])
    if store:
        store.clear()
    return TopPairs(*best)
