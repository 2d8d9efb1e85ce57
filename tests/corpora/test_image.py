"""Image-text readers on generated corpora, including every kind of bad input we reject."""

from __future__ import annotations

import base64
import io
import json
import random
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from trimodal.config import ConfigError
from trimodal.corpora.common import is_safe_member_name, split_key, unit_id_from
from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
from trimodal.corpora.samples import ImageText
from trimodal.jobs.protocol import SkipSample


def image_bytes(i: int, fmt: str = "JPEG", size: tuple[int, int] = (12, 10)) -> bytes:
    img = Image.new("RGB", size, ((37 * i) % 256, (91 * i) % 256, (13 * i) % 256))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def read_all(corpus) -> tuple[list[ImageText], Counter, list]:
    ok, skips, units = [], Counter(), corpus.units()
    for unit in units:
        for item in corpus.read(unit):
            if isinstance(item, SkipSample):
                skips[item.reason] += 1
            else:
                ok.append(item)
    return ok, skips, units


def test_helpers():
    assert split_key("dir/000001.jpg") == ("dir/000001", "jpg")
    assert split_key("a.seg.JSON") == ("a", "seg.json")
    assert is_safe_member_name("a/b.jpg")
    for bad in ("../a.jpg", "/etc/a.jpg", "a/../../b.jpg", "C:/x.jpg", "a\\..\\b.jpg", ""):
        assert not is_safe_member_name(bad), bad
    assert unit_id_from("my corpus", "sub/dir", "00001") == "my_corpus__sub__dir__00001"


