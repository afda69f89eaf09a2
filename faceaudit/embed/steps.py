"""The steps of one embedding run, shared by a one-process run and by every rank of a torchrun
job: prepare (resume checks, the plan, the metadata), embed a list of images into one stream,
and finish (the output, the metadata, the summary)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from faceaudit.embed.embedder import Embedder, default_threads
from faceaudit.embed.reader import ImageDataset, Plan, collate_images, default_workers, plan_work, worker_init
from faceaudit.embed.resume import (OutputFiles, check_resume, check_same_dataset, compare_settings, read_done_keys,
                                    read_error_paths, truncate_to_last_newline)
from faceaudit.embed.writer import Writer
from faceaudit.errors import FaceauditError, Interrupted
from faceaudit.io.embeddings import load_embeddings, save_embeddings
from faceaudit.io.files import write_json
from faceaudit.io.npz import read_npz_metadata


@dataclass
class Job:
    """Everything one run needs, checked and loaded: the output's files, the dataset, the model."""

    files: OutputFiles
    source: object
    source_path: Path
    spec: object
    model: torch.nn.Module
    info: dict
    settings: dict
    aligner: object
    device: torch.device
    batch_size: int
    workers: int | None
    limit: int | None
    threads: int | None
    progress: bool
    decimals: int | None
    weights: object
    log: Callable[[str], None]
    started: float = field(default_factory=time.perf_counter)
    workers_share: int = 1  # processes sharing this machine's cores (torchrun's local world size)


@dataclass
class Prepared:
    """What :func:`prepare` found: the plan, the metadata written, what was done before."""

    plan: Plan
    metadata: dict
    done: int
    error_paths: set
    resumed: bool


@dataclass
class Part:
    """One stream's run: images embedded, images failed, batches recomputed in fp32, interrupted."""

    embedded: int = 0
    failed: int = 0
    recomputed: int = 0
    interrupted: bool = False
    seconds: float = 0.0


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def prepare(job: Job) -> Prepared:
    """Check a partial output against this run, cut a half-written line, plan the work and write
    the metadata (``"complete": false``)."""
    from faceaudit.version import __version__

    files, previous = job.files, {}
    resumed = files.stream.exists() and files.stream.stat().st_size > 0
    if resumed:
        previous = check_resume(files, job.settings)
        cut = truncate_to_last_newline(files.stream)
        if cut:
            job.log(f"{files.stream}: removed a half-written last line ({cut} bytes); it is redone")
        done_keys = read_done_keys(files.stream)
    else:
        done_keys = set()
        remove(files.errors)  # errors of an output that no longer exists
    if files.errors.exists():
        truncate_to_last_newline(files.errors)
    error_paths = read_error_paths(files.errors)

    fingerprint = job.source.fingerprint()
    if resumed:
        moved = check_same_dataset(files.stream, previous, str(job.source_path.resolve()), fingerprint)
        if moved:
            job.log(moved)
    plan = plan_work(job.source, job.limit, done_keys, error_paths)
    if plan.total_images == 0 and not job.source.refused:
        raise FaceauditError(f"{job.source_path}: no images found (extensions: jpg jpeg png bmp webp pgm ppm tif)")
    metadata = {
        **job.settings,
        "weights": str(job.info.get("weights", job.weights) or ""),
        "source": str(job.source_path.resolve()),
        "source_fingerprint": fingerprint,
        "source_kind": getattr(job.source, "kind", ""),
        "order": plan.order,
        "limit": job.limit,
        "faceaudit_version": __version__,
        "created": previous.get("created", now()),
        "updated": now(),
        "device": str(job.device),
        "fp32_recomputed_batches": int(previous.get("fp32_recomputed_batches", 0)),
        "complete": False,
        "count": len(done_keys),
        "errors": len(error_paths),
    }
    write_json(files.meta, metadata)
    if resumed:
        job.log(f"resuming {files.stream}: {len(done_keys)} embeddings done, {len(plan.todo)} images to go")
    return Prepared(plan, metadata, len(done_keys), error_paths, resumed)


