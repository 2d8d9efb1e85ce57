"""Check a shard set against its manifest, and render samples back into readable spans.

`verify_shards` reads every byte: sha256 and size per shard, sample counts, every sample
decodable, ids inside the vocabulary, spans inside [0, L), PAD count as recorded, per-task
totals. It reports per shard and never stops at the first problem, so one run lists all the
damage. `describe_sample` is what `trimodal shards inspect` prints.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

import fsspec
import numpy as np

from trimodal.packing.vocab import MODALITIES, Vocab, VocabError
from trimodal.shards.manifest import VOCAB_NAME, Manifest, ShardError, join_url, read_manifest
from trimodal.shards.tario import TarCorrupt, TokenDecoder, decode_meta, iter_samples

log = logging.getLogger(__name__)

#: Problems listed per shard before the rest are only counted.
_MAX_PROBLEMS = 20


@dataclass
class ShardReport:
    name: str
    samples: int = 0
    expected_samples: int = 0
    bytes: int = 0
    sha256_ok: bool = False
    problems: list[str] = field(default_factory=list)
    hidden_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.hidden_problems += 1


@dataclass
class VerifyReport:
    url: str
    shards: list[ShardReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # set-level (totals, vocab, strays)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.shards)

    def lines(self) -> list[str]:
        out = [f"shard set {self.url}"]
        for s in self.shards:
            status = "ok" if s.ok else "BAD"
            out.append(f"  {s.name}: {status}, {s.samples}/{s.expected_samples} samples, "
                       f"{s.bytes} bytes, sha256 {'ok' if s.sha256_ok else 'MISMATCH'}")
            out.extend(f"    - {p}" for p in s.problems)
            if s.hidden_problems:
                out.append(f"    - ... and {s.hidden_problems} more")
        out.extend(f"  problem: {p}" for p in self.problems)
        out.extend(f"  warning: {w}" for w in self.warnings)
        bad = sum(not s.ok for s in self.shards)
        out.append(f"{'OK' if self.ok else 'FAILED'}: {len(self.shards)} shard(s), {bad} bad, "
                   f"{len(self.problems)} set-level problem(s)")
        return out


class _HashingReader:
    """Read-through file that hashes and counts every byte the parser consumes."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def load_vocab_for(manifest: Manifest, vocab: Vocab | None = None) -> Vocab:
    """The vocabulary to check against: the given one, else vocab.json beside the manifest."""
    if vocab is None:
        url = join_url(manifest.root, VOCAB_NAME)
        try:
            vocab = Vocab.load(url)
        except VocabError as err:
            raise ShardError(f"{manifest.url}: cannot load {VOCAB_NAME} beside it ({err}); "
                             "pass --vocab") from err
    manifest.check_run(vocab, None)
    return vocab


def verify_shards(path: str, vocab: Vocab | None = None) -> VerifyReport:
    manifest = read_manifest(path)
    report = VerifyReport(manifest.url)
    try:
        vocab = load_vocab_for(manifest, vocab)
    except ShardError as err:
        report.problems.append(str(err))
        return report
    if manifest.vocab_size != vocab.size:
        report.problems.append(f"manifest vocab_size {manifest.vocab_size} != vocabulary size {vocab.size}")
    decoder = TokenDecoder(manifest.length, vocab.size)
    tasks: dict[str, int] = {}
    for entry in manifest.shards:
        shard = _verify_shard(manifest, entry, vocab, decoder, tasks)
        report.shards.append(shard)
    expected = {t: c.get("samples", 0) for t, c in manifest.tasks.items()}
    if tasks != expected and all(s.ok for s in report.shards):
        report.problems.append(f"per-task sample totals {tasks} differ from the manifest's {expected}")
    _check_strays(manifest, report)
    return report


def _verify_shard(manifest: Manifest, entry, vocab: Vocab, decoder: TokenDecoder,
                  tasks: dict[str, int]) -> ShardReport:
    url = manifest.shard_url(entry)
    rep = ShardReport(entry.name, expected_samples=entry.samples)
    L = manifest.length
    pads = 0
    try:
        with fsspec.open(url, "rb") as raw:
            f = _HashingReader(raw)
            try:
                for key, fields in iter_samples(f, url):
                    rep.samples += 1
                    problem, meta, n_pad = _check_sample(fields, decoder, vocab, L)
                    if problem:
                        rep.add(f"sample {key}: {problem}")
                        continue
                    pads += n_pad
                    tasks[meta["task"]] = tasks.get(meta["task"], 0) + 1
            except TarCorrupt as err:
                rep.add(str(err))
            except UnicodeDecodeError as err:  # a member name or pax record that is not UTF-8
                rep.add(f"{url}: unreadable member name ({err})")
            f.drain()
    except FileNotFoundError:
        rep.add(f"{url}: missing")
        return rep
    except OSError as err:
        rep.add(f"{url}: unreadable ({err})")
        return rep
    rep.bytes = f.size
    rep.sha256_ok = f.sha.hexdigest() == entry.sha256
    if not rep.sha256_ok:
        rep.add(f"sha256 {f.sha.hexdigest()[:16]}... != manifest {entry.sha256[:16]}...")
    if f.size != entry.bytes:
        rep.add(f"size {f.size} bytes != manifest {entry.bytes}")
    if rep.samples != entry.samples:
        rep.add(f"{rep.samples} samples != manifest {entry.samples}")
    if rep.ok and pads != entry.pad_tokens:
        rep.add(f"{pads} PAD tokens != manifest {entry.pad_tokens}")
    return rep


