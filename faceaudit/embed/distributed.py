"""More than one process with torchrun: ``torchrun --nproc-per-node N -m faceaudit embed ...``.

Rank 0 plans the run as a one-process run would (resume checks, the list of images to embed)
and tells the others. The list is cut into batches of ``--batch-size`` and batch ``b`` goes to
rank ``b % N``, so every image is computed in the very batch a one-process run puts it in.
Each rank writes its own part, ``OUT.rankR-of-N.partial.jsonl`` (and ``.errors.tsv``), and
resumes it when the same command is run again. When every rank has finished, rank 0 merges the
parts into the output in the one-process order, streaming (one line at a time), so the output
is byte-identical to a one-process run's. ``OUT.ranks.meta.json`` records the split until the
parts are merged; a merge cut short is undone and redone on the next run.

Ranks talk through ``torch.distributed`` (gloo, on CPU and GPU alike: only small messages);
each rank embeds on ``cuda:LOCAL_RANK`` (``--device auto`` or ``cuda``) or on the CPU.
"""
from __future__ import annotations

import atexit
import datetime as _dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from faceaudit.embed.resume import (ERRORS_HEADER, OutputFiles, line_key, lock_output,
                                    read_done_keys, read_error_paths, truncate_to_last_newline, unescape_path,
                                    unlock_output)
from faceaudit.embed.steps import Job, Part, embed_part, finish, finished_npz, kept_message, now, prepare, remove
from faceaudit.embed.writer import error_rows
from faceaudit.errors import FaceauditError, Interrupted
from faceaudit.io.files import read_json, write_json

#: how long a rank may wait for the others (an uneven resume can leave one rank much more to do)
WAIT = _dt.timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int
    local_world: int


def from_environment() -> Ranks | None:
    """The job torchrun describes in the environment; None for a one-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    if "RANK" not in os.environ:
        raise FaceauditError(f"WORLD_SIZE is {world} but RANK is not set: start the processes with torchrun")
    rank = int(os.environ["RANK"])
    return Ranks(rank, world, int(os.environ.get("LOCAL_RANK", rank)),
                 int(os.environ.get("LOCAL_WORLD_SIZE", world)))


def rank_device(name: str, ranks: Ranks) -> torch.device:
    """``auto`` and ``cuda`` mean this rank's GPU, ``cuda:LOCAL_RANK`` (modulo the GPUs there are)."""
    from faceaudit.device import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and str(name).lower() in ("auto", "cuda", ""):
        device = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def share(todo: list[str], rank: int, world: int, batch_size: int) -> list[str]:
    """Rank ``rank``'s images: batches ``rank``, ``rank + world``, ... of ``todo``."""
    return [m for start in range(rank * batch_size, len(todo), world * batch_size)
            for m in todo[start:start + batch_size]]


def part_files(files: OutputFiles, rank: int, world: int) -> tuple[Path, Path]:
    """Rank ``rank``'s stream and errors file (side-file names: no output can be called so)."""
    base = f"{files.output.name}.rank{rank}-of-{world}"
    return files.output.with_name(base + ".partial.jsonl"), files.output.with_name(base + ".errors.tsv")


def manifest_path(files: OutputFiles) -> Path:
    return files.output.with_name(files.output.name + ".ranks.meta.json")


def remove_parts(files: OutputFiles) -> None:
    """Every rank part of ``files`` (any number of ranks), then the manifest."""
    for pattern in (".rank*-of-*.partial.jsonl", ".rank*-of-*.errors.tsv"):
        remove(*files.output.parent.glob(glob_escape(files.output.name) + pattern))
    remove(manifest_path(files))


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def refuse_unmerged_parts(files: OutputFiles) -> None:
    """A one-process run must not touch the parts of an unfinished torchrun run."""
    path = manifest_path(files)
    if path.is_file():
        manifest = _read_manifest(path)
        if manifest.get("merged"):  # the parts are in the output already; only the cleaning up was cut short
            remove_parts(files)
            return
        raise FaceauditError(f"{files.output} has the parts of an unfinished run of {manifest.get('world')} "
                             f"processes: resume it with torchrun --nproc-per-node {manifest.get('world')} and "
                             f"--batch-size {manifest.get('batch_size')}, or use --overwrite")


def _read_manifest(path: Path) -> dict:
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise FaceauditError(f"{path}: expected a JSON object; use --overwrite to start over")
    return manifest


def _digest(todo: list[str]) -> str:
    return hashlib.sha256("\n".join(todo).encode("utf-8", "surrogateescape")).hexdigest()


