"""Tar bytes in and out, and the sample record format inside them.

Writing produces what the standard library's `tarfile` writes (POSIX pax format, fixed owner
and mtime so equal inputs give byte-equal shards and equal sha256), byte for byte: headers of
our short ASCII member names are filled into a template that `tarfile` made (its own per-member
header code costs more than the rest of writing a sample); other names go through `tarfile`.
Reading uses a small header parser of our own instead of `tarfile`: the reader's throughput
goal is a fraction of the raw read rate, and `tarfile`'s per-member bookkeeping costs more
than decoding our two small members. The parser handles what `tarfile` (and GNU tar) write
for plain files: ustar headers, pax extended headers ('x'/'g') and GNU long names ('L').

Two readers share that parser's rules: `iter_tar`/`iter_samples` stream a file object
(verify, inspect), and `index_shard` indexes a whole shard held in memory (the training
reader): one walk over the headers in Python, then the header checksums, npy headers and
token ranges of all samples checked at once with numpy, so no token byte is copied or
decoded per sample.

Sample format (one tar member per field, `<key>.<field>`):
    <key>.tokens.npy   int32 [L], written with np.save, read with allow_pickle=False
    <key>.meta.json    {"task", "keys", "spans": [[modality, start, end]], "pad_count",
                        "source", "extra"}
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from trimodal.packing.layout import PackedSequence

BLOCK = 512
#: mtime written into every header: fixed, so shards are reproducible byte for byte.
FIXED_MTIME = 1_700_000_000


class TarCorrupt(Exception):
    """The tar stream ends early or holds a header that does not parse."""


# --- writing ------------------------------------------------------------------------------
def encode_tokens(tokens: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(tokens, dtype=np.int32), allow_pickle=False)
    return buf.getvalue()


def encode_meta(seq: PackedSequence) -> bytes:
    meta = {
        "task": seq.task,
        "keys": list(seq.keys),
        "spans": [[str(m), int(s), int(e)] for m, s, e in seq.spans],
        "pad_count": int(seq.pad_count),
        "source": seq.source,
        "extra": seq.extra,
    }
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One member through `tarfile` (tests build foreign and hostile tars with it)."""
    tar.addfile(_member_info(name, len(data)), io.BytesIO(data))