def test_folder_reader_units_and_order(tmp_path: Path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for i in range(5):
            (tmp_path / d / f"{i:03d}.png").write_bytes(image_bytes(i, "PNG"))
            (tmp_path / d / f"{i:03d}.txt").write_text(f" caption {d} {i}\n")
    (tmp_path / "a" / "000.json").write_text(json.dumps({"w": 12}))
    corpus = open_image_corpus(str(tmp_path), "folder", ImageCorpusOptions(name="pics", unit_size=2))
    ok, skips, units = read_all(corpus)
    assert [u.id for u in units] == [f"pics__{d}__{i:05d}" for d in "ab" for i in range(3)]
    assert not skips
    assert [s.key for s in ok] == [f"{d}/{i:03d}" for d in "ab" for i in range(5)]
    assert ok[0].caption == "caption a 0" and ok[0].meta == {"w": 12} and ok[0].source == "pics"
    assert ok[3].image == image_bytes(3, "PNG")


def write_bad_folder(root: Path, n_good: int) -> None:
    """good0..good{n-1} plus a caption-less image, an image-less caption, an empty image, a
    non-UTF-8 caption and a broken sidecar .json (kept: metadata is optional)."""
    for i in range(n_good):
        (root / f"good{i}.jpg").write_bytes(image_bytes(i))
        (root / f"good{i}.txt").write_text(f"fine {i}")
    (root / "nocap.jpg").write_bytes(image_bytes(7))
    (root / "noimg.txt").write_text("lonely caption")
    (root / "empty.jpg").write_bytes(b"")
    (root / "empty.txt").write_text("x")
    (root / "badutf.jpg").write_bytes(image_bytes(8))
    (root / "badutf.txt").write_bytes(b"caf\xe9 \xff")
    (root / "meta.jpg").write_bytes(image_bytes(9))
    (root / "meta.txt").write_text("ok")
    (root / "meta.json").write_text("{not json")


def test_folder_reader_bad_inputs(tmp_path: Path):
    write_bad_folder(tmp_path, 3)
    ok, skips, _ = read_all(open_image_corpus(str(tmp_path), "folder"))
    assert sorted(s.key for s in ok) == ["good0", "good1", "good2", "meta"]
    assert skips == Counter(missing_caption=1, missing_image=1, empty_image=1,
                            bad_caption_encoding=1)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_wds_reader(tmp_path: Path):
    members = []
    for i in range(4):
        members += [(f"{i:09d}.jpg", image_bytes(i)), (f"{i:09d}.txt", f"cap {i}".encode()),
                    (f"{i:09d}.json", json.dumps({"key": i}).encode())]
    members += [("../evil.jpg", image_bytes(5)), ("../evil.txt", b"evil"),
                ("/abs.jpg", image_bytes(6)),
                ("nocap.webp", image_bytes(7, "WEBP")),
                ("onlytxt.txt", b"no image"),
                ("badcap.png", image_bytes(8, "PNG")), ("badcap.txt", b"\xff\xfe\xfa"),
                ("zero.jpg", b""), ("zero.txt", b"z")]
    write_tar(tmp_path / "shard-000.tar", members)
    write_tar(tmp_path / "shard-001.tar", [("x.png", image_bytes(1, "PNG")), ("x.txt", b"x")])
    corpus = open_image_corpus(str(tmp_path), "wds", ImageCorpusOptions(name="w"))
    ok, skips, units = read_all(corpus)
    assert [u.id for u in units] == ["w__shard-000", "w__shard-001"]
    assert [s.key for s in ok] == [f"{i:09d}" for i in range(4)] + ["x"]
    assert ok[2].meta == {"key": 2} and ok[2].caption == "cap 2" and ok[2].image == image_bytes(2)
    assert skips == Counter(unsafe_member_name=2, missing_caption=1, missing_image=1,
                            bad_caption_encoding=1, empty_image=1)


def test_wds_truncated_archive_keeps_earlier_samples(tmp_path: Path):
    rng = random.Random(0)
    members = []
    for i in range(6):  # incompressible members, so half the archive cuts into member data
        noise = Image.frombytes("RGB", (40, 40), bytes(rng.randrange(256) for _ in range(4800)))
        buf = io.BytesIO()
        noise.save(buf, format="PNG")
        members += [(f"{i}.png", buf.getvalue()), (f"{i}.txt", b"c")]
    write_tar(tmp_path / "t.tar", members)
    data = (tmp_path / "t.tar").read_bytes()
    (tmp_path / "t.tar").write_bytes(data[: 3 * 5632 + 1000])
    ok, skips, _ = read_all(open_image_corpus(str(tmp_path), "wds"))
    assert 0 < len(ok) < 6
    assert [s.key for s in ok] == [str(i) for i in range(len(ok))]
    assert skips["corrupt_archive"] == 1


def test_parquet_reader_bytes_and_row_groups(tmp_path: Path):
    n = 7
    table = pa.table({
        "key": [f"k{i}" for i in range(n)],
        "jpg": [image_bytes(i) if i != 3 else None for i in range(n)],
        "text": [f"t{i}" if i != 5 else None for i in range(n)],
    })
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=3)
    opts = ImageCorpusOptions(name="pq", image_column="jpg", caption_column="text", unit_by="row_group")
    corpus = open_image_corpus(str(tmp_path), "parquet", opts)
    ok, skips, units = read_all(corpus)
    assert [u.id for u in units] == ["pq__part-0__rg00000", "pq__part-0__rg00001", "pq__part-0__rg00002"]
    assert [s.key for s in ok] == ["k0", "k1", "k2", "k4", "k6"]
    assert skips == Counter(missing_image=1, missing_caption=1)
    by_file = open_image_corpus(str(tmp_path), "parquet",
                                ImageCorpusOptions(image_column="jpg", caption_column="text"))
    ok2, _, units2 = read_all(by_file)
    assert len(units2) == 1 and [s.key for s in ok2] == [s.key for s in ok]


def test_parquet_reader_hf_style_struct_and_missing_column(tmp_path: Path):
    rows = [{"bytes": image_bytes(i), "path": None} for i in range(2)]
    pq.write_table(pa.table({"image": rows, "caption": ["a", "b"]}), tmp_path / "d.parquet")
    ok, skips, _ = read_all(open_image_corpus(str(tmp_path), "parquet"))
    assert [s.key for s in ok] == ["d:0", "d:1"] and ok[1].image == image_bytes(1)
    corpus = open_image_corpus(str(tmp_path), "parquet", ImageCorpusOptions(caption_column="nope"))
    with pytest.raises(ConfigError, match="nope"):
        read_all(corpus)


