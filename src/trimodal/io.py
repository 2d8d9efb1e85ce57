"""File plumbing every stage shares: atomic writes, opening fsspec URLs, choosing the device.

Atomic writes. An output is written under a temporary name beside its target and renamed
into place only once complete, so a reader (or a rerun deciding what is done) never sees half
a file, and a kill leaves the old file or none. The temporary name is unique per write
(`.<name>.<random>.tmp`, hidden and ending in `.tmp`), so two writers of the same output never
write into each other's file: the last rename wins with a whole file. On local disks the data
is fsynced before the rename and the folder after it, so a power cut cannot leave a renamed
but empty file (checkpoints, shards, tables and manifests are what later stages trust); on
object stores the rename is a copy, which is atomic per object.

Device. "auto" takes this process's GPU when CUDA is available, else the CPU; "cuda" takes
this process's GPU; "cuda:N" and "cpu" are taken as given. "This process's GPU" is the local
rank modulo the visible devices, so eight ranks on a node spread over its GPUs, and a SLURM
task that sees one GPU takes it whatever its local rank. Asking for CUDA where there is none
is a ConfigError, not a crash later in the first tensor copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from typing import IO, TYPE_CHECKING, Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from trimodal.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Every temporary file of an atomic write ends with this.
TEMP_SUFFIX = ".tmp"


# --- URLs ---------------------------------------------------------------------------------
def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a local path or any fsspec URL."""
    return fsspec.core.url_to_fs(str(url))


def open_url(url: str, mode: str = "rb", **kwargs: Any) -> fsspec.core.OpenFile:
    """`fsspec.open`: a context manager giving a file object for a local path or URL."""
    return fsspec.open(str(url), mode, **kwargs)


def join(url: str, *parts: str) -> str:
    """`url/part/...` for local paths and URLs alike (no doubled or missing slashes)."""
    return posixpath.join(str(url).rstrip("/"), *parts) if parts else str(url)


# --- atomic writes ------------------------------------------------------------------------
def temp_path(path: str) -> str:
    """A fresh temporary name beside `path` (same folder, so the rename stays on one disk)."""
    head, name = posixpath.split(path)
    tmp = f".{name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
    return posixpath.join(head, tmp) if head else tmp


def is_temp_name(name: str) -> bool:
    """True for a (base) name made by `temp_path`: a leftover of an interrupted write."""
    base = posixpath.basename(name.rstrip("/"))
    return base.startswith(".") and base.endswith(TEMP_SUFFIX)


def stale_temps(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Temporary files of writes of `path` (a path inside `fs`) that never finished."""
    head, name = posixpath.split(path)
    try:
        found = fs.glob(posixpath.join(head, f".{name}.*{TEMP_SUFFIX}"))
    except FileNotFoundError:
        return []
    return sorted(p for p in found if is_temp_name(p))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return  # not a folder we can open (some platforms): the file itself was synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A file open for writing under a temporary name beside `url`; `commit()` renames it into
    place, `discard()` removes it. As a context manager it commits on success and discards on
    an exception. For writes that stream for a while (a shard); `atomic_open` and
    `atomic_write` are the short forms.
    """

    def __init__(self, url: str, mode: str = "wb", fsync: bool = True):
        if "w" not in mode:
            raise ValueError(f"AtomicFile writes; mode {mode!r} has no 'w'")
        self.url = str(url)
        self.fs, self.path = url_to_fs(self.url)
        self.tmp = temp_path(self.path)
        self._local = isinstance(self.fs, LocalFileSystem)
        self._fsync = fsync and self._local
        if self._local:
            os.makedirs(posixpath.dirname(self.path) or ".", exist_ok=True)
            encoding = None if "b" in mode else "utf-8"
            self.file: IO = open(self.tmp, mode, encoding=encoding)  # noqa: SIM115 - closed by commit/discard
        else:
            self.file = self.fs.open(self.tmp, mode)
        self._done = False

    def commit(self) -> None:
        """Close the file and rename it over the target."""
        if self._done:
            raise ValueError(f"{self.url}: atomic write already finished")
        try:
            if self._fsync:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if self._local:
                os.replace(self.tmp, self.path)
                if self._fsync:
                    _fsync_dir(posixpath.dirname(self.path))
            else:
                self.fs.mv(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._done = True

    def discard(self) -> None:
        """Close and remove the temporary file; the target is left as it was."""
        self._done = True
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(FileNotFoundError, OSError):
            if self._local:
                os.remove(self.tmp)
            elif self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)

    def __enter__(self) -> IO:
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_open(url: str, mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """`with atomic_open(url, "w") as f: ...`: `url` appears whole when the block ends, and
    not at all (the old file stays) when it raises."""
    target = AtomicFile(url, mode, fsync)
    with target as f:
        yield f


def atomic_write(url: str, data: bytes | str, fsync: bool = True) -> None:
    """Write `data` (text is UTF-8) to `url` atomically."""
    with atomic_open(url, "wb", fsync) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_write_json(url: str, obj: Any, fsync: bool = True, **dump_kwargs: Any) -> None:
    """`json.dumps(obj, **dump_kwargs)` written to `url` atomically."""
    atomic_write(url, json.dumps(obj, **dump_kwargs), fsync)


# --- device -------------------------------------------------------------------------------
def resolve_device(name: str = "auto", local_rank: int = 0) -> "torch.device":
    """The torch device a flag or config value names (see the module docstring)."""
    import torch

    name = (name or "auto").strip()
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", local_rank % count)
    if device.index >= count:
        raise ConfigError(f"device {name!r}: only {count} CUDA device(s) visible")
    return device
