"""Image sources: a folder, a .zip or a .tar[.gz|.bz2|.xz], read in place.

Members are relative POSIX paths such as ``identity/image.jpg``. Archive members
whose path is absolute or climbs out with ``..``, links and devices, and members that
would expand beyond :data:`MAX_MEMBER_BYTES` or by more than :data:`MAX_EXPANSION` times
(a decompression bomb) are refused: listed in ``source.refused`` with the reason, and
never read. A name stored twice is read from its first copy; the later copies are
listed in ``source.duplicates``. Nothing is ever extracted or written. Sources pickle
without their open handles and reopen them lazily in each process, so DataLoader
workers can share one.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from faceaudit.errors import FaceauditError

#: the largest archive member read (face images are a few MB at most)
MAX_MEMBER_BYTES = 256 << 20
#: members above ``_RATIO_FROM`` bytes may expand at most this many times their compressed size
MAX_EXPANSION = 200
_RATIO_FROM = 1 << 20

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def split_member(member: str) -> tuple[str, str]:
    """``(identity, image_name)``: the parent folder's name and the file name."""
    path = PurePosixPath(member)
    return path.parent.name, path.name


def size_reason(size: int, compressed: int) -> str | None:
    """Why a member of ``size`` bytes stored in ``compressed`` bytes is refused, or None."""
    if size > MAX_MEMBER_BYTES:
        return f"expands to {size:,} bytes, over the {MAX_MEMBER_BYTES >> 20} MiB limit per member"
    if size > _RATIO_FROM and size > MAX_EXPANSION * max(compressed, 1):
        return f"expands {size / max(compressed, 1):,.0f} times (limit {MAX_EXPANSION}): a decompression bomb"
    return None


