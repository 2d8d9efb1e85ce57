"""Text corpus readers -> `TextDoc`: a folder of .txt files, JSON lines, parquet, HF datasets.

Each reader implements the `Corpus` protocol of `trimodal.jobs.protocol`: `units()` cuts the
input into work units in a deterministic order (files, parquet row groups, row ranges) and
`read(unit)` yields the unit's documents in order. A bad entry (invalid UTF-8, broken JSON,
missing or non-string field, empty document) is yielded as `SkipSample(key, reason)` so the
job counts it and goes on; a problem with a whole file (missing column, unreadable file) is a
`CorpusError` naming the file, because skipping a whole file silently would hide real data loss.
All paths are fsspec URLs.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Iterator, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from trimodal.corpora.common import has_lone_surrogates, is_regular_file
from trimodal.corpora.samples import TextDoc
from trimodal.corpora.samples import SkipSample, WorkUnit
from trimodal.errors import UserError

log = logging.getLogger(__name__)

TextFormat = Literal["auto", "txt", "jsonl", "parquet", "hf"]


class CorpusError(UserError, ValueError):
    """A whole input file or folder cannot be read as the corpus it claims to be."""


def _unit_id(rel: str) -> str:
    """A file-name-safe, stable id from a relative path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rel).strip("_") or "unit"


def _check_text(key: str, value: object) -> str | SkipSample:
    """The document text, or why not. Reasons are fixed strings so that job reports count them."""
    if value is None:
        return SkipSample(key, "missing text")
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return SkipSample(key, "invalid utf-8")
    if not isinstance(value, str):
        return SkipSample(key, "text is not a string")
    if has_lone_surrogates(value):
        return SkipSample(key, "invalid utf-8")
    if not value.strip():
        return SkipSample(key, "empty document")
    return value


def _list_files(root: str, suffixes: tuple[str, ...]) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    """(fs, base, sorted file paths): a single file, or every matching file under a folder."""
    fs, base = fsspec.core.url_to_fs(root)
    if not fs.exists(base):
        raise CorpusError(f"corpus path not found: {root}")
    if fs.isfile(base):
        parent = base.rsplit("/", 1)[0] if "/" in base else ""
        return fs, parent, [base]
    files = sorted(p for p, info in fs.find(base, detail=True).items()
                   if p.endswith(suffixes) and is_regular_file(p, info))
    if not files:
        raise CorpusError(f"{root}: no files ending in {list(suffixes)}")
    return fs, base, files


def _rel(path: str, base: str) -> str:
    return path[len(base):].lstrip("/") if base and path.startswith(base) else path.rsplit("/", 1)[-1]


def _url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path)


@dataclass
class TxtFolderCorpus:
    """One document per .txt file; the key is the path relative to the folder, sans suffix."""

    root: str
    name: str = "text"
    suffixes: tuple[str, ...] = (".txt",)
    #: Many small files per unit keeps the number of output files sane.
    files_per_unit: int = 1

    def units(self) -> list[WorkUnit]:
        if self.files_per_unit < 1:
            raise CorpusError(f"files_per_unit must be >= 1, got {self.files_per_unit}")
        fs, base, files = _list_files(self.root, self.suffixes)
        units = []
        for i in range(0, len(files), self.files_per_unit):
            chunk = files[i:i + self.files_per_unit]
            rels = [_rel(p, base) for p in chunk]
            uid = _unit_id(rels[0]) if len(chunk) == 1 else f"files-{i:09d}"
            units.append(WorkUnit(uid, self.name, {"paths": [_url(fs, p) for p in chunk], "rels": rels}))
        return units

    def read(self, unit: WorkUnit) -> Iterator[TextDoc | SkipSample]:
        for url, rel in zip(unit.payload["paths"], unit.payload["rels"]):
            key = rel.rsplit(".", 1)[0] if "." in rel else rel
            try:
                with fsspec.open(url, "rb") as f:
                    data = f.read()
            except OSError as err:
                log.warning("unreadable file %s: %s", url, err)
                yield SkipSample(key, "unreadable file")
                continue
            checked = _check_text(key, data)
            yield checked if isinstance(checked, SkipSample) else TextDoc(key, checked, self.name)