def _cut_back(path: Path, size: int) -> None:
    """Undo what a merge cut short appended to ``path``."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)
            os.fsync(handle.fileno())


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _setup(job: Job, ranks: Ranks, overwrite: bool):
    """Rank 0, holding the lock: the plan of this run and the manifest, or a finished output."""
    files = job.files
    if overwrite:
        files.remove_all()
        remove_parts(files)
    path = manifest_path(files)
    manifest = _read_manifest(path) if path.is_file() else None
    if manifest is not None and manifest.get("merged"):  # merged, not yet cleaned up
        remove_parts(files)
        manifest = None
    if manifest is not None:
        if (manifest.get("world"), manifest.get("batch_size")) != (ranks.world, job.batch_size):
            raise FaceauditError(f"{files.output} has the parts of an unfinished run of {manifest.get('world')} "
                                 f"processes with --batch-size {manifest.get('batch_size')}: resume it with those, "
                                 "or use --overwrite")
        _cut_back(files.stream, int(manifest["stream_bytes"]))
        _cut_back(files.errors, int(manifest["errors_bytes"]))
    elif (done := finished_npz(job)) is not None:
        return None, done
    prep = prepare(job)
    todo = prep.plan.todo
    if manifest is not None and manifest.get("todo_sha256") != _digest(todo):
        raise FaceauditError(f"{files.output}: the dataset or the output changed since the unfinished run of "
                             f"{ranks.world} processes; use --overwrite to start over")
    if prep.plan.new_errors:
        new = not files.errors.exists() or files.errors.stat().st_size == 0
        _append(files.errors, ((ERRORS_HEADER if new else "") + error_rows(prep.plan.new_errors)).encode(
            "utf-8", "surrogateescape"))
    if manifest is None:
        write_json(path, {"world": ranks.world, "batch_size": job.batch_size, "todo": len(todo),
                          "todo_sha256": _digest(todo), "stream_bytes": _size(files.stream),
                          "errors_bytes": _size(files.errors), "merged": False, "created": now()})
    return prep, {"todo": todo}


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _broadcast(value=None, src: int = 0):
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _init_group() -> None:
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=WAIT)
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())


def embed_ranks(job: Job, ranks: Ranks, overwrite: bool) -> dict:
    """This rank's part of a torchrun run; rank 0 also plans, merges and finishes."""
    _init_group()
    files, lock, prep, word = job.files, None, None, None
    try:
        if ranks.rank == 0:
            try:
                files.output.parent.mkdir(parents=True, exist_ok=True)
                lock = lock_output(files.output)
                prep, word = _setup(job, ranks, overwrite)
            except BaseException as exc:
                _broadcast({"error": f"{type(exc).__name__}: {exc}"})
                raise
        word = _broadcast(word)
        if "error" in word:
            raise FaceauditError(f"rank 0 stopped the run ({word['error']})")
        if word.get("complete"):
            return dict(word, rank=ranks.rank)
        outcome = _embed_share(job, ranks, word["todo"], lock)
        outcomes = [None] * ranks.world
        dist.all_gather_object(outcomes, outcome)
        _raise_for(outcomes, ranks, files)
        result = None
        if ranks.rank == 0:
            try:
                result = _merge_and_finish(job, ranks, prep, word["todo"], outcomes)
            except BaseException as exc:
                _broadcast({"error": f"{type(exc).__name__}: {exc}"})
                if isinstance(exc, KeyboardInterrupt):
                    raise Interrupted("interrupted while merging; every rank's part is kept: run the same "
                                      "command again to resume") from None
                raise
        result = _broadcast(result)
        if "error" in result:
            raise FaceauditError(f"rank 0 could not merge the parts ({result['error']})")
        return dict(result, rank=ranks.rank)
    finally:
        if lock is not None:
            unlock_output(lock)


def _embed_share(job: Job, ranks: Ranks, todo: list[str], lock) -> dict:
    """Embed this rank's share into its part, resuming it; what happened, for every rank to see."""
    stream, errors = part_files(job.files, ranks.rank, ranks.world)
    done, failed = set(), set()
    if stream.exists():
        truncate_to_last_newline(stream)
        done = read_done_keys(stream)
    if errors.exists():
        truncate_to_last_newline(errors)
        failed = read_error_paths(errors)
    from faceaudit.io.sources import split_member

    mine = [m for m in share(todo, ranks.rank, ranks.world, job.batch_size)
            if m not in failed and split_member(m) not in done]
    try:
        part = embed_part(job, mine, stream, errors, lock_fd=lock.fileno() if lock is not None else None,
                          progress=job.progress and ranks.rank == 0)
    except (FaceauditError, OSError) as exc:
        return {"rank": ranks.rank, "error": str(exc)}
    return {"rank": ranks.rank, "interrupted": part.interrupted, "embedded": part.embedded, "failed": part.failed,
            "recomputed": part.recomputed, "seconds": part.seconds, "kept": len(done) + part.embedded,
            "stream": str(stream)}


