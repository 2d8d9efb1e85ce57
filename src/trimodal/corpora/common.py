"""What the corpus readers share: listing files, safe tar iteration, unit ids, the base reader
(`PositionalCorpus`: read a unit whole or one worker's part) and the unit layouts of folders,
WebDataset tars and Hugging Face datasets on disk.

Readers must never trust names found inside archives: a tar member called `../x` or `/etc/x`
is only data to us, but a later stage that extracts or writes by key could be tricked into
writing outside its folder. So such members are rejected here, once, for every reader.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Collection, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from trimodal.config import ConfigError
from trimodal.corpora.samples import SkipSample, WorkUnit

log = logging.getLogger(__name__)

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


# --- what the image and audio readers share -------------------------------------------------
class PositionalCorpus:
    """Base of the image and audio readers: where the corpus is, and reading a unit by position.

    `read(unit)` gives every entry of a unit in order; `read_part(unit, w, n)` only those at
    positions i % n == w, so each DataLoader worker of a job opens only its own samples' files.
    A reader writes `units()` and `_read_positions(unit, keep)`.
    """

    #: The name when neither the options nor the path give one.
    default_name = "corpus"

    def __init__(self, path: str, name: str = ""):
        self.path = str(path)
        self.name = name or posixpath.basename(self.path.rstrip("/")) or self.default_name
        self.fs, self.root = url_to_fs(self.path)

    def read(self, unit: WorkUnit) -> Iterator[Any]:
        return self._read_positions(unit, keep_all)

    def read_part(self, unit: WorkUnit, part: int, n_parts: int) -> Iterator[Any]:
        return self._read_positions(unit, keep_part(part, n_parts))

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]) -> Iterator[Any]:
        raise NotImplementedError

    def _read(self, path: str) -> bytes | None:
        """A listed file's bytes, or None when it has gone (see read_file_or_none)."""
        return read_file_or_none(self.fs, path)

    def relative(self, path: str) -> str:
        """A listed file's path below the corpus root (its name when the corpus is one file)."""
        return posixpath.relpath(path, self.root) if path != self.root else posixpath.basename(path)


def folder_units(corpus: PositionalCorpus, extensions: Collection[str], unit_size: int) -> list[WorkUnit]:
    """Files below the root grouped into samples by (directory, key); units are chunks of
    `unit_size` samples within one directory, so a new directory does not renumber the units
    of the others. Payload: {"samples": [(key, {ext: path})]}."""
    groups: dict[str, dict[str, dict[str, str]]] = {}
    for f in list_files(corpus.path):
        rel = corpus.relative(f)
        key, ext = split_key(rel)
        if ext in extensions:
            groups.setdefault(posixpath.dirname(rel), {}).setdefault(key, {})[ext] = f
    units = []
    for d, by_key in sorted(groups.items()):
        keys = sorted(by_key)
        for i in range(0, len(keys), unit_size):
            units.append(WorkUnit(id=unit_id_from(corpus.name, d, f"{i // unit_size:05d}"), source=corpus.name,
                                  payload={"samples": [(k, by_key[k]) for k in keys[i:i + unit_size]]}))
    return units


def tar_units(corpus: PositionalCorpus) -> list[WorkUnit]:
    """One unit per .tar below the root (WebDataset corpora). Payload: {"path": tar path}."""
    tars = list_files(corpus.path, (".tar",))
    if not tars:
        raise ConfigError(f"{corpus.path}: no .tar files found for format 'wds'")
    return [WorkUnit(id=unit_id_from(corpus.name, corpus.relative(t).removesuffix(".tar")),
                     source=corpus.name, payload={"path": t}) for t in tars]


def read_tar_positions(corpus: PositionalCorpus, unit: WorkUnit, keep: Callable[[int], bool],
                       to_sample: Callable[[TarGroup], Any]) -> Iterator[Any]:
    """The samples of one WebDataset tar unit at the positions `keep` selects.

    A tar streams in one pass, so every part reads the whole archive (and meets a corruption at
    the same place); only its own samples are built. A group with an unsafe member name and a
    corrupt or truncated archive become counted skips (the latter once, by the part that owns
    the position where the archive broke off), never a crash.
    """
    path = unit.payload["path"]
    position = 0
    try:
        with corpus.fs.open(path, "rb") as f:
            for group in iter_tar_groups(f, path):
                position += 1
                if not keep(position - 1):
                    continue
                if group.unsafe:
                    yield SkipSample(group.key, UNSAFE_MEMBER_NAME)
                    continue
                yield to_sample(group)
    except (tarfile.TarError, EOFError, OSError) as err:
        if keep(position):
            log.warning("%s: archive is corrupt or truncated (%s); kept the samples before it", path, err)
            yield SkipSample(unit.id, CORRUPT_ARCHIVE)


# --- Hugging Face datasets saved with save_to_disk ------------------------------------------
def hf_splits(path: str, split: str = "") -> dict[str, Any]:
    """{split name: Dataset} of a Dataset or DatasetDict saved with `save_to_disk`; `split`
    picks one split of a DatasetDict ("" = all, in sorted order; a plain Dataset is "")."""
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: not a dataset saved with save_to_disk ({err})") from err
    if not isinstance(loaded, datasets.DatasetDict):
        return {split or "": loaded}
    splits = {k: loaded[k] for k in sorted(loaded)}
    if split:
        if split not in splits:
            raise ConfigError(f"{path}: no split {split!r}; have {sorted(splits)}")
        splits = {split: splits[split]}
    return splits


def row_range_rows(splits: dict[str, Any], unit: WorkUnit, keep: Callable[[int], bool]
                   ) -> tuple[dict[str, list], list[str]]:
    """The rows `keep` selects of a `row_range_units` unit, fetched from Arrow in one call
    (another worker's rows, e.g. their image or audio bytes, are never copied out): the
    columns {name: values} and each row's default key ("split:index", or "index")."""
    ds = splits[unit.payload["split"]]
    start, stop = unit.payload["start"], unit.payload["stop"]
    prefix = f"{unit.payload['split']}:" if unit.payload["split"] else ""
    mine = [j for j in range(stop - start) if keep(j)]
    if not mine:
        return {}, []
    chunk = ds[start:stop] if len(mine) == stop - start else ds[[start + j for j in mine]]
    return chunk, [f"{prefix}{start + j}" for j in mine]


def row_range_units(corpus: PositionalCorpus, splits: dict[str, Any], unit_size: int) -> list[WorkUnit]:
    """Units of `unit_size` consecutive rows per split. Payload: {"split", "start", "stop"}."""
    units = []
    for split, ds in splits.items():
        for start in range(0, len(ds), unit_size):
            units.append(WorkUnit(unit_id_from(corpus.name, split, f"{start // unit_size:05d}"), corpus.name,
                                  {"split": split, "start": start, "stop": min(start + unit_size, len(ds))}))
    return units