def test_jsonl_reader_paths_and_base64(tmp_path: Path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(image_bytes(1))
    lines = [
        json.dumps({"key": "a", "file": "img/a.jpg", "caption": "A"}),
        json.dumps({"key": "gone", "file": "img/missing.jpg", "caption": "B"}),
        "{broken json",
        json.dumps({"key": "nocap", "file": "img/a.jpg"}),
    ]
    (tmp_path / "index.jsonl").write_text("\n".join(lines) + "\n")
    corpus = open_image_corpus(str(tmp_path), "jsonl", ImageCorpusOptions(image_path_column="file"))
    ok, skips, _ = read_all(corpus)
    assert [s.key for s in ok] == ["a"] and ok[0].image == image_bytes(1)
    assert skips == Counter(missing_image=1, bad_record=1, missing_caption=1)

    other = tmp_path / "b64"
    other.mkdir()
    (other / "x.jsonl").write_text(
        json.dumps({"image": base64.b64encode(image_bytes(2)).decode(), "caption": "c"}) + "\n"
        + json.dumps({"image": "***not base64***", "caption": "d"}) + "\n")
    ok, skips, _ = read_all(open_image_corpus(str(other), "jsonl"))
    assert [s.key for s in ok] == ["x:0"] and ok[0].image == image_bytes(2)
    assert skips == Counter(bad_record=1)


def test_path_column_naming_a_fifo_is_a_missing_image_not_a_hang(tmp_path: Path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(image_bytes(1))
    os.mkfifo(tmp_path / "img" / "pipe.jpg")  # opening it for reading would block forever
    lines = [json.dumps({"key": k, "file": f"img/{k}.jpg", "caption": k}) for k in ("a", "pipe")]
    (tmp_path / "index.jsonl").write_text("\n".join(lines) + "\n")
    corpus = open_image_corpus(str(tmp_path), "jsonl", ImageCorpusOptions(image_path_column="file"))
    ok, skips, _ = read_all(corpus)
    assert [s.key for s in ok] == ["a"] and skips == Counter(missing_image=1)


@pytest.mark.parametrize("unit_by", ["file", "row_group"])
def test_a_file_that_is_not_parquet_is_named_before_any_work(tmp_path: Path, unit_by: str):
    pq.write_table(pa.table({"jpg": [image_bytes(0)], "text": ["a"]}), tmp_path / "good.parquet")
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 but not really")
    corpus = open_image_corpus(str(tmp_path), "parquet",
                               ImageCorpusOptions(image_column="jpg", caption_column="text", unit_by=unit_by))
    with pytest.raises(ConfigError, match=r"fake\.parquet: not a readable parquet file"):
        corpus.units()


def test_hf_reader_image_feature(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": image_bytes(i, "PNG"), "path": None} for i in range(5)],
         "caption": [f"c{i}" if i != 2 else None for i in range(5)]}, features=feats)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "ds"))
    corpus = open_image_corpus(str(tmp_path / "ds"), "hf", ImageCorpusOptions(name="h", unit_size=2))
    ok, skips, units = read_all(corpus)
    assert [u.id for u in units] == ["h__train__00000", "h__train__00001", "h__train__00002"]
    assert [s.key for s in ok] == ["train:0", "train:1", "train:3", "train:4"]
    assert ok[0].image == image_bytes(0, "PNG")  # the stored bytes, not a re-encode
    assert skips == Counter(missing_caption=1)
    with pytest.raises(ConfigError, match="split"):
        open_image_corpus(str(tmp_path / "ds"), "hf", ImageCorpusOptions(split="test")).units()


