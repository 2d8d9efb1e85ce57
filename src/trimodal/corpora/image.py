"""Image-text corpus readers: folders, WebDataset tars, parquet/jsonl, HF datasets on disk.

Every reader implements `trimodal.jobs.protocol.Corpus`: it cuts its input into work units
(stable ids, deterministic order) and yields `ImageText` samples with *raw image bytes*.
Decoding happens later in the job's DataLoader workers, so a reader only rejects what it can
see without decoding (missing or empty files, captions that are not UTF-8, unsafe archive
names) as `SkipSample`, and never stops a unit for one bad sample.

Every reader also has `read_part(unit, part, n_parts)`: exactly the entries of `read(unit)` at
positions p with p % n_parts == part, in order. Job worker w of N calls it with (w, N) so that
it opens, parses and copies only its own samples (a folder worker opens only its own files);
interleaving the parts gives back `read(unit)`, which is what keeps job output independent of
the worker count.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from trimodal.config import ConfigError, require
from trimodal.corpora.common import (
    BAD_CAPTION_ENCODING, BAD_RECORD, EMPTY_IMAGE, MISSING_CAPTION, MISSING_IMAGE, PositionalCorpus,
    TarGroup, decode_caption, folder_units, has_lone_surrogates, is_regular_path, list_files,
    hf_splits, read_tar_positions, row_range_rows, row_range_units, tar_units, unit_id_from,
)
from trimodal.corpora.samples import ImageText
from trimodal.corpora.samples import SkipSample, WorkUnit

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp")
FORMATS: tuple[str, ...] = ("folder", "wds", "parquet", "jsonl", "hf")


@dataclass(frozen=True)
class ImageCorpusOptions:
    """How to read an image-text corpus. Column names apply to parquet/jsonl/hf only."""

    name: str = ""
    #: folder/hf: samples per work unit (a unit is the unit of atomic output and resume).
    unit_size: int = 1000
    #: parquet: "file" (one unit per file) or "row_group" (one unit per row group).
    unit_by: str = "file"
    image_column: str = "image"
    #: When set, images are read from this column's paths (relative to the table's folder).
    image_path_column: str = ""
    caption_column: str = "caption"
    key_column: str = "key"
    #: hf: which split of a DatasetDict ("" = all splits, in sorted order).
    split: str = ""

    def __post_init__(self) -> None:
        require(self.unit_size > 0, f"unit_size must be > 0, got {self.unit_size}")
        require(self.unit_by in ("file", "row_group"),
                f"unit_by must be 'file' or 'row_group', got {self.unit_by!r}")
        require(bool(self.caption_column), "caption_column must not be empty")


def _skip(key: str, reason: str) -> SkipSample:
    return SkipSample(key, reason)


def _caption_or_skip(key: str, data: bytes | str | None) -> str | SkipSample:
    if data is None:
        return _skip(key, MISSING_CAPTION)
    if isinstance(data, str):
        if has_lone_surrogates(data):
            return _skip(key, BAD_CAPTION_ENCODING)
        return data.strip()
    try:
        return decode_caption(data)
    except UnicodeDecodeError:
        return _skip(key, BAD_CAPTION_ENCODING)


def _sample(key: str, image: bytes | None, caption: bytes | str | None, source: str,
            meta: dict[str, Any] | None = None) -> ImageText | SkipSample:
    """One sample from its raw parts, or the reason it cannot be one (image checked first)."""
    if image is None:
        return _skip(key, MISSING_IMAGE)
    if len(image) == 0:
        return _skip(key, EMPTY_IMAGE)
    text = _caption_or_skip(key, caption)
    if isinstance(text, SkipSample):
        return text
    return ImageText(key=key, image=bytes(image), caption=text, source=source, meta=meta or {})


def _parse_meta(key: str, data: bytes | None) -> dict[str, Any]:
    """Sidecar JSON is optional metadata: a broken one is logged, the sample is kept."""
    if not data:
        return {}
    try:
        meta = json.loads(data.decode("utf-8"))
        return meta if isinstance(meta, dict) else {"value": meta}
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        log.debug("%s: ignoring unreadable metadata json (%s)", key, err)
        return {}


# --- image folder with caption files ---------------------------------------------------------
class FolderImageCorpus(PositionalCorpus):
    """`a.jpg` + `a.txt` (+ optional `a.json`) anywhere below a folder.

    Units are chunks of `unit_size` samples within one directory, so adding a new directory
    does not renumber the units of the others.
    """

    default_name = "folder"

    def __init__(self, path: str, options: ImageCorpusOptions | None = None):
        self.options = options or ImageCorpusOptions()
        super().__init__(path, self.options.name)

    def units(self) -> list[WorkUnit]:
        return folder_units(self, (*IMAGE_EXTENSIONS, "txt", "json"), self.options.unit_size)

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[ImageText | SkipSample]:
        for i, (key, files) in enumerate(unit.payload["samples"]):
            if not keep(i):
                continue  # not even opened: another worker's file
            image_path = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
            image = self._read(image_path) if image_path else None
            caption = self._read(files["txt"]) if "txt" in files else None
            meta = _parse_meta(key, self._read(files["json"])) if "json" in files else {}
            yield _sample(key, image, caption, unit.source, meta)


# --- img2dataset-style WebDataset tars --------------------------------------------------------
class WdsImageCorpus(PositionalCorpus):
    """WebDataset tars (`.jpg/.png/.webp` + `.txt` + `.json` per key): one unit per tar."""

    default_name = "wds"

    def __init__(self, path: str, options: ImageCorpusOptions | None = None):
        self.options = options or ImageCorpusOptions()
        super().__init__(path, self.options.name)

    def units(self) -> list[WorkUnit]:
        return tar_units(self)

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[ImageText | SkipSample]:
        return read_tar_positions(self, unit, keep, lambda group: self._group_sample(group, unit.source))

    @staticmethod
    def _group_sample(group: TarGroup, source: str) -> ImageText | SkipSample:
        image = next((group.files[e] for e in IMAGE_EXTENSIONS if e in group.files), None)
        return _sample(group.key, image, group.files.get("txt"), source, _parse_meta(group.key, group.files.get("json")))


# --- parquet and jsonl ------------------------------------------------------------------------
def _image_field(key: str, value: Any) -> bytes | None | SkipSample:
    """Image bytes from a table cell: bytes, an HF-style {"bytes", "path"} dict, or base64 text."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("bytes")
        if value is None:
            return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return _skip(key, BAD_RECORD)
    return _skip(key, BAD_RECORD)


