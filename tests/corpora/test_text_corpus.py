"""Text corpus readers on every format, bad entries included.

(Named test_text_corpus.py: tests/ has no __init__.py, so basenames must be unique.)
"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trimodal.corpora.samples import TextDoc
from trimodal.corpora.text import (CorpusError, HFDiskCorpus, JsonlCorpus, ParquetCorpus,
                                   TxtFolderCorpus, detect_format, iter_texts, open_text_corpus)
from trimodal.jobs.protocol import SkipSample


def read_all(corpus):
    units = corpus.units()
    assert units == corpus.units()  # deterministic
    assert len({u.id for u in units}) == len(units)
    return [item for u in units for item in corpus.read(u)]


def split(items):
    docs = [i for i in items if isinstance(i, TextDoc)]
    skips = {i.key: i.reason for i in items if isinstance(i, SkipSample)}
    return docs, skips


def test_txt_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("second doc\nline two")
    (tmp_path / "a.txt").write_text("first doc")
    (tmp_path / "sub" / "c.txt").write_text("nested")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "ignored.md").write_text("not a txt")
    docs, skips = split(read_all(TxtFolderCorpus(str(tmp_path), name="web")))
    assert [(d.key, d.text, d.source) for d in docs] == [
        ("a", "first doc", "web"), ("b", "second doc\nline two", "web"), ("sub/c", "nested", "web")]
    assert skips == {"bad": "invalid utf-8", "empty": "empty document"}
    grouped = TxtFolderCorpus(str(tmp_path), name="web", files_per_unit=2)
    assert len(grouped.units()) == 3
    assert split(read_all(grouped)) == (docs, skips)


def test_jsonl(tmp_path):
    lines = [json.dumps({"text": "hello", "id": "x1"}).encode(), b"", b"{broken json",
             json.dumps({"body": "no text field"}).encode(), json.dumps({"text": 5}).encode(),
             json.dumps({"text": "   "}).encode(), b'{"text": "caf\xe9"}', json.dumps([1, 2]).encode(),
             json.dumps({"text": "world \u00fc"}).encode()]
    (tmp_path / "part0.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "part1.jsonl").write_text(json.dumps({"text": "third"}) + "\n")
    docs, skips = split(read_all(JsonlCorpus(str(tmp_path))))
    assert [(d.key, d.text) for d in docs] == [
        ("part0.jsonl:1", "hello"), ("part0.jsonl:9", "world \u00fc"), ("part1.jsonl:1", "third")]
    assert skips == {"part0.jsonl:3": "not valid JSON", "part0.jsonl:4": "missing field 'text'",
                     "part0.jsonl:5": "text is not a string", "part0.jsonl:6": "empty document",
                     "part0.jsonl:7": "invalid utf-8", "part0.jsonl:8": "JSON line is not an object"}
    keyed = JsonlCorpus(str(tmp_path / "part0.jsonl"), field="text", key_field="id")
    assert [d.key for d in split(read_all(keyed))[0]] == ["x1", "part0.jsonl:9"]
    other = JsonlCorpus(str(tmp_path / "part0.jsonl"), field="body")
    assert [d.text for d in split(read_all(other))[0]] == ["no text field"]


def test_parquet_row_groups(tmp_path):
    texts = ["one", "two", None, "", "four", "five"]
    table = pa.table({"content": pa.array(texts, pa.string()), "uid": [f"u{i}" for i in range(6)]})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=4)
    raw = pa.table({"content": pa.array([b"ok bytes", b"\xff\xfe"], pa.binary())})
    pq.write_table(raw, tmp_path / "b.parquet")
    corpus = ParquetCorpus(str(tmp_path), column="content")
    units = corpus.units()
    assert [u.id for u in units] == ["a.parquet-rg00000", "a.parquet-rg00001", "b.parquet-rg00000"]
    docs, skips = split(read_all(corpus))
    assert [(d.key, d.text) for d in docs] == [("a.parquet:0", "one"), ("a.parquet:1", "two"),
                                               ("a.parquet:4", "four"), ("a.parquet:5", "five"),
                                               ("b.parquet:0", "ok bytes")]
    assert skips == {"a.parquet:2": "missing text", "a.parquet:3": "empty document",
                     "b.parquet:1": "invalid utf-8"}
    keyed = ParquetCorpus(str(tmp_path / "a.parquet"), column="content", key_column="uid")
    assert [d.key for d in split(read_all(keyed))[0]] == ["u0", "u1", "u4", "u5"]
    with pytest.raises(CorpusError, match=r"a\.parquet.*no column 'text'"):
        ParquetCorpus(str(tmp_path / "a.parquet")).units()
    (tmp_path / "c.parquet").write_bytes(b"garbage")
    with pytest.raises(CorpusError, match=r"c\.parquet"):
        ParquetCorpus(str(tmp_path), column="content").units()


def test_hf_dataset_on_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["alpha", "", "gamma", None, "epsilon"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    corpus = HFDiskCorpus(str(tmp_path / "ds"), rows_per_unit=2)
    assert [u.payload for u in corpus.units()] == [{"start": 0, "stop": 2}, {"start": 2, "stop": 4},
                                                   {"start": 4, "stop": 5}]
    docs, skips = split(read_all(corpus))
    assert [(d.key, d.text) for d in docs] == [("0", "alpha"), ("2", "gamma"), ("4", "epsilon")]
    assert skips == {"1": "empty document", "3": "missing text"}
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(CorpusError, match="split"):
        HFDiskCorpus(str(tmp_path / "dd")).units()
    assert len(read_all(HFDiskCorpus(str(tmp_path / "dd"), split="test"))) == 5
    with pytest.raises(CorpusError, match="no column 'body'"):
        HFDiskCorpus(str(tmp_path / "ds"), field="body").units()
    assert detect_format(str(tmp_path / "ds")) == "hf"


def test_open_and_iter_texts(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n{"text": ""}\n{"t": 1}\n')
    corpus = open_text_corpus(str(tmp_path))
    assert isinstance(corpus, JsonlCorpus)
    skips: dict[str, int] = {}
    assert list(iter_texts(corpus, skips)) == ["a"]
    assert skips == {"empty document": 1, "missing field 'text'": 1}
    with pytest.raises(CorpusError, match="not found"):
        open_text_corpus(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty"):
        open_text_corpus(str(tmp_path / "empty"))