def _raise_for(outcomes: list[dict], ranks: Ranks, files: OutputFiles) -> None:
    """Every rank stops when one failed or was interrupted, each saying what is true for it."""
    mine = outcomes[ranks.rank]
    if "error" in mine:
        raise FaceauditError(mine["error"])
    if mine["interrupted"]:
        raise Interrupted(kept_message(mine["kept"], Path(mine["stream"])))
    for other in outcomes:
        if "error" in other:
            raise FaceauditError(f"rank {other['rank']} of {ranks.world} failed: {other['error']}")
        if other["interrupted"]:
            raise Interrupted(f"rank {other['rank']} of {ranks.world} was interrupted; the finished batches of "
                              f"every rank are kept beside {files.output}: run the same command again to resume")


def _merge_and_finish(job: Job, ranks: Ranks, prep, todo: list[str], outcomes: list[dict]) -> dict:
    files, metadata = job.files, prep.metadata
    lines, failures = merge_parts(files, todo, ranks.world, job.batch_size)
    this_run = Part(embedded=sum(o["embedded"] for o in outcomes),
                    failed=len(prep.plan.new_errors) + sum(o["failed"] for o in outcomes),
                    recomputed=sum(o["recomputed"] for o in outcomes), seconds=max(o["seconds"] for o in outcomes))
    metadata.update(count=prep.done + lines, errors=len(prep.error_paths) + len(prep.plan.new_errors) + failures,
                    updated=now(), ranks=ranks.world,
                    fp32_recomputed_batches=metadata["fp32_recomputed_batches"] + this_run.recomputed)
    if metadata["count"]:
        write_json(files.meta, metadata)
    else:  # nothing embedded: leave no empty output for the next stage to trip on
        remove(files.stream, files.meta)
    manifest = manifest_path(files)
    write_json(manifest, dict(_read_manifest(manifest), merged=True))
    prep.plan.already_done += lines - this_run.embedded  # kept in the parts from an earlier run
    summary = finish(job, prep, this_run)
    remove_parts(files)
    return dict(summary, ranks=ranks.world)


def merge_parts(files: OutputFiles, todo: list[str], world: int, batch_size: int) -> tuple[int, int]:
    """Append the ranks' parts to the output and its errors file in ``todo`` order, a line at a
    time; returns (lines, error rows) appended. Every image must be in its rank's part."""
    from faceaudit.io.sources import split_member

    parts = [part_files(files, rank, world) for rank in range(world)]
    streams = [open(stream, "rb") if stream.exists() else None for stream, _ in parts]
    errors = [open(path, "rb") if path.exists() else None for _, path in parts]
    lines = [_Reader(handle, path) for handle, (path, _) in zip(streams, parts)]
    rows = [_Reader(handle, path, skip=ERRORS_HEADER.encode()) for handle, (_, path) in zip(errors, parts)]
    new_errors = not files.errors.exists() or files.errors.stat().st_size == 0
    n_lines = n_rows = 0
    try:
        with open(files.stream, "ab") as out, open(files.errors, "ab") as err:
            if new_errors:
                err.write(ERRORS_HEADER.encode())
            for start in range(0, len(todo), batch_size):
                rank = start // batch_size % world
                for member in todo[start:start + batch_size]:
                    if lines[rank].key() == split_member(member):
                        out.write(lines[rank].take())
                        n_lines += 1
                    elif rows[rank].row_path() == member:
                        err.write(rows[rank].take())
                        n_rows += 1
                    else:
                        raise FaceauditError(f"{parts[rank][0]}: {member!r} is missing; the parts do not match "
                                             "the plan: use --overwrite to start over")
            for reader in lines + rows:
                reader.check_finished()
            for handle in (out, err):
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        for handle in streams + errors:
            if handle is not None:
                handle.close()
    return n_lines, n_rows


class _Reader:
    """One part read a line at a time, with a look at the next line's key or path."""

    def __init__(self, handle, file: Path, skip: bytes = b""):
        self.handle, self.file, self.number = handle, file, 0
        self.line = self._next()
        if skip and self.line == skip:
            self.line = self._next()

    def _next(self) -> bytes | None:
        if self.handle is None:
            return None
        self.number += 1
        return self.handle.readline() or None

    def key(self):
        return line_key(self.line, self.file, self.number) if self.line else None

    def row_path(self):
        return unescape_path(self.line.decode("utf-8", "surrogateescape").split("\t", 1)[0]) if self.line else None

    def take(self) -> bytes:
        line, self.line = self.line, self._next()
        return line

    def check_finished(self) -> None:
        if self.line is not None:
            raise FaceauditError(f"{self.file}:{self.number}: a line that is not in the plan; use --overwrite "
                                 "to start over")