@dataclass
class JsonlCorpus:
    """One document per JSON line; a unit is one .jsonl file (or a single given file)."""

    root: str
    name: str = "text"
    field: str = "text"
    #: Field holding a unique id; default key is "<file>:<line number>".
    key_field: str | None = None
    suffixes: tuple[str, ...] = (".jsonl", ".json")

    def units(self) -> list[WorkUnit]:
        fs, base, files = _list_files(self.root, self.suffixes)
        return [WorkUnit(_unit_id(_rel(p, base)), self.name, {"path": _url(fs, p), "rel": _rel(p, base)})
                for p in files]

    def read(self, unit: WorkUnit) -> Iterator[TextDoc | SkipSample]:
        url, rel = unit.payload["path"], unit.payload["rel"]
        try:
            f = fsspec.open(url, "rb").open()
        except OSError as err:
            raise CorpusError(f"{url}: cannot open ({err})") from err
        with f:
            for lineno, raw in enumerate(f, start=1):
                key = f"{rel}:{lineno}"
                if not raw.strip():
                    continue  # blank lines are not entries
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    yield SkipSample(key, "invalid utf-8")
                    continue
                except json.JSONDecodeError:
                    yield SkipSample(key, "not valid JSON")
                    continue
                if not isinstance(record, dict):
                    yield SkipSample(key, "JSON line is not an object")
                    continue
                if self.key_field and record.get(self.key_field) is not None:
                    key = str(record[self.key_field])
                if self.field not in record:
                    yield SkipSample(key, f"missing field {self.field!r}")
                    continue
                checked = _check_text(key, record[self.field])
                yield checked if isinstance(checked, SkipSample) else TextDoc(key, checked, self.name)


@dataclass
class ParquetCorpus:
    """One document per row of a string/binary column; a unit is one row group of one file."""

    root: str
    name: str = "text"
    column: str = "text"
    key_column: str | None = None
    suffixes: tuple[str, ...] = (".parquet",)

    def units(self) -> list[WorkUnit]:
        fs, base, files = _list_files(self.root, self.suffixes)
        units = []
        for path in files:
            rel = _rel(path, base)
            try:
                with fs.open(path, "rb") as f:
                    meta = pq.ParquetFile(f)
                    names = meta.schema_arrow.names
                    n_groups = meta.num_row_groups
            except (OSError, pa.ArrowException) as err:
                raise CorpusError(f"{_url(fs, path)}: not a readable parquet file ({err})") from err
            for col in filter(None, (self.column, self.key_column)):
                if col not in names:
                    raise CorpusError(f"{_url(fs, path)}: no column {col!r}; columns are {names}")
            units += [WorkUnit(f"{_unit_id(rel)}-rg{g:05d}", self.name,
                               {"path": _url(fs, path), "rel": rel, "row_group": g})
                      for g in range(n_groups)]
        return units

    def read(self, unit: WorkUnit) -> Iterator[TextDoc | SkipSample]:
        url, rel, group = unit.payload["path"], unit.payload["rel"], unit.payload["row_group"]
        columns = [c for c in (self.column, self.key_column) if c]
        try:
            with fsspec.open(url, "rb") as f:
                pf = pq.ParquetFile(f)
                offset = sum(pf.metadata.row_group(g).num_rows for g in range(group))
                table = pf.read_row_group(group, columns=columns)
        except (OSError, pa.ArrowException) as err:
            raise CorpusError(f"{url}: cannot read row group {group} ({err})") from err
        col = table.column(self.column)
        # Read strings as raw bytes so that one invalid UTF-8 value is skipped, not fatal.
        if pa.types.is_string(col.type):
            col = col.cast(pa.binary())
        elif pa.types.is_large_string(col.type):
            col = col.cast(pa.large_binary())
        values = col.to_pylist()
        keys = table.column(self.key_column).to_pylist() if self.key_column else [None] * len(values)
        for i, (value, k) in enumerate(zip(values, keys)):
            key = str(k) if k is not None else f"{rel}:{offset + i}"
            checked = _check_text(key, value)
            yield checked if isinstance(checked, SkipSample) else TextDoc(key, checked, self.name)


