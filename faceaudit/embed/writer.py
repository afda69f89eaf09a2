"""The writing side of the embedding pipeline: a thread that formats each batch as the paper's
JSON Lines and appends it, with the errors file, fsynced batch by batch."""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from pathlib import Path
from typing import Sequence

import torch

from faceaudit.embed.reader import one_line
from faceaudit.embed.resume import ERRORS_HEADER, escape_path
from faceaudit.errors import FaceauditError
from faceaudit.io.jsonl import format_jsonl_lines


def error_rows(rows: Sequence[tuple[str, str]]) -> str:
    """``path<TAB>reason`` lines of the errors file."""
    return "".join(f"{escape_path(p)}\t{one_line(r)}\n" for p, r in rows)


def _after_batch(lines_written: int) -> None:
    """Called after each batch is on disk; tests replace it to slow a run down."""


class Writer:
    """Formats and appends batches (embeddings and errors) in a thread, fsync'ed per batch."""

    def __init__(self, stream: Path, errors: Path, decimals: int | None):
        self.stream = open(stream, "ab")
        new_errors = not errors.exists() or errors.stat().st_size == 0
        self.errors = open(errors, "a", encoding="utf-8", errors="surrogateescape", newline="\n")
        if new_errors:
            self.errors.write(ERRORS_HEADER)
            self._sync(self.errors)
        self.decimals = decimals
        self.written = 0
        self.failed = 0
        self.failure: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        # set as the thread ends; close() waits on it, not on a Thread.join() that a Ctrl-C can cut short
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faceaudit-embed-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def _sync(handle) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def write_errors_now(self, rows: Sequence[tuple[str, str]]) -> None:
        if rows:
            self.errors.write(error_rows(rows))
            self._sync(self.errors)
            self.failed += len(rows)

    def submit(self, identities, names, vectors, errors) -> None:
        if self.failure is not None:
            raise self.failure
        self._queue.put((identities, names, vectors, errors))

    def _run(self) -> None:
        try:
            self._write_queued()
        finally:
            self._stopped.set()

    def _write_queued(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.failure is not None:
                continue
            try:
                identities, names, vectors, errors = item
                self.write_errors_now(errors)
                if len(identities):
                    vectors = vectors.numpy() if isinstance(vectors, torch.Tensor) else vectors
                    self.stream.write(format_jsonl_lines(identities, names, vectors, self.decimals))
                    self._sync(self.stream)
                    self.written += len(identities)
                _after_batch(self.written)
            except OSError as exc:  # a full disk: name the file
                self.failure = FaceauditError(f"{exc.filename or self.stream.name}: cannot write "
                                              f"({exc.strerror or exc})")
            except BaseException as exc:  # surfaced to the main thread by submit() / close()
                self.failure = exc

    def _discard_queued(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def close(self, discard: bool = False) -> None:
        """Write what is queued (or, with ``discard``, only the batch being written) and close.

        A Ctrl-C while waiting discards the queued batches (they are redone on resume) and
        still waits for the one being written, so the files end on a whole line.
        """
        if discard:
            self._discard_queued()
        self._queue.put(None)
        interrupted = False
        while not self._stopped.is_set():
            try:
                self._stopped.wait(0.1)
            except KeyboardInterrupt:
                interrupted = True
                self._discard_queued()
                self._queue.put(None)
        for handle in (self.stream, self.errors):
            try:
                handle.close()
            except OSError as exc:  # what was still buffered could not be written
                self.failure = self.failure or FaceauditError(f"{handle.name}: cannot write ({exc.strerror or exc})")
        if self.failure is not None:
            raise self.failure
        if interrupted:
            raise KeyboardInterrupt