def unsafe_reason(name: str) -> str | None:
    """Why an archive member name is refused, or None when it is a safe relative path."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "path with '..'"
    return None


class ImageSource:
    """Files of a dataset, by relative path. Use :func:`open_source` to make one."""

    kind = "source"
    sequential = False  # True where reading in storage order is far faster (compressed tars)

    def __init__(self, path: Path):
        self.path = Path(path)
        self.refused: dict[str, str] = {}
        self.duplicates: list[str] = []  # names stored again after their first copy
        self._members: list[str] = []
        self._handle = None
        self._handle_pid = None
        self._by_name: dict[str, list[str]] | None = None
        self._member_set: set[str] | None = None

    # subclasses fill _members / refused in _scan and implement _open / _read
    def members(self) -> list[str]:
        """Every safe regular-file member, sorted."""
        return list(self._members)

    def images(self) -> list[str]:
        """Members with an image extension (case-insensitive), sorted."""
        return [m for m in self._members if is_image_name(m)]

    def storage_order(self, members: list[str]) -> list[str]:
        """``members`` in the order they are stored: the fast order to read them in."""
        return list(members)

    def fingerprint(self, sampled: int = 16) -> str:
        """A digest of the image members' names and sizes and of ``sampled`` evenly spread members'
        bytes: the same dataset, wherever it lies, at the cost of a few reads."""
        digest = hashlib.blake2b(digest_size=16)
        images = self.images()
        for member in images:
            digest.update(f"{member}\t{self._size(member)}\n".encode("utf-8", "surrogateescape"))
        # a compressed tar is only cheap to read from its start; elsewhere members are spread
        sample = self.storage_order(images)[:sampled] if self.sequential else images[::max(1, -(-len(images) // sampled))]
        for member in sample:
            try:
                digest.update(self.read(member))
            except FaceauditError:  # unreadable: its name and size stand for it
                pass
        return digest.hexdigest()

    def read(self, member: str) -> bytes:
        if member in self.refused:
            raise FaceauditError(f"{self.path}: member {member!r} refused ({self.refused[member]})")
        if member not in self._set():
            raise FaceauditError(f"{self.path}: no member {member!r}")
        try:
            return self._read(self._open_handle(), member)
        except OSError as exc:
            raise FaceauditError(f"{self.path}: cannot read {member!r} ({exc})") from None

    def find(self, relpath: str) -> str | None:
        """The member for ``relpath``: exact, with or without one top-level folder, else by unique file name."""
        wanted = str(PurePosixPath(relpath.replace("\\", "/").lstrip("/"))).removeprefix("./")
        members = self._set()
        if wanted in members:
            return wanted
        parts = PurePosixPath(wanted).parts
        if len(parts) > 1 and "/".join(parts[1:]) in members:
            return "/".join(parts[1:])
        for prefix in self._top_folders():
            if f"{prefix}/{wanted}" in members:
                return f"{prefix}/{wanted}"
        candidates = self._names().get(PurePosixPath(wanted).name, [])
        if len(candidates) == 1:
            return candidates[0]
        if len(parts) > 1:  # several files share the name: prefer the one under the same folder
            tail = [c for c in candidates if c.endswith("/" + "/".join(parts[-2:]))]
            if len(tail) == 1:
                return tail[0]
        return None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = self._handle_pid = None

    def __len__(self) -> int:
        return len(self._members)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_handle=None, _handle_pid=None, _by_name=None, _member_set=None)
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} ({len(self._members)} files)>"

    # ---- internals
    def _open_handle(self):
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = self._open()
            self._handle_pid = os.getpid()
        return self._handle

    def _set(self) -> set[str]:
        if self._member_set is None:
            self._member_set = set(self._members)
        return self._member_set

    def _names(self) -> dict[str, list[str]]:
        if self._by_name is None:
            self._by_name = {}
            for member in self._members:
                self._by_name.setdefault(PurePosixPath(member).name, []).append(member)
        return self._by_name

    def _top_folders(self) -> list[str]:
        return sorted({m.split("/", 1)[0] for m in self._members if "/" in m})

    def _open(self):
        return None

    def _size(self, member: str) -> int:
        raise NotImplementedError

    def _read(self, handle, member: str) -> bytes:
        raise NotImplementedError


class FolderSource(ImageSource):
    kind = "folder"

    def __init__(self, path: Path):
        super().__init__(path)
        self._sizes: dict[str, int] = {}  # one stat per file, kept for the fingerprint
        for root, dirs, files in os.walk(self.path):
            dirs.sort()
            rel_root = Path(root).relative_to(self.path)
            for name in files:
                try:
                    info = os.stat(Path(root) / name)  # follows symlinks: the user's own disk
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    self._sizes[(rel_root / name).as_posix()] = info.st_size
        self._members = sorted(self._sizes)

    def _read(self, handle, member: str) -> bytes:
        return (self.path / member).read_bytes()

    def _size(self, member: str) -> int:
        return self._sizes[member]


class ZipSource(ImageSource):
    kind = "zip"

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            with zipfile.ZipFile(self.path) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise FaceauditError(f"{self.path}: corrupt or unreadable zip archive ({exc})") from None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.is_dir():
                continue
            if info.filename in self._infos or info.filename in self.refused:
                self.duplicates.append(info.filename)
                continue
            reason = unsafe_reason(info.filename)
            mode = info.external_attr >> 16
            if reason is None and stat.S_ISLNK(mode):
                reason = "symbolic link"
            elif reason is None and mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
                reason = "device or special file"
            reason = reason or size_reason(info.file_size, info.compress_size)
            if reason:
                self.refused[info.filename] = reason
            else:
                self._infos[info.filename] = info
        self._members = sorted(self._infos)

    def _open(self):
        return zipfile.ZipFile(self.path)

    def _size(self, member: str) -> int:
        return self._infos[member].file_size

    def _read(self, handle, member: str) -> bytes:
        info = self._infos[member]  # the first copy of a name stored twice
        try:
            with handle.open(info) as stream:
                data = stream.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            raise OSError(f"damaged member: {exc}") from None
        except (NotImplementedError, RuntimeError) as exc:  # e.g. Deflate64, or an encrypted member
            raise OSError(f"unsupported member: {exc}") from None
        if len(data) > info.file_size:
            raise OSError(f"damaged member: longer than the {info.file_size:,} bytes its header declares")
        return data


class TarSource(ImageSource):
    kind = "tar"

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            with tarfile.open(self.path, "r:*") as archive:
                infos = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise FaceauditError(f"{self.path}: corrupt or unreadable tar archive ({exc})") from None
        self._opener = _decompressor(self.path)
        self.sequential = self._opener is not open
        self._offsets: dict[str, tuple[int, int]] = {}
        self._order: dict[str, int] = {}
        compressed = self.path.stat().st_size if self.sequential else None
        for position, info in enumerate(infos):
            if info.isdir():
                continue
            if info.name in self._offsets or info.name in self.refused:
                self.duplicates.append(info.name)
                continue
            reason = unsafe_reason(info.name)
            if reason is None and (info.issym() or info.islnk()):
                reason = "link"
            elif reason is None and not info.isreg():
                reason = "device or special file"
            # in a compressed tar a member can expand at most as far as the whole archive allows
            reason = reason or size_reason(info.size, compressed if compressed is not None else info.size)
            if reason:
                self.refused[info.name] = reason
                continue
            self._offsets[info.name] = (info.offset_data, info.size)
            self._order[info.name] = position
        self._members = sorted(self._offsets)

    def storage_order(self, members: list[str]) -> list[str]:
        return sorted(members, key=lambda m: self._order.get(m, -1))

    def _size(self, member: str) -> int:
        return self._offsets[member][1]

    def _open(self):
        return self._opener(self.path, "rb")

    def _read(self, handle, member: str) -> bytes:
        offset, size = self._offsets[member]
        try:  # in a compressed stream, seeking backwards restarts decompression
            handle.seek(offset)
            data = handle.read(size)
        except (EOFError, zlib.error, lzma.LZMAError) as exc:
            raise OSError(f"damaged archive: {exc}") from None
        if len(data) != size:
            raise OSError(f"truncated member ({len(data)} of {size} bytes)")
        return data


def _decompressor(path: Path):
    """The ``open`` that yields a tar's raw bytes, chosen by the file's magic number."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open
    if magic.startswith(b"BZh"):
        return bz2.open
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open
    return open


def open_source(path: str | os.PathLike) -> ImageSource:
    """A folder, ``.zip`` or ``.tar``/``.tar.gz``/``.tgz`` (also bz2, xz) as an :class:`ImageSource`."""
    path = Path(path)
    if path.is_dir():
        return FolderSource(path)
    if not path.exists():
        raise FaceauditError(f"{path}: no such folder or archive")
    if zipfile.is_zipfile(path):
        return ZipSource(path)
    try:
        is_tar = tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError):
        is_tar = False
    if is_tar:
        return TarSource(path)
    name = path.name.lower()
    if name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        raise FaceauditError(f"{path}: corrupt or truncated archive")
    raise FaceauditError(f"{path}: unsupported source (expected a folder, .zip, .tar, .tar.gz or .tgz)")
