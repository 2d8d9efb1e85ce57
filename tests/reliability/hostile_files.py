"""One generator of hostile corpora for every reader: text, image and audio in each format.

Each corpus mixes good items with the hostile ones issue #11 lists (truncated JPEG/PNG/FLAC/WAV,
decompression bombs, zero-length files, NaN audio, wrong extensions, giant captions, invalid
UTF-8, tar members with path-traversal/absolute/link names, duplicate keys, broken archives)
and comes with the outcome we promise for it: the keys that must reach the token tables
exactly once, and the exact skip counts by reason that the job report must show.

The expectations are written down here, per item, rather than computed by calling the readers,
so that a reader that changes its mind about an item fails the suite.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KEPT = "kept"

#: (modality, format) pairs the CLI supports; each gets one hostile corpus.
CASES: tuple[tuple[str, str], ...] = (
    ("text", "txt"), ("text", "jsonl"), ("text", "parquet"), ("text", "hf"),
    ("image", "folder"), ("image", "wds"), ("image", "parquet"), ("image", "jsonl"), ("image", "hf"),
    ("audio", "folder"), ("audio", "wds"), ("audio", "hf"),
)

#: A caption / document far longer than any sequence (kept; packing truncates, not the reader).
GIANT_TEXT = "giant " * 40_000


@dataclass
class HostileCorpus:
    """A corpus on disk plus what a tokenize job over it must report."""

    modality: str
    fmt: str
    path: Path
    #: key -> what the item is (documentation for failures); every key here must be kept once.
    kept: dict[str, str] = field(default_factory=dict)
    #: reason -> count, exactly as the job report's `skipped` must read.
    skipped: dict[str, int] = field(default_factory=dict)
    #: reason -> sorted keys the unit stats files must list under it.
    skip_keys: dict[str, list[str]] = field(default_factory=dict)
    #: (key, what it is, outcome) for every item, for the docs table and failure messages.
    items: list[tuple[str, str, str]] = field(default_factory=list)
    #: extra CLI arguments the corpus needs (column names, limits).
    args: list[str] = field(default_factory=list)

    def keep(self, key: str, what: str) -> None:
        self.kept[key] = what
        self.items.append((key, what, KEPT))

    def skip(self, key: str, what: str, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skip_keys.setdefault(reason, []).append(key)
        self.skip_keys[reason].sort()
        self.items.append((key, what, reason))


# --- bytes of hostile and good files ---------------------------------------------------------
def image_bytes(seed: int, fmt: str = "PNG", size: int = 24) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=4)
def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid greyscale PNG of width x height black pixels: a few hundred kB.

    Zeros compress ~1000:1, so the file is small while decoding it would allocate (and touch)
    width*height bytes. A reader must refuse it from the header.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def truncated(data: bytes, fraction: float = 0.6) -> bytes:
    return data[: int(len(data) * fraction)]


def audio_bytes(seconds: float, fmt: str = "WAV", sr: int = 16000, subtype: str = "PCM_16",
                nan: bool = False, seed: int = 0) -> bytes:
    import soundfile as sf

    n = max(1, int(sr * seconds))
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (180 + 30 * seed) * t)
    if nan:
        x[n // 2] = np.nan
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


@dataclass
class Member:
    """One tar member: a file, or a symlink/hardlink when `link` is set."""

    name: str
    data: bytes = b""
    link: str = ""
    hard: bool = False


def write_tar(path: Path, members: list[Member], cut_at: int | None = None) -> None:
    """A POSIX tar of `members`; `cut_at` truncates the archive to that many bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            if m.link:
                info.type = tarfile.LNKTYPE if m.hard else tarfile.SYMTYPE
                info.linkname = m.link
                tar.addfile(info)
            else:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
    data = buf.getvalue()
    path.write_bytes(data if cut_at is None else data[:cut_at])


def add_special_files(folder: Path, stem: str, ext: str, outside: Path) -> list[str]:
    """Non-regular entries a reader must never open.

    `<stem>_fifo.<ext>` is a named pipe (opening it blocks forever), `<stem>_device.<ext>` links
    to a device (/dev/null here: a regression then fails the counts cleanly, whereas the real
    threat, /dev/zero or /dev/urandom, would fill memory), `<stem>_dangling.<ext>` points
    nowhere, `loop` links to its own folder. Returns the stems of the special files.
    """
    specials = [f"{stem}_device", f"{stem}_fifo", f"{stem}_dangling"]
    (folder / f"{stem}_device.{ext}").symlink_to("/dev/null")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / f"{stem}_fifo.{ext}")
    (folder / f"{stem}_dangling.{ext}").symlink_to(outside / "does-not-exist")
    (folder / "loop").symlink_to(".", target_is_directory=True)
    return specials


