"""Helpers shared by corpus readers: listing files, safe tar iteration, unit ids.

Readers must never trust names found inside archives: a tar member called `../x` or `/etc/x`
is only data to us, but a later stage that extracts or writes by key could be tricked into
writing outside its folder. So such members are rejected here, once, for every reader.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

#: Skip reasons shared by readers (jobs count skips by these strings).
MISSING_CAPTION = "missing_caption"
MISSING_IMAGE = "missing_image"
EMPTY_IMAGE = "empty_image"
BAD_CAPTION_ENCODING = "bad_caption_encoding"
UNSAFE_MEMBER_NAME = "unsafe_member_name"
CORRUPT_ARCHIVE = "corrupt_archive"
BAD_RECORD = "bad_record"

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def url_to_fs(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for any fsspec URL or local path."""
    fs, root = fsspec.core.url_to_fs(str(path))
    return fs, root


def unit_id_from(*parts: str) -> str:
    """A stable, filesystem-safe unit id built from path pieces (used as an output file name)."""
    joined = "__".join(p.strip("/") for p in parts if p and p.strip("/"))
    safe = _UNSAFE_ID_CHARS.sub("_", joined.replace("/", "__")).strip("._")
    return safe or "root"


def list_files(path: str, extensions: tuple[str, ...] | None = None) -> list[str]:
    """All files under `path` (a file or a folder, recursively), sorted, optionally by extension.

    Sorted because every rank must see the same unit list.
    """
    fs, root = url_to_fs(path)
    if not fs.exists(root):
        raise FileNotFoundError(f"corpus path does not exist: {path}")
    if fs.isfile(root):
        files = [root]
    else:
        files = sorted(p for p, info in fs.find(root, withdirs=False, detail=True).items()
                       if is_regular_file(p, info))
    if extensions is not None:
        exts = tuple(e.lower() for e in extensions)
        files = [f for f in files if f.lower().endswith(exts)]
    return files


def is_regular_file(path: str, info: dict) -> bool:
    """True for regular files and links to them; False for FIFOs, devices, sockets, link loops.

    A corpus folder is untrusted: a FIFO named `x.wav` would block a reader forever and a link
    to /dev/zero would fill memory, so only regular files are ever opened.
    """
    if info.get("islink"):  # local symlink: fsspec reports type "other"; follow it ourselves
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except OSError:  # dangling link or a loop
            return False
    return info.get("type") == "file"


def is_regular_path(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """`is_regular_file` for a path named inside a table (HF `path` cells): False if absent."""
    try:
        return is_regular_file(path, fs.info(path))
    except (FileNotFoundError, OSError):
        return False


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the name up to the first dot of its basename.

    `dir/000001.jpg` -> (`dir/000001`, `jpg`); `a.seg.json` -> (`a`, `seg.json`).
    """
    head, base = posixpath.split(name)
    if "." in base:
        stem, ext = base.split(".", 1)
    else:
        stem, ext = base, ""
    return (posixpath.join(head, stem) if head else stem), ext.lower()


def is_safe_member_name(name: str) -> bool:
    """False for absolute names, Windows drive names, and any `..` component."""
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return False
    parts = re.split(r"[\\/]+", name)
    return ".." not in parts


def has_lone_surrogates(text: str) -> bool:
    """True for text that cannot be written as UTF-8: JSON "\\udcff" escapes decode to lone
    surrogates, which no tokenizer accepts (the `str` twin of invalid UTF-8 bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_file_or_none(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """A listed file's bytes, or None if it vanished since the listing (a counted skip, not a
    crash). Local files use plain `open`: fsspec's file wrapper costs more than reading a small
    JPEG, and a folder corpus is millions of small files."""
    try:
        if isinstance(fs, LocalFileSystem):
            with open(path, "rb") as f:
                return f.read()
        with fs.open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def decode_caption(data: bytes) -> str:
    """UTF-8 caption with surrounding whitespace removed; raises UnicodeDecodeError if invalid."""
    return data.decode("utf-8").strip()


@dataclass
class TarGroup:
    """Consecutive tar members sharing one key (one sample of a WebDataset tar)."""

    key: str
    files: dict[str, bytes] = field(default_factory=dict)
    unsafe: bool = False


def iter_tar_groups(fileobj: IO[bytes], where: str) -> Iterator[TarGroup]:
    """Stream a tar and yield member groups by key, in archive order.

    Streaming mode (`r|*`) reads each member once, so a multi-GB shard never sits in memory
    and works on non-seekable remote files. Directories and links are ignored (img2dataset
    never writes them; a link could point anywhere). A group with any unsafe member name is
    yielded with `unsafe=True` and no data. A truncated/corrupt archive raises
    `tarfile.TarError` after the groups read so far; callers turn it into a counted skip.
    """
    current: TarGroup | None = None
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if member.isdir():
                continue
            key, ext = split_key(member.name)
            if current is not None and key != current.key:
                yield current
                current = None
            if current is None:
                current = TarGroup(key=key)
            if not is_safe_member_name(member.name):
                current.unsafe = True
                current.files.clear()
                continue
            if not member.isfile() or current.unsafe:
                continue
            extracted = tar.extractfile(member)
            current.files[ext] = extracted.read() if extracted is not None else b""
    if current is not None:
        yield current


def keep_all(_: int) -> bool:
    return True


def keep_part(part: int, n_parts: int) -> Callable[[int], bool]:
    """Which positions of a unit belong to part `part` of `n_parts` (round robin): what a
    reader's `read_part` keeps, so DataLoader worker w touches only its own samples' files."""
    if n_parts < 1 or not 0 <= part < n_parts:
        raise ValueError(f"part {part} out of range for {n_parts} parts")
    return lambda i: i % n_parts == part