def embed_part(job: Job, todo: Sequence[str], stream: Path, errors: Path, *, lock_fd: int | None = None,
               new_errors: Sequence[tuple[str, str]] = (), progress: bool | None = None,
               on_close: Callable[[Part], None] = lambda part: None) -> Part:
    """Embed ``todo`` (in order) into ``stream``, listing failures in ``errors``.

    A Ctrl-C keeps the batches on disk and returns with ``interrupted``; any other error
    propagates. ``on_close`` sees the counts once the files are closed, whatever happened.
    """
    part = Part()
    writer = Writer(stream, errors, job.decimals)
    writer.write_errors_now(new_errors)
    started = time.perf_counter()
    finished = False
    try:
        _run(job, todo, writer, part, lock_fd, job.progress if progress is None else progress)
        finished = True
    except KeyboardInterrupt:
        part.interrupted = True
    finally:
        try:
            writer.close(discard=not finished)
        except KeyboardInterrupt:  # Ctrl-C while the last batches were being written
            part.interrupted = True
        finally:
            part.embedded, part.failed = writer.written, writer.failed
            part.seconds = time.perf_counter() - started
            on_close(part)
    return part


def finish(job: Job, prep: Prepared, part: Part) -> dict:
    """After the stream holds every embedding: the output (``.npz`` converted), the metadata
    marked complete, no errors file without errors; the summary of the run."""
    files, metadata = job.files, prep.metadata
    count, errors_total = metadata["count"], metadata["errors"]
    if errors_total == 0:  # no errors file means no errors
        remove(files.errors)
    if count == 0:
        raise FaceauditError(f"{job.source_path}: no image could be embedded ({errors_total} skipped"
                             + (f", listed in {files.errors})" if errors_total else ")"))
    metadata.update(complete=True)
    if files.is_npz:
        eset = load_embeddings(files.stream)
        eset.metadata = dict(metadata)
        save_embeddings(eset, files.output)
        remove(files.stream, files.meta)
    else:
        write_json(files.meta, metadata)
    return {
        "output": str(files.output),
        "errors_file": str(files.errors) if errors_total else None,
        "complete": True,
        "embedded": part.embedded,
        "already_done": prep.plan.already_done,
        "total": count,
        "errors": part.failed,
        "errors_total": errors_total,
        "resumed": prep.resumed,
        "seconds": time.perf_counter() - job.started,
        "pipeline_seconds": part.seconds,
        "images_per_s": (part.embedded + part.failed) / part.seconds if part.seconds > 0 else 0.0,
        "device": str(job.device),
        "arch": job.settings["arch"],
        "precision": job.settings["precision"],
        "fp32_recomputed_batches": part.recomputed,
        "weights_sha256": job.settings["weights_sha256"],
    }


def kept_message(count: int, where: Path) -> str:
    """What a Ctrl-C leaves: how many embeddings are kept and where (only what is true)."""
    if not count:
        return "interrupted before any embedding was written"
    return f"interrupted; {count:,} embeddings are kept in {where}: run the same command again to resume"


def finished_npz(job: Job) -> dict | None:
    """The summary of an ``.npz`` output already finished with the same settings (nothing to do), else None."""
    files = job.files
    if not (files.is_npz and files.output.exists() and not files.stream.exists()):
        return None
    previous = read_npz_metadata(files.output)
    compare_settings(files.output, previous, job.settings)
    return {"output": str(files.output), "complete": True, "embedded": 0, "total": previous.get("count"),
            "errors": 0, "already_complete": True}