def test_unknown_format_and_missing_path(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown image corpus format"):
        open_image_corpus(str(tmp_path), "zip")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_image_corpus(str(tmp_path / "nope"), "folder").units()
    with pytest.raises(ConfigError, match="no .tar files"):
        open_image_corpus(str(tmp_path), "wds").units()


# --- read_part: worker w of N reads only positions i % N == w --------------------------------
def _hostile_folder(root: Path):
    write_bad_folder(root, 5)
    return open_image_corpus(str(root), "folder", ImageCorpusOptions(unit_size=7))


def _hostile_wds(root: Path):
    members = []
    for i in range(3):
        members += [(f"{i:03d}.jpg", image_bytes(i)), (f"{i:03d}.txt", f"cap {i}".encode())]
    members += [("../evil.jpg", image_bytes(5)), ("../evil.txt", b"evil"), ("/abs.jpg", image_bytes(6)),
                ("nocap.webp", image_bytes(7, "WEBP")), ("badcap.png", image_bytes(8, "PNG")),
                ("badcap.txt", b"\xff\xfe"), ("zero.jpg", b""), ("zero.txt", b"z")]
    write_tar(root / "a.tar", members)
    rng = random.Random(0)
    members = []
    for i in range(6):
        noise = Image.frombytes("RGB", (40, 40), bytes(rng.randrange(256) for _ in range(4800)))
        buf = io.BytesIO()
        noise.save(buf, format="PNG")
        members += [(f"{i}.png", buf.getvalue()), (f"{i}.txt", b"c")]
    write_tar(root / "b.tar", members)
    data = (root / "b.tar").read_bytes()
    (root / "b.tar").write_bytes(data[: 3 * 5632 + 1000])  # truncated inside member data
    (root / "c.tar").write_bytes(b"not a tar at all" * 40)
    return open_image_corpus(str(root), "wds")


def _hostile_parquet(root: Path):
    n = 8
    pq.write_table(pa.table({
        "key": [f"k{i}" if i != 6 else None for i in range(n)],
        "image": [image_bytes(i) if i != 3 else None for i in range(n)],
        "caption": [f"t{i}" if i != 5 else None for i in range(n)],
    }), root / "p.parquet", row_group_size=3)
    return open_image_corpus(str(root), "parquet", ImageCorpusOptions(unit_by="row_group"))


def _hostile_jsonl(root: Path):
    (root / "img").mkdir()
    (root / "img" / "a.jpg").write_bytes(image_bytes(1))
    lines = [json.dumps({"key": "a", "file": "img/a.jpg", "caption": "A"}), "",
             json.dumps({"key": "gone", "file": "img/missing.jpg", "caption": "B"}), "{broken json",
             "   ", json.dumps([1, 2]), json.dumps({"key": "nocap", "file": "img/a.jpg"}),
             json.dumps({"file": "img/a.jpg", "caption": "no key"})]
    (root / "index.jsonl").write_text("\n".join(lines) + "\n")
    return open_image_corpus(str(root), "jsonl", ImageCorpusOptions(image_path_column="file"))


def _hostile_hf(root: Path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": image_bytes(i, "PNG") if i != 1 else b"", "path": None} for i in range(7)],
         "caption": [f"c{i}" if i != 2 else None for i in range(7)]}, features=feats)
    ds.save_to_disk(str(root / "ds"))
    return open_image_corpus(str(root / "ds"), "hf", ImageCorpusOptions(unit_size=4))


def _describe(item) -> tuple:
    if isinstance(item, SkipSample):
        return ("skip", item.key, item.reason)
    return ("ok", item.key, item.image, item.caption, item.source, json.dumps(item.meta, sort_keys=True))


@pytest.mark.parametrize("build", [_hostile_folder, _hostile_wds, _hostile_parquet, _hostile_jsonl,
                                   _hostile_hf], ids=["folder", "wds", "parquet", "jsonl", "hf"])
def test_read_parts_interleave_to_read(tmp_path: Path, build):
    corpus = build(tmp_path)
    units = corpus.units()
    assert units
    skips_seen = 0
    for unit in units:
        whole = [_describe(x) for x in corpus.read(unit)]
        skips_seen += sum(d[0] == "skip" for d in whole)
        for n in (1, 2, 3, len(whole) + 2):
            rebuilt: list = [None] * len(whole)
            for part in range(n):
                for k, item in enumerate(corpus.read_part(unit, part, n)):
                    pos = part + k * n
                    assert pos < len(whole), (unit.id, part, n, "part yields too much")
                    rebuilt[pos] = _describe(item)
            assert rebuilt == whole, (unit.id, n)
    assert skips_seen > 0  # the corpus really was hostile


def test_read_part_rejects_bad_part(tmp_path: Path):
    corpus = _hostile_folder(tmp_path)
    unit = corpus.units()[0]
    for part, n in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="out of range"):
            list(corpus.read_part(unit, part, n))


def test_folder_part_opens_only_its_own_files(tmp_path: Path):
    for i in range(6):
        (tmp_path / f"{i}.jpg").write_bytes(image_bytes(i))
        (tmp_path / f"{i}.txt").write_text(f"c{i}")
    corpus = open_image_corpus(str(tmp_path), "folder")
    opened: list[str] = []
    original = corpus._read
    corpus._read = lambda path: opened.append(Path(path).stem) or original(path)
    unit = corpus.units()[0]
    keys = [s.key for s in corpus.read_part(unit, 1, 3)]
    assert keys == ["1", "4"] and sorted(set(opened)) == ["1", "4"]


def test_folder_file_vanished_after_listing_is_a_skip(tmp_path: Path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(image_bytes(i))
        (tmp_path / f"{i}.txt").write_text(f"c{i}")
    corpus = open_image_corpus(str(tmp_path), "folder")
    unit = corpus.units()[0]
    (tmp_path / "1.jpg").unlink()
    (tmp_path / "2.txt").unlink()
    got = [_describe(x)[:3] if isinstance(x, SkipSample) else ("ok", x.key) for x in corpus.read(unit)]
    assert got == [("ok", "0"), ("skip", "1", "missing_image"), ("skip", "2", "missing_caption")]