def _tarfile_header(name: str, size: int) -> bytes:
    return _member_info(name, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


@functools.lru_cache(maxsize=1)
def _header_template() -> bytes:
    """tarfile's header of an unnamed empty member, with the checksum field blanked (spaces,
    as the checksum is computed): name, size and checksum are all that differ per member."""
    h = bytearray(_tarfile_header("", 0))
    h[148:156] = b" " * 8
    return bytes(h)


def member_bytes(name: str, data: bytes) -> bytes:
    """One tar member exactly as `tarfile` writes it in pax format: header, data, padding."""
    raw = name.encode("utf-8")
    if raw.isascii() and 0 < len(raw) <= 100 and len(data) < 8 ** 11:
        h = bytearray(_header_template())
        h[0:len(raw)] = raw
        h[124:136] = b"%011o\0" % len(data)
        h[148:155] = b"%06o\0" % sum(h)  # byte 155 stays a space, as tarfile leaves it
        header = bytes(h)
    else:  # long or non-ASCII names need pax records: tarfile writes those
        header = _tarfile_header(name, len(data))
    return header + data + bytes(-len(data) % BLOCK)


def archive_end(size: int) -> bytes:
    """What closes a tar of `size` bytes: two zero blocks, then zeros up to tarfile's record
    size (20 blocks), as `tarfile` pads it."""
    end = 2 * BLOCK
    return bytes(end + (-(size + end) % tarfile.RECORDSIZE))


# --- reading ------------------------------------------------------------------------------
def _octal(field: bytes, where: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for big numbers
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarCorrupt(f"{where}: bad number field {field!r} in a tar header") from None


def _pax_path(data: bytes) -> str | None:
    """The `path` record of a pax extended header, if any ("<len> path=<value>\\n" records)."""
    pos = 0
    path = None
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        length = int(data[pos:sp])
        record = data[sp + 1: pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            path = value.decode("utf-8")
        pos += length
    return path


_ZERO_BLOCK = bytes(BLOCK)
_CHUNK = 1 << 20


class _Buffered:
    """Hands out exact byte runs from big reads: one read call per MiB, not three per member."""

    def __init__(self, f: BinaryIO, where: str):
        self._f = f
        self._where = where
        self._buf = b""
        self._pos = 0

    def take(self, n: int, what: str, allow_empty: bool = False) -> bytes:
        end = self._pos + n
        if end > len(self._buf):
            rest = self._buf[self._pos:]
            more = self._f.read(max(_CHUNK, n - len(rest)))
            self._buf, self._pos, end = rest + more, 0, n
            if len(self._buf) < n:
                if allow_empty and not self._buf:
                    return b""
                raise TarCorrupt(f"{self._where}: truncated ({what}: wanted {n} bytes, "
                                 f"got {len(self._buf)})")
        out = self._buf[self._pos:end]
        self._pos = end
        return out

    def skip(self, n: int, what: str) -> None:
        if n:
            self.take(n, what)


def _checksum_ok(header: bytes) -> tuple[int, int]:
    total = int(np.frombuffer(header, dtype=np.uint8).sum(dtype=np.int64))
    return _octal(header[148:156], ""), total - sum(header[148:156]) + 8 * 32


def iter_tar(f: BinaryIO, where: str) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) for every regular file, in order. Raises TarCorrupt on damage."""
    src = _Buffered(f, where)
    long_name: str | None = None
    while True:
        header = src.take(BLOCK, "header", allow_empty=True)
        if not header:
            return  # no end-of-archive blocks: tolerated, the data so far was complete
        if header == _ZERO_BLOCK:
            return  # end-of-archive marker
        try:
            stored, actual = _checksum_ok(header)
        except TarCorrupt:
            stored, actual = -1, 0
        if stored != actual:
            raise TarCorrupt(f"{where}: header checksum mismatch (stored {stored}, computed {actual})")
        size = _octal(header[124:136], where)
        kind = header[156:157]
        data = src.take(size, "member data") if size else b""
        src.skip((-size) % BLOCK, "member padding")
        if kind == b"x":
            long_name = _pax_path(data) or long_name
            continue
        if kind == b"L":
            long_name = data.split(b"\0", 1)[0].decode("utf-8")
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None  # directories, links, global pax headers: not samples
            continue
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8")
            if header[257:262] == b"ustar" and prefix:
                name = prefix + "/" + name
        yield name, data


def split_name(name: str) -> tuple[str, str]:
    """'dir/abc.tokens.npy' -> ('dir/abc', 'tokens.npy'): webdataset's key/field rule."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1:]


def iter_samples(f: BinaryIO, where: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive members by key, as webdataset does."""
    key: str | None = None
    fields: dict[str, bytes] = {}
    for name, data in iter_tar(f, where):
        k, field_name = split_name(name)
        if k != key:
            if key is not None:
                yield key, fields
            key, fields = k, {}
        fields[field_name] = data
    if key is not None:
        yield key, fields


@dataclass(frozen=True)
class TokenDecoder:
    """Decodes `tokens.npy` bytes, fast when the npy header is the one we write.

    np.load parses the header text on every call; our shards all carry the same header
    (int32, shape (L,)), so comparing bytes and viewing the payload is enough. Anything
    else goes through np.load(allow_pickle=False) and is then checked.
    """

    length: int
    vocab_size: int

    @functools.cached_property
    def header(self) -> bytes:
        return encode_tokens(np.zeros(self.length, np.int32))[: -4 * self.length]

    def decode(self, data: bytes, header: bytes | None = None) -> np.ndarray:
        """int32 [L]; raises ValueError with the reason if the bytes are not a valid sample."""
        header = header if header is not None else self.header
        if len(data) == len(header) + 4 * self.length and data.startswith(header):
            tokens = np.frombuffer(data, dtype="<i4", offset=len(header))
        else:
            try:
                tokens = np.load(io.BytesIO(data), allow_pickle=False)
            except Exception as err:  # noqa: BLE001 - any parse failure means a bad sample
                raise ValueError(f"tokens.npy does not load ({type(err).__name__}: {err})") from None
            if tokens.dtype.kind not in "iu" or tokens.shape != (self.length,):
                raise ValueError(f"tokens.npy is {tokens.dtype} {tokens.shape}, expected int32 ({self.length},)")
            tokens = tokens.astype(np.int32)
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"token ids span [{lo}, {hi}], outside the vocabulary [0, {self.vocab_size})")
        return tokens


def decode_meta(data: bytes) -> dict:
    meta = json.loads(data)
    if not isinstance(meta, dict) or "task" not in meta or "spans" not in meta:
        raise ValueError("meta.json lacks task/spans")
    return meta


# --- whole-shard index (the training reader's path) ----------------------------------------
#: One sample as the reader holds it: (int32 array holding its tokens, start index in that
#: array, the shard buffer, meta.json start, meta.json end, key). Plain tuples: one is made
#: per sample, and a class instance costs several times more.
SampleRef = tuple  # (np.ndarray, int, bytes | mmap, int, int, str)


@dataclass
class ShardIndex:
    """A shard in memory, cut into samples; nothing decoded except the keys.

    `samples[i]` is the i-th sample in write order: a SampleRef, or None when that sample is
    bad (`errors` says why, by index). `damage` is set when the tar itself breaks off
    (truncated, bad header): the samples before the damage are kept, as a streaming reader
    would have given them.
    """

    samples: list[SampleRef | None]
    errors: dict[int, str]
    damage: str = ""


def _walk(buf, where: str) -> tuple[list[tuple[str, int, int, int]], list[int], str]:
    """Regular-file members [(name, data offset, size, header number)], header offsets, damage.

    Header checksums are not checked here (see `_first_bad_header`): the walk trusts the size
    fields, and anything after a bad header is cut off afterwards.
    """
    n = len(buf)
    members: list[tuple[str, int, int, int]] = []
    headers: list[int] = []
    long_name: str | None = None
    o = 0
    while True:
        if o + BLOCK > n:
            if o == n:
                return members, headers, ""  # no end-of-archive blocks: tolerated
            return members, headers, f"{where}: truncated (header: wanted {BLOCK} bytes, got {n - o})"
        if buf[o + 148] == 0 and buf[o:o + BLOCK] == _ZERO_BLOCK:
            return members, headers, ""  # end-of-archive marker
        headers.append(o)
        try:
            try:
                size = int(buf[o + 124:o + 135], 8)  # the common form: 11 octal digits + NUL
            except ValueError:
                size = _octal(buf[o + 124:o + 136], where)
        except TarCorrupt as err:
            return members, headers, str(err)
        kind = buf[o + 156]
        data = o + BLOCK
        if data + size > n:
            return members, headers, f"{where}: truncated (member data: wanted {size} bytes, got {n - data})"
        try:
            if kind in (48, 0, 55):  # '0', NUL, '7': regular file
                if long_name is not None:
                    name, long_name = long_name, None
                else:
                    raw = buf[o:o + 100]
                    z = raw.find(b"\0")
                    name = (raw if z < 0 else raw[:z]).decode("utf-8")
                    if buf[o + 345] != 0 and buf[o + 257:o + 262] == b"ustar":
                        name = buf[o + 345:o + 500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
                members.append((name, data, size, len(headers) - 1))
            elif kind == 120:  # 'x': pax extended header
                long_name = _pax_path(bytes(buf[data:data + size])) or long_name
            elif kind == 76:  # 'L': GNU long name
                long_name = bytes(buf[data:data + size]).split(b"\0", 1)[0].decode("utf-8")
            else:
                long_name = None  # directories, links, global pax headers: not samples
        except (UnicodeDecodeError, ValueError) as err:
            return members, headers, f"{where}: unreadable member name or pax record ({err})"
        o = data + ((size + BLOCK - 1) & -BLOCK)
        if o > n:
            return members, headers, f"{where}: truncated (member padding)"


def _first_bad_header(blocks: np.ndarray, headers: list[int]) -> int:
    """Index of the first header whose checksum does not match, or -1; all headers at once.

    The common stored form ("%06o\\0", what tarfile and GNU tar write) is compared as bytes
    against the computed sums; only headers in another form are parsed one by one.
    """
    if not headers:
        return -1
    h = blocks[np.asarray(headers, dtype=np.int64) // BLOCK]
    field = h[:, 148:156]
    total = h.sum(axis=1, dtype=np.int64) - field.sum(axis=1, dtype=np.int64) + 8 * 32
    digits = ((total[:, None] >> np.arange(15, -1, -3)) & 7) + 48
    same = (field[:, :6] == digits).all(axis=1) & (field[:, 6] == 0)
    for i in np.flatnonzero(~same):
        try:
            stored = _octal(bytes(field[i]), "")
        except TarCorrupt:
            return int(i)
        if stored != int(total[i]):
            return int(i)
    return -1


def _meta_looks_whole(data: bytes) -> bool:
    """A structural check of meta.json without parsing it (parsing waits for a consumer).

    Catches cut-off or foreign members; `trimodal shards verify` parses every one.
    """
    data = data.strip()
    return data[:1] == b"{" and data[-1:] == b"}"


_USTAR = np.frombuffer(b"ustar\x00", dtype=np.uint8)
_OCTAL_WEIGHTS = 8 ** np.arange(10, -1, -1, dtype=np.int64)
_TOKENS_SUFFIX = np.frombuffer(b".tokens.npy", dtype=np.uint8)
_META_SUFFIX = np.frombuffer(b".meta.json", dtype=np.uint8)


def _index_regular(buf, blocks: np.ndarray, decoder: TokenDecoder, check_ranges: bool) -> ShardIndex | None:
    """The whole index with numpy, for shards laid out the way our writer lays them out.

    Every header block is found by its "ustar" magic, and the chain of sizes must lead from
    the first block through each found header to the end-of-archive block: then the found
    headers are exactly those a sequential walk would visit. Each must also be a plain file
    with an intact checksum, and the members must alternate <key>.tokens.npy / <key>.meta.json.
    Anything else returns None and the caller walks the headers one by one (`_walk`).
    """
    n_blocks = len(blocks)
    if n_blocks < 2:
        return None
    cand = np.flatnonzero(blocks[:, 257] == _USTAR[0])  # one byte first: a cheap prefilter
    cand = cand[(blocks[cand, 258:263] == _USTAR[1:]).all(axis=1)]
    m = len(cand)
    if m == 0 or m % 2 or cand[0] != 0:
        return None
    h = blocks[cand]
    digits = h[:, 124:135].astype(np.int64) - 48
    if not (((digits >= 0) & (digits <= 7)).all() and (h[:, 135] == 0).all()
            and (h[:, 156] == 48).all() and (h[:, 345] == 0).all()):
        return None
    sizes = digits @ _OCTAL_WEIGHTS
    nxt = cand + 1 + (sizes + BLOCK - 1) // BLOCK
    if not (nxt[:-1] == cand[1:]).all():
        return None
    end = int(nxt[-1])
    if end > n_blocks or (end < n_blocks and blocks[end].any()):
        return None  # truncated, or something other than the end-of-archive marker follows
    field = h[:, 148:156]
    total = h.sum(axis=1, dtype=np.int64) - field.sum(axis=1, dtype=np.int64) + 8 * 32
    expect = ((total[:, None] >> np.arange(15, -1, -3)) & 7) + 48
    if not ((field[:, :6] == expect).all() and (field[:, 6] == 0).all()):
        return None
    names = h[:, :100]
    has_nul = names == 0
    if not has_nul.any(axis=1).all():
        return None
    lens = has_nul.argmax(axis=1)
    tok, meta = names[0::2], names[1::2]
    klen = lens[0::2] - len(_TOKENS_SUFFIX)
    if not (klen == lens[1::2] - len(_META_SUFFIX)).all() or (klen < 1).any():
        return None
    cols = np.arange(100)
    in_key = cols < klen[:, None]
    if not ((tok == meta) | ~in_key).all():
        return None
    if ((tok == ord(".")) & in_key).any():
        return None  # a dot inside the key: split_name would cut elsewhere
    rows = np.arange(len(tok))
    t_suffix = tok[rows[:, None], klen[:, None] + np.arange(len(_TOKENS_SUFFIX))]
    m_suffix = meta[rows[:, None], klen[:, None] + np.arange(len(_META_SUFFIX))]
    if not ((t_suffix == _TOKENS_SUFFIX).all() and (m_suffix == _META_SUFFIX).all()):
        return None
    header = np.frombuffer(decoder.header, dtype=np.uint8)
    hl, length = len(header), decoder.length
    tok_off = (cand[0::2] + 1) * BLOCK
    if not ((sizes[0::2] == hl + 4 * length).all() and hl % 4 == 0):
        return None
    flat = blocks.reshape(-1)
    if hl > BLOCK or not (blocks[cand[0::2] + 1, :hl] == header).all():
        return None
    if (klen == klen[0]).all():  # fixed-width keys (what the writer makes): one decode for all
        grid = np.empty((len(tok), int(klen[0]) + 1), dtype=np.uint8)
        grid[:, :-1], grid[:, -1] = tok[:, :klen[0]], ord("\n")
        try:
            keys = grid.tobytes().decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError:
            return None
    else:
        try:
            keys = [bytes(r[:k]).decode("utf-8") for r, k in zip(tok, klen.tolist())]
        except UnicodeDecodeError:
            return None
    meta_lo = (cand[1::2] + 1) * BLOCK
    meta_hi = meta_lo + sizes[1::2]
    words = np.frombuffer(buf, dtype=np.int32, count=len(buf) // 4)
    starts = (tok_off + hl) // 4
    samples: list[SampleRef | None] = [
        (words, a, buf, lo, hi, k)
        for a, lo, hi, k in zip(starts.tolist(), meta_lo.tolist(), meta_hi.tolist(), keys)]
    errors: dict[int, str] = {}
    whole = (flat[meta_lo] == ord("{")) & (flat[np.maximum(meta_hi - 1, meta_lo)] == ord("}"))
    for i in np.flatnonzero(~whole).tolist():
        if not _meta_looks_whole(bytes(buf[meta_lo[i]:meta_hi[i]])):
            errors[i] = "meta.json is not a JSON object"
            samples[i] = None
    if check_ranges:
        _check_ranges(samples, words, list(range(len(samples))), errors, decoder)
    return ShardIndex(samples, errors, "")


def _check_ranges(samples: list[SampleRef | None], words: np.ndarray, fast: list[int],
                  errors: dict[int, str], decoder: TokenDecoder) -> None:
    """Mark samples (views into `words`) whose ids leave the vocabulary; all in one numpy pass."""
    fast = [i for i in fast if samples[i] is not None]
    if not fast:
        return
    length = decoder.length
    starts = np.fromiter((samples[i][1] for i in fast), dtype=np.int64, count=len(fast))
    bounds = np.empty(2 * len(fast), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, starts + length
    # As unsigned, a negative id is huge: one max per sample checks both ends of the range.
    top = np.maximum.reduceat(words.view(np.uint32), bounds)[0::2]
    for j in np.flatnonzero(top >= decoder.vocab_size).tolist():
        i = fast[j]
        row = words[starts[j]:starts[j] + length]
        errors[i] = (f"token ids span [{int(row.min())}, {int(row.max())}], outside the "
                     f"vocabulary [0, {decoder.vocab_size})")
        samples[i] = None


def index_shard(buf, where: str, decoder: TokenDecoder, check_ranges: bool = True) -> ShardIndex:
    """Cut a whole shard (bytes or a read-only mmap) into samples, checking what the reader needs.

    Per sample the tokens must be an int32 [L] npy inside the vocabulary and meta.json must be
    present and look whole (it is decoded only when a consumer asks, see reader.JsonRows). Samples whose npy
    header is the one we write are views into `buf`; others go through np.load.

    check_ranges=False leaves the vocabulary check of view samples to the caller: the training
    reader checks each batch right after copying its rows (`out_of_vocab`), while they are in
    cache, instead of one more pass over the whole shard here.
    """
    n_blocks = len(buf) // BLOCK
    blocks = np.frombuffer(buf, dtype=np.uint8, count=n_blocks * BLOCK).reshape(n_blocks, BLOCK)
    regular = _index_regular(buf, blocks, decoder, check_ranges)
    if regular is not None:
        return regular
    members, headers, damage = _walk(buf, where)
    bad = _first_bad_header(blocks, headers)
    if bad >= 0:
        stored = bytes(blocks[headers[bad] // BLOCK, 148:156])
        damage = f"{where}: header checksum mismatch at byte {headers[bad]} (stored field {stored!r})"
        members = [m for m in members if m[3] < bad]
    groups: list[tuple[str, dict[str, tuple[int, int]]]] = []
    key: str | None = None
    fields: dict[str, tuple[int, int]] = {}
    for name, off, size, _ in members:
        k, field_name = split_name(name)
        if k != key:
            if key is not None:
                groups.append((key, fields))
            key, fields = k, {}
        fields[field_name] = (off, size)
    if key is not None and (not damage or ("tokens.npy" in fields and "meta.json" in fields)):
        groups.append((key, fields))  # after damage an incomplete last group is dropped

    header = decoder.header
    hl, length = len(header), decoder.length
    want = hl + 4 * length
    words = np.frombuffer(buf, dtype=np.int32, count=len(buf) // 4)
    samples: list[SampleRef | None] = []
    errors: dict[int, str] = {}
    fast: list[int] = []  # sample numbers whose tokens are views of `words`
    for i, (k, f) in enumerate(groups):
        tok, meta = f.get("tokens.npy"), f.get("meta.json")
        if tok is None or meta is None:
            errors[i] = f"missing field {'tokens.npy' if tok is None else 'meta.json'!r}"
            samples.append(None)
            continue
        mlo, mhi = meta[0], meta[0] + meta[1]
        if not _meta_looks_whole(buf[mlo:mhi]):
            errors[i] = "meta.json is not a JSON object"
            samples.append(None)
            continue
        off, size = tok
        if size == want and buf[off:off + hl] == header and (off + hl) % 4 == 0:
            samples.append((words, (off + hl) // 4, buf, mlo, mhi, k))
            fast.append(i)
            continue
        try:
            tokens = decoder.decode(bytes(buf[off:off + size]))
        except ValueError as err:
            errors[i] = str(err)
            samples.append(None)
            continue
        samples.append((tokens, 0, buf, mlo, mhi, k))
    if check_ranges:
        _check_ranges(samples, words, fast, errors, decoder)
    return ShardIndex(samples, errors, damage)


def out_of_vocab(rows: np.ndarray, vocab_size: int) -> np.ndarray:
    """Indices of rows of an int32 [B, L] batch holding an id outside [0, vocab_size)."""
    return np.flatnonzero(rows.view(np.uint32).max(axis=1) >= vocab_size)