class _TableReading:
    """Row -> sample logic shared by parquet, jsonl and HF readers."""

    options: ImageCorpusOptions
    fs: Any

    def _row_sample(self, row: dict[str, Any], default_key: str, base_dir: str,
                    source: str) -> ImageText | SkipSample:
        o = self.options
        key = row.get(o.key_column) if o.key_column else None
        key = str(key) if key not in (None, "") else default_key
        if o.image_path_column:
            rel = row.get(o.image_path_column)
            if not rel:
                return _skip(key, MISSING_IMAGE)
            full = rel if rel.startswith("/") or "://" in rel else posixpath.join(base_dir, rel)
            image: bytes | None | SkipSample = None
            # Only regular files: a FIFO named in a table would block the worker, a link to
            # /dev/zero would fill memory.
            if is_regular_path(self.fs, full):
                try:
                    with self.fs.open(full, "rb") as f:
                        image = f.read()
                except (FileNotFoundError, IsADirectoryError):
                    image = None
        else:
            image = _image_field(key, row.get(o.image_column))
        if isinstance(image, SkipSample):
            return image
        meta = {k: v for k, v in row.items()
                if k not in (o.image_column, o.caption_column) and _json_scalar(v)}
        return _sample(key, image, row.get(o.caption_column), source, meta)


def _json_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


class ParquetImageCorpus(_TableReading, PositionalCorpus):
    """Parquet files with image bytes (or paths) and captions; units = files or row groups."""

    default_name = "parquet"

    def __init__(self, path: str, options: ImageCorpusOptions | None = None):
        self.options = options or ImageCorpusOptions()
        super().__init__(path, self.options.name)

    def units(self) -> list[WorkUnit]:
        files = list_files(self.path, (".parquet",))
        if not files:
            raise ConfigError(f"{self.path}: no .parquet files found for format 'parquet'")
        units = []
        for f in files:
            stem = self.relative(f).removesuffix(".parquet")
            # Every file's footer is read up front, so a file that is not parquet stops the job
            # before any work with a message naming it (not halfway, from a worker).
            try:
                with self.fs.open(f, "rb") as fh:
                    n_groups = pq.ParquetFile(fh).num_row_groups
            except (OSError, pa.ArrowException) as err:
                raise ConfigError(f"{f}: not a readable parquet file ({err})") from err
            if self.options.unit_by == "file":
                units.append(WorkUnit(unit_id_from(self.name, stem), self.name, {"path": f}))
                continue
            for g in range(n_groups):
                units.append(WorkUnit(unit_id_from(self.name, stem, f"rg{g:05d}"), self.name,
                                      {"path": f, "row_group": g}))
        return units

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[ImageText | SkipSample]:
        path = unit.payload["path"]
        base_dir = posixpath.dirname(path)
        stem = posixpath.basename(path).removesuffix(".parquet")
        position = 0
        with self.fs.open(path, "rb") as fh:
            try:
                pf = pq.ParquetFile(fh)
            except (OSError, pa.ArrowException) as err:
                raise ConfigError(f"{path}: not a readable parquet file ({err})") from err
            groups = [unit.payload["row_group"]] if "row_group" in unit.payload \
                else range(pf.num_row_groups)
            row_index = sum(pf.metadata.row_group(g).num_rows for g in range(groups[0])) \
                if groups else 0
            missing = {c for c in self._needed_columns() if c not in pf.schema_arrow.names}
            if missing:
                raise ConfigError(f"{path}: missing column(s) {sorted(missing)}; have "
                                  f"{pf.schema_arrow.names} (set the column options)")
            for g in groups:
                table = pf.read_row_group(g)
                # Only this part's rows become Python objects (image bytes are most of a row).
                mine = [j for j in range(table.num_rows) if keep(position + j)]
                for j, row in zip(mine, table.take(pa.array(mine, pa.int64())).to_pylist()):
                    yield self._row_sample(row, f"{stem}:{row_index + j}", base_dir, unit.source)
                row_index += table.num_rows
                position += table.num_rows

    def _needed_columns(self) -> list[str]:
        o = self.options
        return [o.image_path_column or o.image_column, o.caption_column]