def run_one_process(job: Job, lock_fd: int | None) -> dict:
    """A whole run in this process: prepare, embed every image of the plan, finish."""
    prep = prepare(job)
    files, metadata = job.files, prep.metadata

    def update_metadata(part: Part) -> None:
        metadata.update(count=prep.done + part.embedded, errors=len(prep.error_paths) + part.failed,
                        updated=now(), fp32_recomputed_batches=metadata["fp32_recomputed_batches"] + part.recomputed)
        if metadata["count"]:
            write_json(files.meta, metadata)
        else:  # nothing embedded: leave no empty output for the next stage to trip on
            remove(files.stream, files.meta)

    part = embed_part(job, prep.plan.todo, files.stream, files.errors, lock_fd=lock_fd,
                      new_errors=prep.plan.new_errors, on_close=update_metadata)
    if part.interrupted:
        raise Interrupted(kept_message(metadata["count"], files.stream))
    return finish(job, prep, part)


def check_batch(vectors: torch.Tensor, members: list[str], spec, decimals: int | None) -> None:
    """Stop at the first batch whose embeddings the next stage would reject."""
    rows = vectors.numpy()
    reasons = ((~np.isfinite(rows).all(axis=1), "NaN or infinite values"),
               (~rows.any(axis=1), "an all-zero vector"))
    if decimals is not None:
        reasons += ((~np.round(rows.astype(np.float64), decimals).any(axis=1),
                     f"a vector that rounds to all zeros at --decimals {decimals}"),)
    for bad, what in reasons:
        if bad.any():
            hint = ("use more decimals (the paper writes 5)" if "decimals" in what else
                    f"the weights do not suit --arch {spec.name}")
            raise FaceauditError(f"the model gave {what} for {members[int(bad.nonzero()[0][0])]!r} "
                                 f"({int(bad.sum())} of {len(members)} in its batch): {hint}")


def _run(job: Job, todo: Sequence[str], writer: Writer, part: Part, lock_fd: int | None, progress: bool) -> None:
    """Decode in workers, embed batch by batch, hand each batch to the writer.

    The previous batch is handed over while the current one computes: on CUDA its embeddings
    come back by a non-blocking copy, so the GPU never waits for the formatting or the checks.
    """
    from tqdm import tqdm

    from faceaudit.io.sources import split_member

    if not todo:
        return
    device = job.device
    if device.type == "cpu":
        torch.set_num_threads(job.threads or default_threads())
    else:  # cuDNN's autotuner may pick other kernels run to run: fp32 keeps the same ones, so runs agree
        torch.backends.cudnn.benchmark = job.settings["precision"] != "fp32"
    workers = default_workers(device, job.workers_share) if job.workers is None else int(job.workers)
    dataset = ImageDataset(job.source, todo, job.spec.input_size, job.spec.channel_order, job.aligner)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=job.batch_size, shuffle=False, num_workers=workers, collate_fn=collate_images,
        pin_memory=device.type == "cuda", worker_init_fn=functools.partial(worker_init, lock_fd) if workers else None,
        prefetch_factor=4 if workers else None, persistent_workers=False)
    embedder = Embedder(job.model, job.spec, device, job.settings["flip_tta"], job.settings["precision"])
    if device.type == "cuda":
        embedder.warm_up(job.batch_size)
    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True, file=sys.stderr,
               smoothing=0.1)
    pending = None  # the previous batch: copied back from the device while this one computes

    def hand_over(item) -> None:
        job_batch, members, errors = item
        vectors = None
        if job_batch is not None:
            vectors, again = job_batch.result()
            if again:
                part.recomputed += 1
                if part.recomputed == 1:
                    job.log(f"{job.settings['precision']} gave NaN or infinite values in the batch of "
                            f"{members[0]!r}; it was computed again in fp32, as any such batch will be "
                            "(counted in the metadata as fp32_recomputed_batches)")
            check_batch(vectors, members, job.spec, job.decimals)
        keys = [split_member(m) for m in members]
        writer.submit([k[0] for k in keys], [k[1] for k in keys], vectors, errors)

    try:
        for indices, batch, failed in loader:
            errors = [(todo[i], reason) for i, reason in failed]
            current = (embedder.submit(batch) if batch is not None else None, [todo[i] for i in indices], errors)
            if pending is not None:
                hand_over(pending)
            pending = current
            bar.update(len(indices) + len(failed))
        if pending is not None:
            hand_over(pending)
    finally:
        bar.close()
