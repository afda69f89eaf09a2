"""Stage 1: one embedding per image of a dataset folder or archive, batched and resumable.

:func:`embed_dataset` reads images through :mod:`faceaudit.io.sources` (a folder,
``.zip`` or ``.tar[.gz]`` read in place), decodes and resizes them in
DataLoader worker processes, runs the model on batches under
``torch.inference_mode`` (channels-last; fp16 autocast, pinned memory and
non-blocking copies on CUDA; float32 on every core on CPU) and streams the
paper's JSON Lines to the output from a writer thread, so formatting and
fsync overlap the next batch. Non-finite embeddings stop the run with an error.

Files of one run, for ``OUT`` = ``embeddings.jsonl``:

- ``OUT``: paper-format lines, appended and fsynced batch by batch;
- ``OUT.meta.json``: model, weights sha256, preprocessing, options, counts;
  written when the run starts (``"complete": false``) and when it ends;
- ``OUT.errors.tsv``: ``path<TAB>reason`` (after a ``path<TAB>reason`` header) for
  every image skipped (unreadable, corrupt, empty, not an image, refused archive
  member, outside an identity folder, duplicate name, no face found); removed at the
  end of a run that had none;
- ``OUT.lock``: locked (``flock``) for the whole run, so a second run on the same
  output, ``--overwrite`` included, is refused instead of removing files in use;
  removed at the end.

For ``OUT`` = ``embeddings.npz`` the lines stream to ``OUT.partial.jsonl``
(with its own ``.meta.json``), which is converted to ``OUT`` at the end and
removed; an interrupted ``.npz`` run resumes from the partial file.

Resume: a run whose output already exists continues it. The images already in
the output or in the errors file are skipped, a half-written last line is cut
off and redone, and the model, weights and options must equal those recorded
in the metadata (else an error suggests ``--overwrite``). Order: sorted member
paths; a compressed tar is read in its storage order (reading it sorted would
decompress it again for every image).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from faceaudit.embed.embedder import Embedder, default_threads
from faceaudit.embed.reader import ImageDataset, Plan, collate_images, default_workers, plan_work, worker_init
from faceaudit.embed.resume import (OutputFiles, check_resume, check_same_dataset, compare_settings, lock_output,
                                    read_done_keys, read_error_paths, truncate_to_last_newline, unlock_output)
from faceaudit.embed.writer import Writer
from faceaudit.errors import FaceauditError, Interrupted
from faceaudit.io.embeddings import load_embeddings, save_embeddings
from faceaudit.io.files import write_json


def _settings(arch: str, info: dict, spec, flip_tta: bool, align: str | None, decimals) -> dict:
    preprocessing = spec.preprocessing() if hasattr(spec, "preprocessing") else {}
    preprocessing = dict(preprocessing, resize="PIL bilinear (torchvision Resize), untouched at input size",
                         formula="(pixel * scale - mean) / std, CHW")
    if info.get("preprocessing_flags"):  # --arch onnx: what the flags changed from the graph's values
        preprocessing["flags"] = info["preprocessing_flags"]
    return {
        "arch": spec.name if hasattr(spec, "name") else arch,
        "weights_sha256": info.get("sha256"),
        "embedding_dim": int(info.get("embedding_dim") or getattr(spec, "embedding_dim", 0)) or None,
        "preprocessing": json.loads(json.dumps(preprocessing)),
        "flip_tta": bool(flip_tta),
        "align": align or "none",
        "decimals": decimals,
    }



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def embed_dataset(source_path: str | os.PathLike, output_path: str | os.PathLike = "embeddings.jsonl", *,
                  arch: str = "iresnet100", weights: str | os.PathLike | None = None, device: str = "auto",
                  batch_size: int = 64, workers: int | None = None, flip_tta: bool = False,
                  align: str | None = None, models_dir: str | os.PathLike = "Models",
                  decimals: int | None | str = "auto", overwrite: bool = False, limit: int | None = None,
                  threads: int | None = None, progress: bool = True, log: Callable[[str], None] | None = None,
                  weights_option: str = "--weights", preprocessing: dict | None = None) -> dict:
    """Embed every image of ``source_path`` (folder, .zip, .tar[.gz]) into ``output_path``.

    ``preprocessing``: for ``arch="onnx"``, what replaces the input size, channel order,
    mean and std read from the graph (keys ``input_size``, ``channel_order``, ``mean``,
    ``std``); recorded in the metadata and checked on resume.

    ``threads``: CPU inference threads (default :func:`default_threads`).
    ``decimals``: rounding of the written values; ``"auto"`` means 5 (the
    paper's) for JSON Lines and full float32 precision for ``.npz``; None
    writes float32 values in their shortest round-tripping form; a value of decimals that
    rounds an embedding to all zeros stops the run at its first batch.
    ``weights_option``: the caller's name for the weights flag, used in error messages.
    Returns a summary dict (counts, errors, speed, paths). Raises
    :class:`FaceauditError` for a missing dataset or weights, an absent GPU
    or a partial output made with other settings.
    """
    from faceaudit.device import resolve_device
    from faceaudit.io.sources import open_source
    import faceaudit.models as models

    log = log or (lambda message: print(message, file=sys.stderr))
    if batch_size <= 0:
        raise FaceauditError(f"batch size must be > 0, got {batch_size}")
    if workers is not None and workers < 0:
        raise FaceauditError(f"workers must be >= 0, got {workers}")
    if limit is not None and limit <= 0:
        raise FaceauditError(f"limit must be > 0, got {limit}")
    files = OutputFiles.for_output(output_path)
    if decimals == "auto":
        decimals = None if files.is_npz else 5
    if decimals is not None and not (0 <= int(decimals) <= 9):
        raise FaceauditError(f"decimals must be between 0 and 9 (or none), got {decimals}")
    source_path = Path(source_path)
    if not source_path.exists():
        raise FaceauditError(f"{source_path}: dataset folder or archive not found")
    torch_device = resolve_device(device)
    spec = models.get_spec(arch)
    source = open_source(source_path)
    align = None if align in (None, "", "none") else str(align).lower()
    aligner = None
    if align is not None:
        from faceaudit.faces import create_aligner
        aligner = create_aligner(align, Path(models_dir))

    started = time.perf_counter()
    model, info = models.load_model(arch, weights, torch_device, models_dir, option=weights_option,
                                    preprocessing=preprocessing)
    spec = spec.with_preprocessing(info)  # --arch onnx: read from its file
    settings = _settings(arch, info, spec, flip_tta, align, decimals)

    files.output.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_output(files.output)  # before anything is removed or read: another run may be writing
    try:
        if overwrite:
            files.remove_all()
        # a finished .npz: nothing left to do when it was made the same way
        if files.is_npz and files.output.exists() and not files.stream.exists():
            previous = load_embeddings(files.output).metadata
            compare_settings(files.output, previous, settings)
            log(f"{files.output} is complete ({previous.get('count', '?')} embeddings); "
                "use --overwrite to compute it again")
            return {"output": str(files.output), "complete": True, "embedded": 0,
                    "total": previous.get("count"), "errors": 0, "already_complete": True}
        return _embed_locked(files, source, source_path, spec, model, info, settings, aligner, torch_device,
                             batch_size, workers, flip_tta, limit, threads, progress, decimals, weights,
                             started, log, lock.fileno())
    finally:
        unlock_output(lock)


def _embed_locked(files: OutputFiles, source, source_path: Path, spec, model, info: dict, settings: dict, aligner,
                  torch_device: torch.device, batch_size: int, workers, flip_tta: bool, limit, threads,
                  progress: bool, decimals, weights, started: float, log, lock_fd: int | None = None) -> dict:
    from faceaudit.version import __version__

    previous: dict = {}
    resumed = files.stream.exists() and files.stream.stat().st_size > 0
    if resumed:
        previous = check_resume(files, settings)
        cut = truncate_to_last_newline(files.stream)
        if cut:
            log(f"{files.stream}: removed a half-written last line ({cut} bytes); it is redone")
        done_keys = read_done_keys(files.stream)
    else:
        done_keys = set()
        with contextlib.suppress(FileNotFoundError):
            files.errors.unlink()  # errors of an output that no longer exists
    if files.errors.exists():
        truncate_to_last_newline(files.errors)
    error_paths = read_error_paths(files.errors)

    fingerprint = source.fingerprint()
    if resumed:
        moved = check_same_dataset(files.stream, previous, str(source_path.resolve()), fingerprint)
        if moved:
            log(moved)
    plan = plan_work(source, limit, done_keys, error_paths)
    if plan.total_images == 0 and not source.refused:
        raise FaceauditError(f"{source_path}: no images found (extensions: jpg jpeg png bmp webp pgm ppm tif)")

    metadata = {
        **settings,
        "weights": str(info.get("weights", weights) or ""),
        "source": str(source_path.resolve()),
        "source_fingerprint": fingerprint,
        "source_kind": getattr(source, "kind", ""),
        "order": plan.order,
        "limit": limit,
        "faceaudit_version": __version__,
        "created": previous.get("created", _now()),
        "updated": _now(),
        "device": str(torch_device),
        "complete": False,
        "count": len(done_keys),
        "errors": len(error_paths),
    }
    write_json(files.meta, metadata)
    if resumed:
        log(f"resuming {files.stream}: {len(done_keys)} embeddings done, {len(plan.todo)} images to go")

    writer = Writer(files.stream, files.errors, decimals)
    writer.write_errors_now(plan.new_errors)
    embedded_now = 0
    run_started = time.perf_counter()
    finished = interrupted = False
    try:
        embedded_now = _run(plan, source, spec, model, torch_device, writer, batch_size, workers, flip_tta,
                            aligner, progress, threads, lock_fd, decimals)
        finished = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            writer.close(discard=not finished)
        finally:
            run_seconds = time.perf_counter() - run_started
            metadata.update(count=len(done_keys) + writer.written, errors=len(error_paths) + writer.failed,
                            updated=_now())
            if metadata["count"]:
                write_json(files.meta, metadata)
            else:  # nothing embedded: leave no empty output for the next stage to trip on
                _remove(files.stream, files.meta)
    count, errors_total = metadata["count"], metadata["errors"]
    if interrupted:
        raise Interrupted(f"interrupted; {count:,} embeddings are kept in {files.stream}: run the same command "
                          "again to resume" if count else "interrupted before any embedding was written")
    elapsed = time.perf_counter() - started
    if errors_total == 0:  # no errors file means no errors
        with contextlib.suppress(FileNotFoundError):
            files.errors.unlink()

    if count == 0:
        raise FaceauditError(f"{source_path}: no image could be embedded ({errors_total} skipped"
                             + (f", listed in {files.errors})" if errors_total else ")"))
    if files.is_npz:
        eset = load_embeddings(files.stream)
        metadata.update(complete=True)
        eset.metadata = dict(metadata)
        save_embeddings(eset, files.output)
        files.stream.unlink()
        files.meta.unlink()
    else:
        metadata.update(complete=True)
        write_json(files.meta, metadata)
    return {
        "output": str(files.output),
        "errors_file": str(files.errors) if errors_total else None,
        "complete": True,
        "embedded": embedded_now,
        "already_done": plan.already_done,
        "total": count,
        "errors": writer.failed,
        "errors_total": errors_total,
        "resumed": resumed,
        "seconds": elapsed,
        "pipeline_seconds": run_seconds,
        "images_per_s": (embedded_now + writer.failed) / run_seconds if run_seconds > 0 else 0.0,
        "device": str(torch_device),
        "arch": settings["arch"],
        "weights_sha256": settings["weights_sha256"],
    }


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _check_batch(vectors: torch.Tensor, members: list[str], spec, decimals: int | None) -> None:
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
                    f"the weights do not suit --arch {spec.name}, or fp16 overflowed (try --device cpu)")
            raise FaceauditError(f"the model gave {what} for {members[int(bad.nonzero()[0][0])]!r} "
                                 f"({int(bad.sum())} of {len(members)} in its batch): {hint}")


def _run(plan: Plan, source, spec, model, device: torch.device, writer: Writer, batch_size: int,
         workers: int | None, flip_tta: bool, aligner, progress: bool, threads: int | None = None,
         lock_fd: int | None = None, decimals: int | None = None) -> int:
    from tqdm import tqdm

    from faceaudit.io.sources import split_member

    if not plan.todo:
        return 0
    if device.type == "cpu":
        torch.set_num_threads(threads or default_threads())
    else:
        torch.backends.cudnn.benchmark = True
    workers = default_workers(device) if workers is None else int(workers)
    dataset = ImageDataset(source, plan.todo, spec.input_size, spec.channel_order, aligner)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_images,
        pin_memory=device.type == "cuda", worker_init_fn=functools.partial(worker_init, lock_fd) if workers else None,
        prefetch_factor=4 if workers else None, persistent_workers=False)
    embedder = Embedder(model, spec, device, flip_tta)
    if device.type == "cuda":
        embedder.warm_up(batch_size)
    embedded = 0
    bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, dynamic_ncols=True, file=sys.stderr,
               smoothing=0.1)
    pending = None  # the previous batch: fetched from the device while this one computes

    def hand_over(item) -> int:
        vectors, members, errors = item
        if vectors is not None:
            vectors = vectors.cpu()
            _check_batch(vectors, members, spec, decimals)
        keys = [split_member(m) for m in members]
        identities = [k[0] for k in keys]
        names = [k[1] for k in keys]
        writer.submit(identities, names, vectors, errors)
        return len(members)

    try:
        for indices, batch, failed in loader:
            errors = [(plan.todo[i], reason) for i, reason in failed]
            vectors = embedder(batch) if batch is not None else None
            if pending is not None:
                embedded += hand_over(pending)
            pending = (vectors, [plan.todo[i] for i in indices], errors)
            bar.update(len(indices) + len(failed))
        if pending is not None:
            embedded += hand_over(pending)
    finally:
        bar.close()
    return embedded


def format_summary(summary: dict) -> str:
    """The one-paragraph report printed at the end of a run."""
    if summary.get("already_complete"):
        return f"{summary['output']}: already complete ({summary.get('total')} embeddings); nothing to do"
    text = (f"embedded {summary['embedded']} image(s) at {summary['images_per_s']:.1f} img/s on "
            f"{summary['device']} ({summary['seconds']:.1f} s in all); "
            f"{summary['output']} holds {summary['total']} embedding(s)")
    if summary.get("already_done"):
        text += f", {summary['already_done']} of them from before"
    if summary.get("errors_total"):
        text += (f"\nskipped {summary['errors_total']} file(s) (unreadable, corrupt, not an image or refused; "
                 f"{summary['errors']} this run), listed in {summary['errors_file']}")
    return text