class JsonlImageCorpus(_TableReading, PositionalCorpus):
    """JSON-lines files, one record per line: image paths (or base64 bytes) and captions."""

    default_name = "jsonl"

    def __init__(self, path: str, options: ImageCorpusOptions | None = None):
        self.options = options or ImageCorpusOptions()
        super().__init__(path, self.options.name)

    def units(self) -> list[WorkUnit]:
        files = list_files(self.path, (".jsonl",))
        if not files:
            raise ConfigError(f"{self.path}: no .jsonl files found for format 'jsonl'")
        return [WorkUnit(unit_id_from(self.name, self.relative(f).removesuffix(".jsonl")), self.name, {"path": f})
                for f in files]

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[ImageText | SkipSample]:
        """Positions count non-blank lines (each yields a sample or a skip)."""
        path = unit.payload["path"]
        base_dir = posixpath.dirname(path)
        stem = posixpath.basename(path).removesuffix(".jsonl")
        position = 0
        with self.fs.open(path, "rb") as fh:
            for i, line in enumerate(fh):
                if not line.strip():
                    continue
                position += 1
                if not keep(position - 1):
                    continue
                default_key = f"{stem}:{i}"
                try:
                    row = json.loads(line.decode("utf-8"))
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                except (UnicodeDecodeError, ValueError):
                    yield _skip(default_key, BAD_RECORD)
                    continue
                yield self._row_sample(row, default_key, base_dir, unit.source)


# --- Hugging Face datasets saved with save_to_disk --------------------------------------------
class HFImageCorpus(_TableReading, PositionalCorpus):
    """A `datasets` Dataset/DatasetDict saved to disk; units are row ranges of `unit_size`.

    An `Image` feature column is read with `decode=False`, so the reader hands over the
    stored bytes and decoding stays in the job workers like every other format.
    """

    default_name = "hf"

    def __init__(self, path: str, options: ImageCorpusOptions | None = None):
        self.options = options or ImageCorpusOptions()
        super().__init__(path, self.options.name)
        self._datasets: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._datasets is None:
            import datasets

            out = {}
            for split, ds in hf_splits(self.path, self.options.split).items():
                col = self.options.image_column
                if not self.options.image_path_column:
                    if col not in ds.column_names:
                        raise ConfigError(f"{self.path}: no image column {col!r}; have {ds.column_names}")
                    if isinstance(ds.features[col], datasets.Image):
                        ds = ds.cast_column(col, datasets.Image(decode=False))
                if self.options.caption_column not in ds.column_names:
                    raise ConfigError(f"{self.path}: no caption column "
                                      f"{self.options.caption_column!r}; have {ds.column_names}")
                out[split] = ds
            self._datasets = out
        return self._datasets

    def units(self) -> list[WorkUnit]:
        return row_range_units(self, self._load(), self.options.unit_size)

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[ImageText | SkipSample]:
        chunk, keys = row_range_rows(self._load(), unit, keep)
        for k, key in enumerate(keys):
            row = {c: chunk[c][k] for c in chunk}
            yield self._row_sample(row, key, self.root, unit.source)

    def __getstate__(self) -> dict[str, Any]:
        # Arrow-backed datasets reopen cheaply; do not ship them to DataLoader workers.
        state = dict(self.__dict__)
        state["_datasets"] = None
        return state


def open_image_corpus(path: str, fmt: str, options: ImageCorpusOptions | None = None):
    """The reader for `fmt` (one of FORMATS) over `path`."""
    readers = {"folder": FolderImageCorpus, "wds": WdsImageCorpus, "parquet": ParquetImageCorpus,
               "jsonl": JsonlImageCorpus, "hf": HFImageCorpus}
    if fmt not in readers:
        raise ConfigError(f"unknown image corpus format {fmt!r}; expected one of {list(readers)}")
    return readers[fmt](path, options)