def _write_parquet(path: Path, columns: dict[str, list], types: dict[str, object],
                   row_group_size: int = 4) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array(v, type=types[k]) for k, v in columns.items()})
    pq.write_table(table, path, row_group_size=row_group_size)


def _save_hf(path: Path, columns: dict[str, list], features: dict[str, object]) -> None:
    import datasets

    ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    ds.save_to_disk(str(path))


# --- text ------------------------------------------------------------------------------------
def text_corpus(root: Path, fmt: str) -> HostileCorpus:
    """Documents: good, giant, NUL bytes, invalid UTF-8, empty, blank, broken records, dupes."""
    c = HostileCorpus("text", fmt, root / f"text_{fmt}")
    c.path.mkdir(parents=True)
    good = [(f"doc{i}", f"document {i} says a blue square is on the left".encode()) for i in range(4)]
    odd_good = [("giant", GIANT_TEXT.encode(), "giant document"),
                ("nul", b"nul \x00 byte \x01 and control chars", "NUL and control characters"),
                ("emoji", "caf\u00e9 \U0001F642 \u200b zero-width".encode(), "non-ASCII text")]
    bad = [("badutf8", b"caf\xe9 \xff\xfe latin-1 bytes", "invalid UTF-8", "invalid utf-8"),
           ("empty", b"", "zero-length document", "empty document"),
           ("blank", b" \n\t \n", "whitespace-only document", "empty document")]
    if fmt == "txt":
        for key, data in good:
            (c.path / f"{key}.txt").write_bytes(data)
            c.keep(key, "good document")
        for key, data, what in odd_good:
            (c.path / f"{key}.txt").write_bytes(data)
            c.keep(key, what)
        for key, data, what, reason in bad:
            (c.path / f"{key}.txt").write_bytes(data)
            c.skip(key, what, reason)
        (c.path / "sub").mkdir()
        (c.path / "sub" / "nested.txt").write_bytes(b"a nested document")
        c.keep("sub/nested", "document in a subfolder")
        (c.path / "notes.md").write_bytes(b"not a .txt file")  # ignored, not an item
        add_special_files(c.path, "special", "txt", root)  # never opened, not items
        (root / "outside_doc.txt").write_bytes(b"a document that lives outside the corpus")
        (c.path / "linked.txt").symlink_to(root / "outside_doc.txt")
        c.keep("linked", "symlink to a regular file outside the folder")
        return c
    c.args = ["--key-field", "key"]
    if fmt == "jsonl":
        lines: list[bytes] = []
        for key, data in good:
            lines.append(json.dumps({"key": key, "text": data.decode()}).encode())
            c.keep(key, "good document")
        for key, data, what in odd_good:
            lines.append(json.dumps({"key": key, "text": data.decode()}).encode())
            c.keep(key, what)
        lines.append(json.dumps({"key": "empty", "text": ""}).encode())
        c.skip("empty", "empty text", "empty document")
        lines.append(b'{"key": "broken", "text": "no closing brace"')
        c.skip(f"docs.jsonl:{len(lines)}", "broken JSON line", "not valid JSON")
        lines.append(b'{"key": "latin1", "text": "caf\xe9"}')
        c.skip(f"docs.jsonl:{len(lines)}", "line that is not UTF-8", "invalid utf-8")
        lines.append(b'["a", "list"]')
        c.skip(f"docs.jsonl:{len(lines)}", "JSON line that is not an object", "JSON line is not an object")
        lines.append(json.dumps({"key": "nofield", "body": "x"}).encode())
        c.skip("nofield", "record without the text field", "missing field 'text'")
        lines.append(json.dumps({"key": "number", "text": 42}).encode())
        c.skip("number", "text that is a number", "text is not a string")
        lines.append(b'{"key": "surrogate", "text": "lone \\udcff surrogate"}')
        c.skip("surrogate", "JSON text with a lone UTF-16 surrogate", "invalid utf-8")
        lines.append(b"")  # blank lines are not entries
        lines.append(json.dumps({"key": "doc0", "text": "a second doc0"}).encode())
        c.skip("doc0", "duplicate key", "duplicate_key")
        (c.path / "docs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        return c
    keys = [k for k, _ in good] + [k for k, _, _ in odd_good] + [k for k, _, _, _ in bad] + ["none", "emoji"]
    texts = [d for _, d in good] + [d for _, d, _ in odd_good] + [d for _, d, _, _ in bad] + [None, b"dup"]
    for key, _ in good:
        c.keep(key, "good document")
    for key, _, what in odd_good:
        c.keep(key, what)
    for key, _, what, reason in bad:
        c.skip(key, what, reason)
    c.skip("none", "null text", "missing text")
    # Duplicate keys are caught within a work unit (a parquet row group here): see the docs.
    c.skip("emoji", "duplicate key in the same row group", "duplicate_key")
    if fmt == "parquet":
        import pyarrow as pa

        # Binary column: the only way parquet can carry invalid UTF-8 text. Two row groups
        # (two work units) of 6 rows; the duplicate sits in the second, beside its original.
        _write_parquet(c.path / "docs.parquet", {"key": keys, "text": texts},
                       {"key": pa.string(), "text": pa.binary()}, row_group_size=6)
        return c
    if fmt == "hf":
        import datasets

        _save_hf(c.path, {"key": keys, "text": texts},
                 {"key": datasets.Value("string"), "text": datasets.Value("binary")})
        return c
    raise ValueError(f"no hostile text corpus for format {fmt!r}")


# --- images ----------------------------------------------------------------------------------
#: (key, image bytes or None, caption bytes or None, what, outcome) shared by every image format.
def _image_items() -> list[tuple[str, bytes | None, bytes | None, str, str]]:
    return [
        ("good0", image_bytes(0, "PNG"), b"a red square", "good PNG", KEPT),
        ("good1", image_bytes(1, "JPEG"), b"a blue circle", "good JPEG", KEPT),
        ("good2", image_bytes(2, "PNG", size=40), b"a green square", "good PNG 40x40", KEPT),
        ("giantcap", image_bytes(3, "JPEG"), GIANT_TEXT.encode(), "giant caption (240 kB)", KEPT),
        ("trunc_jpg", truncated(image_bytes(4, "JPEG", 64)), b"truncated", "truncated JPEG",
         "truncated_image"),
        ("trunc_png", truncated(image_bytes(5, "PNG", 64)), b"truncated", "truncated PNG",
         "truncated_image"),
        ("bomb20k", png_bomb(20000, 20000), b"bomb", "20000x20000 PNG (400 MB of pixels in 400 kB)",
         "image_too_large"),
        ("bomb9k", png_bomb(9000, 9000), b"bomb", "9000x9000 PNG (under PIL's own limit)",
         "image_too_large"),
        ("zero", b"", b"zero-length image", "zero-length image file", "empty_image"),
        ("junk", b"this is not an image at all " * 8, b"junk", "text bytes as an image",
         "undecodable_image"),
        ("badcap", image_bytes(6, "PNG"), b"caf\xe9 \xff", "caption that is not UTF-8",
         "bad_caption_encoding"),
        ("nocap", image_bytes(7, "PNG"), None, "image without a caption", "missing_caption"),
        ("noimg", None, b"caption without an image", "caption without an image", "missing_image"),
    ]


def _add_items(c: HostileCorpus, items) -> None:
    for key, _, _, what, outcome in items:
        (c.keep(key, what) if outcome == KEPT else c.skip(key, what, outcome))


def _write_pairs(c: HostileCorpus, items, media_ext: str) -> None:
    """Each item as `<key>.<media_ext>` + `<key>.txt` files (a None half left out), recorded."""
    for key, media, text, _, _ in items:
        if media is not None:
            (c.path / f"{key}.{media_ext}").write_bytes(media)
        if text is not None:
            (c.path / f"{key}.txt").write_bytes(text)
    _add_items(c, items)


def _pair_members(c: HostileCorpus, items, media_ext: str) -> list[Member]:
    """Each item as tar members `<key>.<media_ext>` + `<key>.txt` (a None half left out), recorded."""
    members: list[Member] = []
    for key, media, text, _, _ in items:
        if media is not None:
            members.append(Member(f"{key}.{media_ext}", media))
        if text is not None:
            members.append(Member(f"{key}.txt", text))
    _add_items(c, items)
    return members


def image_corpus(root: Path, fmt: str) -> HostileCorpus:
    c = HostileCorpus("image", fmt, root / f"image_{fmt}")
    c.path.mkdir(parents=True)
    items = _image_items()
    if fmt == "folder":
        _write_pairs(c, items, "png")
        (c.path / "wrongext.jpg").write_bytes(image_bytes(8, "PNG"))
        (c.path / "wrongext.txt").write_bytes(b"a PNG named .jpg")
        c.keep("wrongext", "PNG bytes named .jpg")
        (c.path / "sub dir").mkdir()
        (c.path / "sub dir" / "\u00fcml\u00e4ut k\u00e9y.png").write_bytes(image_bytes(9, "PNG"))
        (c.path / "sub dir" / "\u00fcml\u00e4ut k\u00e9y.txt").write_bytes(b"spaces and umlauts")
        c.keep("sub dir/\u00fcml\u00e4ut k\u00e9y", "non-ASCII name in a subfolder")
        (c.path / "badmeta.png").write_bytes(image_bytes(10, "PNG"))
        (c.path / "badmeta.txt").write_bytes(b"broken sidecar json")
        (c.path / "badmeta.json").write_bytes(b"{not json")
        c.keep("badmeta", "broken sidecar .json (metadata ignored)")
        (c.path / "readme.md").write_bytes(b"ignored: not an image or caption")
        for key in add_special_files(c.path, "special", "png", root):
            (c.path / f"{key}.txt").write_bytes(b"caption beside a special file")
            c.skip(key, "caption beside a FIFO / device link / dangling link", "missing_image")
        (root / "outside.png").write_bytes(image_bytes(20, "PNG"))
        (c.path / "linked.png").symlink_to(root / "outside.png")
        (c.path / "linked.txt").write_bytes(b"image reached through a symlink")
        c.keep("linked", "symlink to a regular image outside the folder")
        return c
    if fmt == "wds":
        members = _pair_members(c, items, "png")
        members += [Member("wrongext.jpg", image_bytes(8, "PNG")), Member("wrongext.txt", b"png as jpg")]
        c.keep("wrongext", "PNG bytes named .jpg")
        members += [Member("../../evil.png", image_bytes(11, "PNG")), Member("../../evil.txt", b"evil")]
        c.skip("../../evil", "member names with ../..", "unsafe_member_name")
        members += [Member("/tmp/abs_evil.png", image_bytes(12, "PNG")), Member("/tmp/abs_evil.txt", b"abs")]
        c.skip("/tmp/abs_evil", "absolute member names", "unsafe_member_name")
        members += [Member("link.png", link="/etc/passwd"), Member("link.txt", b"symlink")]
        c.skip("link", "image member that is a symlink to /etc/passwd", "missing_image")
        members += [Member("hard.png", link="../../outside.png", hard=True), Member("hard.txt", b"hard")]
        c.skip("hard", "image member that is a hard link out of the archive", "missing_image")
        members += [Member("good0.png", image_bytes(13, "PNG")), Member("good0.txt", b"dup")]
        c.skip("good0", "second group with an existing key", "duplicate_key")
        members += [Member("a/b/nested.png", image_bytes(14, "PNG")), Member("a/b/nested.txt", b"nested")]
        c.keep("a/b/nested", "member in a subfolder of the archive")
        write_tar(c.path / "00000.tar", members)
        # A tar cut in the middle of its third sample: the first two are kept.
        cut = [Member("cut0.png", image_bytes(15, "PNG")), Member("cut0.txt", b"before the cut"),
               Member("cut1.png", image_bytes(16, "PNG")), Member("cut1.txt", b"before the cut"),
               Member("cut2.png", image_bytes(17, "PNG", size=64)), Member("cut2.txt", b"cut")]
        write_tar(c.path / "00001.tar", cut)
        with tarfile.open(c.path / "00001.tar") as tar:
            m = tar.getmember("cut2.png")
            cut_at = m.offset_data + m.size // 2
        write_tar(c.path / "00001.tar", cut, cut_at=cut_at)
        c.keep("cut0", "sample before the cut of a truncated tar")
        c.keep("cut1", "sample before the cut of a truncated tar")
        c.skip("image_wds__00001", "truncated tar (the rest of the archive)", "corrupt_archive")
        (c.path / "00002.tar").write_bytes(b"this is not a tar archive\n" * 40)
        c.skip("image_wds__00002", ".tar file that is not a tar", "corrupt_archive")
        (c.path / "00003.tar").write_bytes(b"")
        c.skip("image_wds__00003", "zero-length .tar", "corrupt_archive")
        return c
    keys = [k for k, *_ in items] + ["../../evil_key", "good1"]
    imgs = [i for _, i, *_ in items] + [image_bytes(18, "PNG"), image_bytes(19, "PNG")]
    caps = [cp for _, _, cp, *_ in items] + [b"a key that looks like a path", b"dup"]
    _add_items(c, items)
    c.keep("../../evil_key", "key that looks like a path (data only, never a file name)")
    c.skip("good1", "duplicate key", "duplicate_key")
    if fmt == "parquet":
        import pyarrow as pa

        _write_parquet(c.path / "pairs.parquet", {"key": keys, "image": imgs, "caption": caps},
                       {"key": pa.string(), "image": pa.binary(), "caption": pa.binary()})
        return c
    if fmt == "hf":
        import datasets

        _save_hf(c.path, {"key": keys, "image": imgs, "caption": caps},
                 {"key": datasets.Value("string"), "image": datasets.Value("binary"),
                  "caption": datasets.Value("binary")})
        return c
    if fmt == "jsonl":
        lines = []
        for key, img, cap in zip(keys, imgs, caps):
            rec: dict[str, object] = {"key": key}
            if img is not None:
                rec["image"] = base64.b64encode(img).decode()
            if cap is not None:
                # JSON cannot hold raw bytes: invalid UTF-8 arrives as lone surrogates.
                rec["caption"] = cap.decode("utf-8", errors="surrogateescape")
            lines.append(json.dumps(rec).encode())
        lines.append(json.dumps({"key": "badb64", "image": "***not base64***", "caption": "x"}).encode())
        c.skip("badb64", "image field that is not base64", "bad_record")
        c.skip(f"pairs:{len(lines)}", "broken JSON line", "bad_record")
        lines.append(b'{"key": "broken", "image": ')
        c.skip(f"pairs:{len(lines)}", "JSON line that is not an object", "bad_record")
        lines.append(b"[1, 2, 3]")
        lines.append(json.dumps({"key": "numimg", "image": 12345, "caption": "x"}).encode())
        c.skip("numimg", "image field that is a number", "bad_record")
        (c.path / "pairs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        return c
    raise ValueError(f"no hostile image corpus for format {fmt!r}")


# --- audio -----------------------------------------------------------------------------------
def _audio_items() -> list[tuple[str, bytes | None, bytes | None, str, str]]:
    wav = audio_bytes(0.3, seed=1)
    return [
        ("good0", audio_bytes(0.3, seed=0), b"a red circle", "good WAV", KEPT),
        ("good1", audio_bytes(0.25, "FLAC", seed=2), b"a blue square", "good FLAC", KEPT),
        ("good2", audio_bytes(0.2, sr=44100, seed=3), b"a green square", "good 44.1 kHz WAV", KEPT),
        ("giant", audio_bytes(0.2, seed=4), GIANT_TEXT.encode(), "giant transcript", KEPT),
        ("trunc_wav", truncated(wav, 0.6), b"truncated wav",
         "truncated WAV (decodes to the samples present)", KEPT),
        ("trunc_flac", truncated(audio_bytes(0.5, "FLAC", seed=5), 0.5), b"truncated flac",
         "truncated FLAC", "unreadable_audio"),
        ("hdr_only", wav[:44], b"header only", "WAV header without samples", "empty_audio"),
        ("nan", audio_bytes(0.2, subtype="FLOAT", nan=True), b"nan", "float WAV with a NaN",
         "non_finite_audio"),
        ("zero", b"", b"zero-length", "zero-length audio file", "empty_audio"),
        ("junk", b"definitely not audio " * 20, b"junk", "text bytes as audio", "unreadable_audio"),
        ("long", audio_bytes(1.5, seed=6), b"too long", "clip over --max-seconds", "too_long"),
        ("short", audio_bytes(0.01, seed=7), b"too short", "clip under --min-seconds", "too_short"),
        ("badtext", audio_bytes(0.2, seed=8), b"caf\xe9 \xff", "transcript that is not UTF-8",
         "bad_transcript_encoding"),
        ("blanktext", audio_bytes(0.2, seed=9), b"  \n ", "whitespace-only transcript",
         "empty_transcript"),
        ("notext", audio_bytes(0.2, seed=10), None, "audio without a transcript", "missing_transcript"),
        ("noaudio", None, b"transcript without audio", "transcript without audio", "missing_audio"),
    ]


AUDIO_ARGS = ["--min-seconds", "0.05", "--max-seconds", "1.0"]


def audio_corpus(root: Path, fmt: str) -> HostileCorpus:
    c = HostileCorpus("audio", fmt, root / f"audio_{fmt}", args=list(AUDIO_ARGS))
    c.path.mkdir(parents=True)
    items = _audio_items()
    if fmt == "folder":
        _write_pairs(c, items, "wav")
        (c.path / "wrongext.wav").write_bytes(audio_bytes(0.2, "FLAC", seed=11))
        (c.path / "wrongext.txt").write_bytes(b"flac named wav")
        c.keep("wrongext", "FLAC bytes named .wav")
        for key in add_special_files(c.path, "special", "wav", root):
            (c.path / f"{key}.txt").write_bytes(b"transcript beside a special file")
            c.skip(key, "transcript beside a FIFO / device link / dangling link", "missing_audio")
        return c
    if fmt == "wds":
        members = _pair_members(c, items, "wav")
        members += [Member("../../evil.wav", audio_bytes(0.2)), Member("../../evil.txt", b"evil")]
        c.skip("../../evil", "member names with ../..", "unsafe_member_name")
        members += [Member("/abs/evil.flac", audio_bytes(0.2, "FLAC")), Member("/abs/evil.txt", b"abs")]
        c.skip("/abs/evil", "absolute member names", "unsafe_member_name")
        members += [Member("link.wav", link="/etc/passwd"), Member("link.txt", b"symlink")]
        c.skip("link", "audio member that is a symlink", "missing_audio")
        members += [Member("good0.wav", audio_bytes(0.2, seed=12)), Member("good0.txt", b"dup")]
        c.skip("good0", "second group with an existing key", "duplicate_key")
        write_tar(c.path / "00000.tar", members)
        (c.path / "00001.tar").write_bytes(b"\x00" * 100 + b"garbage" * 50)
        c.skip("audio_wds__00001", ".tar file that is not a tar", "corrupt_archive")
        return c
    if fmt == "hf":
        import datasets

        keys = [k for k, *_ in items] + ["good2"]
        cells = [{"bytes": a, "path": None} if a is not None else None for _, a, *_ in items] \
            + [{"bytes": audio_bytes(0.2, seed=13), "path": None}]
        texts = [t.decode("utf-8", errors="replace") if t is not None else None for _, _, t, *_ in items] \
            + ["dup"]
        for key, _, text, what, outcome in items:
            if key == "badtext":  # an HF string column cannot hold invalid UTF-8: kept as replaced
                c.keep(key, "transcript with U+FFFD replacement characters")
            elif outcome == KEPT:
                c.keep(key, what)
            else:
                c.skip(key, what, outcome)
        c.skip("good2", "duplicate key", "duplicate_key")
        # Cells that name a file instead of holding bytes (relative to the dataset folder).
        files = c.path / "files"
        files.mkdir()
        (files / "ok.flac").write_bytes(audio_bytes(0.2, "FLAC", seed=14))
        if hasattr(os, "mkfifo"):
            os.mkfifo(files / "fifo.wav")
        for key, path, what, outcome in [
                ("path_ok", "files/ok.flac", "path cell naming a FLAC file", KEPT),
                ("path_fifo", "files/fifo.wav", "path cell naming a FIFO", "missing_audio"),
                ("path_device", "/dev/null", "path cell naming a device", "missing_audio"),
                ("path_gone", "files/gone.wav", "path cell naming no file", "missing_audio")]:
            keys.append(key)
            cells.append({"bytes": None, "path": path})
            texts.append(what)
            (c.keep(key, what) if outcome == KEPT else c.skip(key, what, outcome))
        _save_hf(c.path, {"key": keys, "audio": cells, "text": texts},
                 {"key": datasets.Value("string"),
                  "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                  "text": datasets.Value("string")})
        c.args += ["--key-column", "key"]
        return c
    raise ValueError(f"no hostile audio corpus for format {fmt!r}")


def build(root: Path, modality: str, fmt: str) -> HostileCorpus:
    """The hostile corpus of one (modality, format) under `root`."""
    makers = {"text": text_corpus, "image": image_corpus, "audio": audio_corpus}
    return makers[modality](root, fmt)
