"""The token table: what tokenization jobs write and the packer reads.

One parquet row per sample. Ids are *local* to their tokenizer (the unified vocabulary is
applied at packing time), so one tokenization run can feed several vocabularies/layouts.

Columns
    key             str     unique sample key within its source
    source          str     corpus/source name (used for mixing ratios downstream)
    task            str     "text" | "image_text" | "audio_text"
    text_ids        list<int32>  local text-tokenizer ids of the document / caption / transcript
    modality        str     "text" | "image" | "audio"  (the non-text part; "text" if none)
    ids             list<int32>  local modality ids, flattened (image: row-major h*w;
                                 audio: frame-major t0q0 t0q1 ... over n_q codebooks)
    shape           list<int32>  image: [h, w]; audio: [n_q, frames]; text: []
    audio_length    int64   original audio length in samples at `sample_rate` (-1 if none)
    sample_rate     int32   codec sample rate (0 if none)
    tokenizer       str     modality tokenizer name ("" for text-only rows)
    tokenizer_hash  str     content hash of the modality tokenizer ("" for text-only rows)
    text_tokenizer_hash str content hash of the text tokenizer
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("key", pa.string()),
    ("source", pa.string()),
    ("task", pa.string()),
    ("text_ids", pa.list_(pa.int32())),
    ("modality", pa.string()),
    ("ids", pa.list_(pa.int32())),
    ("shape", pa.list_(pa.int32())),
    ("audio_length", pa.int64()),
    ("sample_rate", pa.int32()),
    ("tokenizer", pa.string()),
    ("tokenizer_hash", pa.string()),
    ("text_tokenizer_hash", pa.string()),
])


@dataclass
class TokenRow:
    key: str
    source: str
    task: str
    text_ids: np.ndarray
    modality: str = "text"
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    shape: tuple[int, ...] = ()
    audio_length: int = -1
    sample_rate: int = 0
    tokenizer: str = ""
    tokenizer_hash: str = ""
    text_tokenizer_hash: str = ""


def rows_to_table(rows: list[TokenRow]) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    for r in rows:
        cols["key"].append(r.key)
        cols["source"].append(r.source)
        cols["task"].append(r.task)
        cols["text_ids"].append(np.asarray(r.text_ids, dtype=np.int32))
        cols["modality"].append(r.modality)
        cols["ids"].append(np.asarray(r.ids, dtype=np.int32).reshape(-1))
        cols["shape"].append(list(r.shape))
        cols["audio_length"].append(int(r.audio_length))
        cols["sample_rate"].append(int(r.sample_rate))
        cols["tokenizer"].append(r.tokenizer)
        cols["tokenizer_hash"].append(r.tokenizer_hash)
        cols["text_tokenizer_hash"].append(r.text_tokenizer_hash)
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def table_to_rows(table: pa.Table) -> list[TokenRow]:
    d = table.to_pydict()
    return [
        TokenRow(
            key=d["key"][i], source=d["source"][i], task=d["task"][i],
            text_ids=np.asarray(d["text_ids"][i], dtype=np.int32), modality=d["modality"][i],
            ids=np.asarray(d["ids"][i], dtype=np.int32), shape=tuple(d["shape"][i]),
            audio_length=d["audio_length"][i], sample_rate=d["sample_rate"][i],
            tokenizer=d["tokenizer"][i], tokenizer_hash=d["tokenizer_hash"][i],
            text_tokenizer_hash=d["text_tokenizer_hash"][i],
        )
        for i in range(table.num_rows)
    ]


def write_table(rows: list[TokenRow], path: str) -> None:
    """Write rows to one parquet file (callers handle atomic rename)."""
    with fsspec.open(path, "wb") as f:
        pq.write_table(rows_to_table(rows), f)


def read_arrow(path: str) -> pa.Table:
    """A token table file as Arrow, in SCHEMA's columns and types (ValueError naming the file
    when it is not one)."""
    with fsspec.open(path, "rb") as f:
        table = pq.read_table(f)
    missing = set(SCHEMA.names) - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: not a token table, missing columns {sorted(missing)}")
    try:
        return table.select(SCHEMA.names).cast(SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"{path}: token table columns of the wrong type ({err})") from err


def read_table(path: str) -> list[TokenRow]:
    return table_to_rows(read_arrow(path))