@dataclass
class HFDiskCorpus:
    """A Hugging Face dataset saved with `save_to_disk`; a unit is a fixed range of rows."""

    root: str
    name: str = "text"
    field: str = "text"
    key_field: str | None = None
    #: Which split when the folder holds a DatasetDict.
    split: str | None = None
    rows_per_unit: int = 10_000

    def _dataset(self):
        import datasets  # heavy import, only when this reader is used

        try:
            ds = datasets.load_from_disk(self.root)
        except (FileNotFoundError, ValueError) as err:
            raise CorpusError(f"{self.root}: not a dataset saved with save_to_disk ({err})") from err
        if isinstance(ds, datasets.DatasetDict):
            splits = sorted(ds)
            split = self.split or (splits[0] if len(splits) == 1 else None)
            if split not in ds:
                raise CorpusError(f"{self.root}: choose a split with split=..., one of {splits}")
            ds = ds[split]
        for col in filter(None, (self.field, self.key_field)):
            if col not in ds.column_names:
                raise CorpusError(f"{self.root}: no column {col!r}; columns are {ds.column_names}")
        return ds

    def units(self) -> list[WorkUnit]:
        if self.rows_per_unit < 1:
            raise CorpusError(f"rows_per_unit must be >= 1, got {self.rows_per_unit}")
        n = len(self._dataset())
        return [WorkUnit(f"rows-{s:012d}", self.name, {"start": s, "stop": min(s + self.rows_per_unit, n)})
                for s in range(0, n, self.rows_per_unit)]

    def read(self, unit: WorkUnit) -> Iterator[TextDoc | SkipSample]:
        ds = self._dataset()
        start, stop = unit.payload["start"], unit.payload["stop"]
        cols = [c for c in (self.field, self.key_field) if c]
        batch = ds.select_columns(cols)[start:stop]
        keys = batch[self.key_field] if self.key_field else [None] * (stop - start)
        for i, (value, k) in enumerate(zip(batch[self.field], keys)):
            key = str(k) if k is not None else str(start + i)
            checked = _check_text(key, value)
            yield checked if isinstance(checked, SkipSample) else TextDoc(key, checked, self.name)


TextCorpus = TxtFolderCorpus | JsonlCorpus | ParquetCorpus | HFDiskCorpus


def detect_format(path: str) -> str:
    """Guess a format from a path: HF datasets folders hold dataset_info.json/dataset_dict.json."""
    fs, base = fsspec.core.url_to_fs(path)
    if not fs.exists(base):
        raise CorpusError(f"corpus path not found: {path}")
    if fs.isfile(base):
        for fmt, suffixes in (("txt", (".txt",)), ("jsonl", (".jsonl", ".json")), ("parquet", (".parquet",))):
            if base.endswith(suffixes):
                return fmt
        raise CorpusError(f"{path}: cannot tell the format from the name; pass format=...")
    if fs.exists(f"{base}/dataset_info.json") or fs.exists(f"{base}/dataset_dict.json"):
        return "hf"
    names = [p for p in fs.find(base)]
    for fmt, suffixes in (("parquet", (".parquet",)), ("jsonl", (".jsonl",)), ("txt", (".txt",))):
        if any(n.endswith(suffixes) for n in names):
            return fmt
    raise CorpusError(f"{path}: no .txt, .jsonl or .parquet files and not an HF dataset folder")


def open_text_corpus(path: str, format: TextFormat = "auto", name: str = "text",
                     field: str = "text", key_field: str | None = None,
                     split: str | None = None) -> TextCorpus:
    """The reader for `path`; `field` is the JSON field / parquet column / dataset column."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "txt":
        return TxtFolderCorpus(path, name=name)
    if fmt == "jsonl":
        return JsonlCorpus(path, name=name, field=field, key_field=key_field)
    if fmt == "parquet":
        return ParquetCorpus(path, name=name, column=field, key_column=key_field)
    if fmt == "hf":
        return HFDiskCorpus(path, name=name, field=field, key_field=key_field, split=split)
    raise CorpusError(f"unknown text corpus format {fmt!r}; expected auto, txt, jsonl, parquet or hf")


def iter_texts(corpus: TextCorpus, skips: dict[str, int] | None = None) -> Iterator[str]:
    """All document texts of a corpus in order (for tokenizer training); counts skips by reason."""
    for unit in corpus.units():
        for item in corpus.read(unit):
            if isinstance(item, SkipSample):
                if skips is not None:
                    skips[item.reason] = skips.get(item.reason, 0) + 1
                log.debug("skipped %s", item)
                continue
            yield item.text
