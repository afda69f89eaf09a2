"""Training data: a dataset's faces decoded (and aligned) once into a memory-mapped uint8 array in the run
folder, the seeded identity-disjoint validation split, and each epoch's batches (shuffled images, or the
Siamese tool's pairs) with their augmented images.

The cache (``faces.npy`` + ``faces.json``, 37.6 KB a 112x112 face) is keyed by the dataset's fingerprint,
the input size, channel order and aligner: a rerun, a resumed run or ``--overwrite`` on the same data
reuses it. Images that cannot be read, decoded or aligned are left out and listed with their reason.
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from faceaudit import checks
from faceaudit.embed.reader import ImageDataset, collate_images, plan_work, worker_init
from faceaudit.embed.reader import default_workers as embed_workers
from faceaudit.errors import FaceauditError
from faceaudit.evaluate.pairs import count_pairs, identity_codes, sample_pairs
from faceaudit.io.checkpoint import fingerprint
from faceaudit.io.files import read_json, write_json
from faceaudit.io.sources import ImageSource, split_member
from faceaudit.train.augment import augment

FACES_FILE = "faces.npy"
INDEX_FILE = "faces.json"
MIN_VAL_IDENTITIES = 4  # two identity-disjoint folds of two identities each


@dataclass
class Faces:
    """The decoded faces of a dataset: row ``i`` is ``members[i]`` of identity ``identities[i]``."""

    path: Path
    members: list[str]
    identities: np.ndarray
    errors: list[tuple[str, str]]
    key: str = ""  # what the faces were made from (dataset fingerprint, input size, channel order, aligner)

    def array(self) -> np.ndarray:
        """The faces, (N, H, W, 3) uint8, memory-mapped read-only."""
        return np.load(self.path, mmap_mode="r")[:len(self.members)]


def prepare_faces(source: ImageSource, source_fingerprint: str, run_dir: Path, input_size: Sequence[int],
                  channel_order: str, aligner=None, align_name: str = "none", workers: int = 0,
                  progress: bool = True) -> Faces:
    """Every image of ``source`` (:func:`faceaudit.io.sources.open_source`, whose ``fingerprint()`` is
    ``source_fingerprint``) at ``input_size`` in ``run_dir/faces.npy``, decoded once (reused when the cache
    was made from the same data and settings)."""
    dataset = source.path
    key = fingerprint("faces-v1", source_fingerprint, tuple(input_size), channel_order, align_name)
    path = run_dir / FACES_FILE
    with contextlib.suppress(FaceauditError):
        cached = cached_faces(run_dir)
        if cached.key == key:
            return cached
    plan = plan_work(source, None, set(), set())
    if not plan.todo:
        raise FaceauditError(f"{dataset}: no image inside an identity folder")
    reader = ImageDataset(source, plan.todo, input_size, channel_order, aligner)
    loader = torch.utils.data.DataLoader(reader, batch_size=32, num_workers=workers, collate_fn=collate_images,
                                         worker_init_fn=functools.partial(worker_init, None))
    height, width = int(input_size[0]), int(input_size[1])
    tmp = run_dir / f".{FACES_FILE}.partial"
    members, errors = [], list(plan.new_errors)
    try:
        faces = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(plan.todo), height, width, 3))
        from tqdm import tqdm
        with tqdm(total=len(plan.todo), desc="faces", unit="img", disable=not progress) as bar:
            for rows, batch, failed in loader:
                if batch is not None:
                    faces[len(members):len(members) + len(rows)] = batch.numpy()
                    members += [plan.todo[i] for i in rows]
                errors += [(plan.todo[i], reason) for i, reason in failed]
                bar.update(len(rows) + len(failed))
        faces.flush()
        del faces
        if not members:
            raise FaceauditError(f"{dataset}: none of its {len(plan.todo)} images could be used "
                                 f"(first: {errors[0][0]}: {errors[0][1]})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    identities = [split_member(m)[0] for m in members]
    write_json(run_dir / INDEX_FILE, {"key": key, "dataset": str(dataset), "members": members, "identities": identities,
                            "errors": errors}, indent=None)
    return Faces(path, members, np.array(identities, dtype=str), errors, key)


def cached_faces(run_dir: Path) -> Faces:
    """The faces a run cached, read without the dataset (an error when absent or damaged)."""
    path, index_path = run_dir / FACES_FILE, run_dir / INDEX_FILE
    if not (path.is_file() and index_path.is_file()):
        raise FaceauditError(f"{run_dir}: no {FACES_FILE} / {INDEX_FILE}; is it a folder made by faceaudit train?")
    index = read_json(index_path)
    try:
        faces = Faces(path, list(index["members"]), np.array(index["identities"], dtype=str),
                      [tuple(e) for e in index["errors"]], str(index["key"]))
        rows = np.load(path, mmap_mode="r").shape[0]
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise FaceauditError(f"{index_path}: damaged face cache ({type(exc).__name__}: {exc})") from None
    if rows < len(faces.members) or len(faces.identities) != len(faces.members):
        raise FaceauditError(f"{index_path}: lists {len(faces.members)} faces, {path.name} holds {rows}")
    return faces


# ---------------------------------------------------------------- the identity-disjoint split

@dataclass
class Split:
    """Rows of the training and validation identities; ``labels[row]`` is the class of a training row
    (its identity's index in ``classes``) and -1 for a validation row."""

    train_rows: np.ndarray
    val_rows: np.ndarray
    classes: list[str]
    val_identities: list[str]
    labels: np.ndarray


def validation_count(value: int | float, n_identities: int) -> int:
    """How many identities ``--val-identities`` holds out: a count, or a fraction in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or \
            (isinstance(value, float) and not value < 1):
        raise FaceauditError(f"--val-identities must be a count (0, 4, 5, ...) or a fraction in (0, 1), got {value!r}")
    if isinstance(value, float):
        return max(MIN_VAL_IDENTITIES, round(value * n_identities)) if value > 0 else 0
    return int(value)


def split_identities(identities: np.ndarray, val: int | float, seed: int, source: str = "dataset") -> Split:
    """Hold out ``val`` identities (a count or a fraction), drawn with ``seed``; the rest train."""
    checks.seed(seed)
    names, codes = np.unique(np.asarray(identities), return_inverse=True)
    if names.size < 2:
        raise FaceauditError(f"{source}: {names.size} identit{'y' if names.size == 1 else 'ies'}; "
                             f"training a recognition network needs at least two")
    n_val = validation_count(val, names.size)
    if 0 < n_val < MIN_VAL_IDENTITIES:
        raise FaceauditError(f"--val-identities {val}: the evaluation needs at least {MIN_VAL_IDENTITIES} held-out "
                             f"identities (two folds of two), or 0 for none")
    if names.size - n_val < 2:
        raise FaceauditError(f"{source}: holding out {n_val} of its {names.size} identities leaves "
                             f"{max(names.size - n_val, 0)} to train on (at least 2 are needed); "
                             f"lower --val-identities")
    held = np.zeros(names.size, dtype=bool)
    held[np.random.default_rng(seed).permutation(names.size)[:n_val]] = True
    class_of = np.cumsum(~held) - 1
    labels = np.where(held[codes], -1, class_of[codes]).astype(np.int64)
    return Split(np.flatnonzero(~held[codes]), np.flatnonzero(held[codes]), names[~held].tolist(),
                 names[held].tolist(), labels)


def eval_subset(identities: np.ndarray, rows: np.ndarray, max_images: int, seed: int,
                max_identities: int | None = None) -> np.ndarray:
    """Whole identities of ``rows``, drawn with ``seed``, while their images stay within ``max_images``
    (at least :data:`MIN_VAL_IDENTITIES` identities), at most ``max_identities``; sorted rows."""
    names, codes = np.unique(np.asarray(identities)[rows], return_inverse=True)
    sizes = np.bincount(codes, minlength=names.size)
    order = np.random.default_rng(seed).permutation(names.size)[:max_identities or names.size]
    within = np.cumsum(sizes[order]) <= max_images
    within[:MIN_VAL_IDENTITIES] = True
    return np.sort(rows[np.isin(codes, order[within])])


# ---------------------------------------------------------------- one epoch's batches

class Batches(Sequence):
    """Each batch's keys ``(epoch, slot, row)``, built when the DataLoader asks for that batch: the
    epoch is kept as arrays (a slot and a face row per image, batch after batch), not as tuples."""

    def __init__(self, epoch: int, slots: np.ndarray, rows: np.ndarray, starts: np.ndarray):
        self.epoch, self.slots, self.rows, self.starts = epoch, slots, rows, starts  # starts: len(batches) + 1

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> list[tuple[int, int, int]]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        part = slice(self.starts[i], self.starts[i + 1])
        return [(self.epoch, s, r) for s, r in zip(self.slots[part].tolist(), self.rows[part].tolist())]


@dataclass
class EpochPlan:
    """Per batch, the keys ``(epoch, slot, row)`` of its images and the loss targets."""

    keys: Batches
    targets: list[torch.Tensor]


def _shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's share of the epoch under DistributedDataParallel: equal lengths on every rank."""
    per_rank = order.size // world
    return order[:per_rank * world][rank::world]


def _batch_starts(n: int, batch_size: int) -> np.ndarray:
    """Where consecutive batches start, and ``n`` where the last ends; a last batch of one is dropped
    (BatchNorm needs two samples)."""
    starts = np.append(np.arange(0, n, batch_size), n)
    return starts[:-1] if len(starts) > 1 and starts[-1] - starts[-2] < 2 else starts


def _targets(values: torch.Tensor, starts: np.ndarray) -> list[torch.Tensor]:
    return [values[a:b] for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]  # views, no copies


def classification_epoch(rows: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epoch: int,
                         rank: int = 0, world: int = 1) -> EpochPlan:
    """The training rows in a seeded order of their own for ``epoch``, cut into batches."""
    slots = _shard(np.random.default_rng([seed, epoch]).permutation(rows.size), rank, world)
    starts = _batch_starts(slots.size, batch_size)
    chosen = rows[slots]
    return EpochPlan(Batches(epoch, slots, chosen, starts), _targets(torch.from_numpy(labels[chosen]), starts))


def siamese_pairs(codes: np.ndarray, seed: int, epoch: int, limit: int | None = None) -> np.ndarray:
    """The Siamese tool's pairs for ``epoch``, as rows ``(i, j, same)`` of positions in ``codes``: every
    mated pair (or ``limit`` of them, drawn anew each epoch), and for each one a negative made of its
    anchor and a random image of another identity; shuffled together."""
    rng = np.random.default_rng([seed, epoch])
    codes = identity_codes(codes)
    mated_total, _ = count_pairs(codes)
    if mated_total == 0:
        raise FaceauditError("no training identity has two images: contrastive training has no positive pairs")
    with warnings.catch_warnings():  # only the mated half is used; a short non-mated draw does not matter
        warnings.simplefilter("ignore")
        positives = sample_pairs(codes, min(mated_total, limit or mated_total),
                                 int(rng.integers(0, checks.MAX_SEED))).mated
    order = np.argsort(codes, kind="stable")
    _, starts, sizes = np.unique(codes[order], return_index=True, return_counts=True)
    _, group = np.unique(codes, return_inverse=True)
    anchors = positives[:, 0]
    start, size = starts[group[anchors]], sizes[group[anchors]]
    draw = rng.integers(0, codes.size - size)  # a position among the rows of every other identity
    negatives = order[np.where(draw >= start, draw + size, draw)]
    pairs = np.concatenate([np.column_stack([positives, np.ones(len(positives), np.int64)]),
                            np.column_stack([anchors, negatives, np.zeros(len(anchors), np.int64)])])
    return pairs[rng.permutation(len(pairs))]


def siamese_epoch(rows: np.ndarray, identities: np.ndarray, batch_size: int, seed: int, epoch: int,
                  rank: int = 0, world: int = 1, limit: int | None = None) -> EpochPlan:
    """Batches of ``batch_size`` pairs: the images of the anchors, then of their partners."""
    pairs = siamese_pairs(np.asarray(identities)[rows], seed, epoch, limit)
    slots = _shard(np.arange(len(pairs)), rank, world)
    starts = _batch_starts(slots.size, batch_size)
    slots, chosen = slots[:starts[-1]], pairs[slots[:starts[-1]]]
    # image positions: each batch holds its anchors, then their partners
    batch = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    within = np.arange(slots.size) - starts[batch]
    anchor_at = 2 * starts[batch] + within
    partner_at = anchor_at + np.diff(starts)[batch]
    image_slots, image_rows = np.empty(2 * slots.size, np.int64), np.empty(2 * slots.size, np.int64)
    image_slots[anchor_at], image_slots[partner_at] = 2 * slots, 2 * slots + 1
    image_rows[anchor_at], image_rows[partner_at] = rows[chosen[:, 0]], rows[chosen[:, 1]]
    return EpochPlan(Batches(epoch, image_slots, image_rows, 2 * starts),
                     _targets(torch.from_numpy(chosen[:, 2].astype(np.float32)), starts))


class AugmentedFaces(torch.utils.data.Dataset):
    """Item ``(epoch, slot, row)``: face ``row`` under one augmentation drawn from ``(seed, epoch, slot)``."""

    def __init__(self, faces: Faces, names: Sequence[str], seed: int):
        self.path, self.count, self.names, self.seed = faces.path, len(faces.members), tuple(names), seed
        self._faces = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: tuple[int, int, int]) -> np.ndarray:
        if self._faces is None:  # opened in the process that reads (DataLoader workers too)
            self._faces = np.load(self.path, mmap_mode="r")
        epoch, slot, row = key
        return augment(np.asarray(self._faces[row]), self.names, np.random.default_rng([self.seed, epoch, slot]))

    def __getstate__(self):
        return dict(self.__dict__, _faces=None)


def stack_images(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images))


def default_workers(device: torch.device) -> int:
    """Augmentation processes: none on CPU (an augmentation takes under 1 ms a face, and a worker process slowed
    CPU epochs by ~18% on a 2-core machine, measured with ``benchmarks/bench_train.py``); on CUDA as many as
    ``faceaudit embed`` decodes with."""
    return 0 if device.type == "cpu" else embed_workers(device)


def epoch_loader(dataset: AugmentedFaces, plan: EpochPlan, workers: int, pin_memory: bool = False):
    """The epoch's uint8 NHWC batches, in ``plan`` order, augmented in ``workers`` processes."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=plan.keys, num_workers=workers,
                                       collate_fn=stack_images, pin_memory=pin_memory,
                                       worker_init_fn=functools.partial(worker_init, None))