def _check_sample(fields: dict[str, bytes], decoder: TokenDecoder, vocab: Vocab,
                  L: int) -> tuple[str, dict, int]:
    missing = {"tokens.npy", "meta.json"} - set(fields)
    if missing:
        return f"missing {sorted(missing)}", {}, 0
    try:
        tokens = decoder.decode(fields["tokens.npy"])
        meta = decode_meta(fields["meta.json"])
    except ValueError as err:
        return str(err), {}, 0
    n_pad = int((tokens == vocab.pad).sum())
    modality = vocab.modality_of(tokens)
    if int(meta.get("pad_count", -1)) != n_pad:
        return f"meta pad_count {meta.get('pad_count')} but {n_pad} PAD tokens", meta, 0
    for span in meta["spans"]:
        try:
            m, s, e = span
            if m not in MODALITIES or not 0 <= int(s) < int(e) <= L:
                raise ValueError
        except (ValueError, TypeError):
            return f"bad span {span!r} (want [modality, start, end] inside [0, {L}))", meta, 0
        if not (modality[int(s):int(e)] == MODALITIES.index(m)).all():
            return f"span {span!r} holds ids that are not {m} tokens", meta, 0
    return "", meta, n_pad


def _check_strays(manifest: Manifest, report: VerifyReport) -> None:
    """Tars beside the manifest that it does not list, and leftover temp files."""
    try:
        fs, root = fsspec.core.url_to_fs(manifest.root or ".")
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    except (OSError, NotImplementedError):
        return
    listed = {s.name for s in manifest.shards}
    for name in sorted(names):
        if name.endswith(".tar") and name not in listed:
            report.warnings.append(f"{name} is not in the manifest (readers ignore it)")
        elif name.endswith(".tmp"):
            report.warnings.append(f"{name}: leftover of an interrupted write (safe to delete)")


# --- inspect ------------------------------------------------------------------------------
def iter_shard_samples(manifest: Manifest, vocab: Vocab) -> Iterator[tuple[str, np.ndarray, dict]]:
    """(key, tokens, meta) in manifest order; bad samples raise ShardError (inspect is for looking)."""
    decoder = TokenDecoder(manifest.length, vocab.size)
    for entry in manifest.shards:
        url = manifest.shard_url(entry)
        with fsspec.open(url, "rb") as f:
            try:
                for key, fields in iter_samples(f, url):
                    try:
                        yield key, decoder.decode(fields["tokens.npy"]), decode_meta(fields["meta.json"])
                    except (KeyError, ValueError) as err:
                        raise ShardError(f"{url}: sample {key}: {err}") from err
            except TarCorrupt as err:
                raise ShardError(str(err)) from err


def describe_sample(key: str, tokens: np.ndarray, meta: dict, vocab: Vocab,
                    text_decoder: Callable[[list[int]], str] | None = None,
                    max_ids: int = 24) -> str:
    """A readable rendering: header, then the tokens outside spans and each span's local ids."""
    L = len(tokens)
    lines = [f"{key}  task={meta.get('task')} source={meta.get('source')!r} "
             f"keys={meta.get('keys')} pad={meta.get('pad_count')} L={L}"]
    if meta.get("extra"):
        lines.append(f"  extra: {meta['extra']}")
    covered = np.zeros(L, dtype=bool)
    for m, s, e in meta.get("spans", []):
        covered[s:e] = True
    outside = [(i, vocab.special_name(int(t)) or str(int(t))) for i, t in enumerate(tokens) if not covered[i]]
    runs: list[str] = []
    for i, name in outside:  # compress runs of PAD
        if runs and name == "PAD" and runs[-1].startswith("PAD"):
            count = int(runs[-1].split("x")[1]) + 1 if "x" in runs[-1] else 2
            runs[-1] = f"PADx{count}"
        else:
            runs.append(f"{name}@{i}" if name != "PAD" else "PAD")
    lines.append(f"  outside spans: {' '.join(runs) or '-'}")
    for m, s, e in meta.get("spans", []):
        seg = tokens[s:e]
        # A document piece cut by packing may lack its BOS or EOS: strip only what is there.
        head = vocab.special_name(int(seg[0])) if len(seg) and seg[0] == vocab.bos(m) else None
        tail = vocab.special_name(int(seg[-1])) if len(seg) and seg[-1] == vocab.eos(m) else None
        inner = seg[(1 if head else 0): len(seg) - (1 if tail else 0)]
        try:
            if m == "audio" and not vocab.spec.audio_shared:
                n_q = int(meta.get("extra", {}).get("n_q", vocab.spec.audio_codebooks) or 1)
                usable = len(inner) - len(inner) % n_q
                local = vocab.audio_to_local(inner[:usable], n_q).T.reshape(-1)
            else:
                local = vocab.to_local(m, inner)
            ids = " ".join(str(int(x)) for x in local[:max_ids]) + (" ..." if len(local) > max_ids else "")
        except VocabError as err:
            ids = f"(not {m} codes: {err})"
        lines.append(f"  [{m} {s}:{e}] {head or '(cut)'} ... {tail or '(cut)'}  {len(inner)} ids: {ids}")
        if m == "text" and text_decoder is not None:
            try:
                lines.append(f"    text: {text_decoder([int(x) for x in vocab.to_local('text', inner)])!r}")
            except VocabError:
                pass
    return "\n".join(lines)
