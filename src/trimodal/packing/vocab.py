"""The unified vocabulary: one disjoint-union id space over text, image and audio codes.

Layout (global ids, in this order, each range contiguous):

    [text ids][image codes][audio codebook 0][audio codebook 1]...[specials]

with specials = PAD, then for each modality (text, image, audio) BOS, EOS, MASK, then one
TASK token per task. Audio codebooks get separate ranges by default, because the same code
index means different things in different residual codebooks; `audio_shared=True` maps them
all onto one range (fewer embeddings, the codebook is then implied by the position).

The vocabulary knows sizes, never codecs (packing must not import tokenizers). Its content
hash is recorded in every shard and checkpoint; a mismatch is an error, because silently
training on ids that mean something else is undetectable afterwards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import fsspec
import numpy as np

from trimodal.errors import UserError
from trimodal.io import atomic_write

Modality = Literal["text", "image", "audio"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "audio")
MODALITY_INDEX: dict[str, int] = {m: i for i, m in enumerate(MODALITIES)}
#: Modality index reported for PAD and TASK tokens by `Vocab.modality_of`.
NO_MODALITY = -1

#: Data tasks (what a pair is) and generation directions (what a sampler asks for).
DEFAULT_TASKS: tuple[str, ...] = ("text", "image_text", "audio_text", "t2i", "i2t", "t2s", "s2t")


class VocabError(UserError, ValueError):
    """Ids or a vocabulary file do not fit; the message says which and why."""


@dataclass(frozen=True)
class VocabSpec:
    """Sizes that define a vocabulary. Two equal specs always give the same ids and hash."""

    text_size: int
    image_size: int
    audio_codebook_size: int
    audio_codebooks: int
    audio_shared: bool = False
    tasks: tuple[str, ...] = DEFAULT_TASKS
    #: Names of the tokenizers the sizes came from (recorded, part of the hash).
    tokenizers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("text_size", "image_size", "audio_codebook_size", "audio_codebooks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise VocabError(f"VocabSpec.{name} must be a non-negative integer, got {value!r}")
        if self.text_size == 0:
            raise VocabError("VocabSpec.text_size must be > 0: every sequence carries text")
        if (self.audio_codebooks == 0) != (self.audio_codebook_size == 0):
            raise VocabError(
                "VocabSpec: audio_codebooks and audio_codebook_size must both be 0 (no audio) "
                f"or both > 0, got {self.audio_codebooks} and {self.audio_codebook_size}"
            )
        if len(set(self.tasks)) != len(self.tasks) or not self.tasks:
            raise VocabError(f"VocabSpec.tasks must be unique and non-empty, got {self.tasks}")


class Vocab:
    """Offsets and special ids derived from a `VocabSpec`; maps local ids <-> global ids."""

    def __init__(self, spec: VocabSpec):
        self.spec = spec
        self.text_offset = 0
        self.image_offset = spec.text_size
        self.audio_offset = self.image_offset + spec.image_size
        n_audio_ranges = 1 if spec.audio_shared else spec.audio_codebooks
        self.audio_end = self.audio_offset + n_audio_ranges * spec.audio_codebook_size
        self.pad = self.audio_end
        specials: dict[str, int] = {"PAD": self.pad}
        nxt = self.pad + 1
        for m in MODALITIES:
            for kind in ("BOS", "EOS", "MASK"):
                specials[f"{kind}_{m}"] = nxt
                nxt += 1
        for task in spec.tasks:
            specials[f"TASK_{task}"] = nxt
            nxt += 1
        self.specials = specials
        self.size = nxt
        self._id_to_special = {v: k for k, v in specials.items()}
        self.hash = _spec_hash(spec)

    # --- construction and persistence -------------------------------------------------
    @classmethod
    def from_sizes(
        cls,
        text_size: int,
        image_size: int = 0,
        audio_codebook_size: int = 0,
        audio_codebooks: int = 0,
        **kwargs,
    ) -> "Vocab":
        return cls(VocabSpec(text_size, image_size, audio_codebook_size, audio_codebooks, **kwargs))

    def to_json(self) -> str:
        body = {"spec": _spec_dict(self.spec), "hash": self.hash, "size": self.size,
                "specials": self.specials,
                "ranges": {m: list(self.range(m)) for m in MODALITIES}}
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "vocab.json") -> "Vocab":
        try:
            body = json.loads(text)
            raw = body["spec"]
            spec = VocabSpec(
                text_size=raw["text_size"], image_size=raw["image_size"],
                audio_codebook_size=raw["audio_codebook_size"],
                audio_codebooks=raw["audio_codebooks"], audio_shared=raw["audio_shared"],
                tasks=tuple(raw["tasks"]), tokenizers=dict(raw.get("tokenizers", {})),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise VocabError(f"{where}: not a trimodal vocabulary file ({err})") from err
        vocab = cls(spec)
        if body.get("hash") != vocab.hash:
            raise VocabError(
                f"{where}: stored hash {body.get('hash')} does not match its content "
                f"({vocab.hash}); the file was edited or is corrupt"
            )
        return vocab

    def save(self, path: str) -> None:
        atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> "Vocab":
        try:
            with fsspec.open(path, "r") as f:
                return cls.from_json(f.read(), where=path)
        except FileNotFoundError as err:
            raise VocabError(f"vocabulary file not found: {path}") from err

    def check_hash(self, other_hash: str, where: str) -> None:
        """Raise if data made with another vocabulary is about to be mixed with this one."""
        if other_hash != self.hash:
            raise VocabError(
                f"{where}: made with vocabulary {other_hash}, but this run uses {self.hash}"
            )

    # --- ranges and specials ---------------------------------------------------------
    def range(self, modality: str, codebook: int | None = None) -> tuple[int, int]:
        """Half-open global id range of a modality's codes (one codebook, or all)."""
        if modality == "text":
            return (self.text_offset, self.image_offset)
        if modality == "image":
            return (self.image_offset, self.audio_offset)
        if modality == "audio":
            if codebook is None or self.spec.audio_shared:
                return (self.audio_offset, self.audio_end)
            self._check_codebook(codebook)
            lo = self.audio_offset + codebook * self.spec.audio_codebook_size
            return (lo, lo + self.spec.audio_codebook_size)
        raise VocabError(f"unknown modality {modality!r}; expected one of {MODALITIES}")

    def bos(self, modality: str) -> int:
        return self._special("BOS", modality)

    def eos(self, modality: str) -> int:
        return self._special("EOS", modality)

    def mask(self, modality: str) -> int:
        return self._special("MASK", modality)

    def task(self, name: str) -> int:
        try:
            return self.specials[f"TASK_{name}"]
        except KeyError:
            raise VocabError(f"unknown task {name!r}; this vocabulary has {list(self.spec.tasks)}") from None

    def special_name(self, token_id: int) -> str | None:
        return self._id_to_special.get(int(token_id))

    def mask_ids(self) -> np.ndarray:
        """MASK id per modality index (text, image, audio)."""
        return np.array([self.mask(m) for m in MODALITIES], dtype=np.int64)

    # --- local <-> global -------------------------------------------------------------
    def to_global(self, modality: str, ids: np.ndarray, codebook: int | None = None,
                  where: str = "") -> np.ndarray:
        """Local ids of one modality (or one audio codebook) -> global ids."""
        ids = np.asarray(ids)
        lo, hi = self.range(modality, codebook)
        size = hi - lo
        if ids.size and (ids.min() < 0 or ids.max() >= size):
            bad = ids[(ids < 0) | (ids >= size)][0]
            raise VocabError(
                f"{where + ': ' if where else ''}{modality} id {int(bad)} out of range "
                f"[0, {size})" + (f" for codebook {codebook}" if codebook is not None else "")
            )
        return ids.astype(np.int64) + lo

    def to_local(self, modality: str, ids: np.ndarray, codebook: int | None = None,
                 where: str = "") -> np.ndarray:
        """Global ids that must belong to one modality (or codebook) -> local ids."""
        ids = np.asarray(ids, dtype=np.int64)
        lo, hi = self.range(modality, codebook)
        if ids.size and (ids.min() < lo or ids.max() >= hi):
            bad = ids[(ids < lo) | (ids >= hi)][0]
            raise VocabError(
                f"{where + ': ' if where else ''}global id {int(bad)} is not a {modality} code "
                f"(range [{lo}, {hi}))"
            )
        return ids - lo

    def audio_to_global(self, codes: np.ndarray, where: str = "") -> np.ndarray:
        """Audio codes [n_q, frames] -> flat global ids, frame-major (t0q0 t0q1 ... t1q0 ...)."""
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise VocabError(f"{where + ': ' if where else ''}audio codes must be [n_q, frames], got shape {codes.shape}")
        n_q = codes.shape[0]
        if n_q > self.spec.audio_codebooks:
            raise VocabError(
                f"{where + ': ' if where else ''}{n_q} codebooks but the vocabulary has {self.spec.audio_codebooks}"
            )
        K = self.spec.audio_codebook_size
        if codes.size and (codes.min() < 0 or codes.max() >= K):
            raise VocabError(f"{where + ': ' if where else ''}audio code out of range [0, {K})")
        offsets = np.zeros((n_q, 1), dtype=np.int64) if self.spec.audio_shared else \
            (np.arange(n_q, dtype=np.int64) * K)[:, None]
        return (codes.astype(np.int64) + offsets + self.audio_offset).T.reshape(-1)

    def audio_to_local(self, ids: np.ndarray, n_q: int, where: str = "") -> np.ndarray:
        """Flat frame-major global audio ids -> codes [n_q, frames]."""
        ids = np.asarray(ids, dtype=np.int64)
        if n_q <= 0 or ids.size % n_q:
            raise VocabError(f"{where + ': ' if where else ''}{ids.size} audio ids do not split into {n_q} codebooks")
        frames = ids.reshape(-1, n_q).T
        out = np.empty_like(frames)
        for q in range(n_q):
            out[q] = self.to_local("audio", frames[q], None if self.spec.audio_shared else q, where)
        return out

    def modality_of(self, ids: np.ndarray) -> np.ndarray:
        """Modality index per global id: codes and their BOS/EOS/MASK -> 0/1/2; PAD, TASK -> -1."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(ids.shape, NO_MODALITY, dtype=np.int64)
        out[(ids >= self.text_offset) & (ids < self.image_offset)] = 0
        out[(ids >= self.image_offset) & (ids < self.audio_offset)] = 1
        out[(ids >= self.audio_offset) & (ids < self.audio_end)] = 2
        for i, m in enumerate(MODALITIES):
            for kind in ("BOS", "EOS", "MASK"):
                out[ids == self.specials[f"{kind}_{m}"]] = i
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise VocabError(f"token id out of vocabulary range [0, {self.size})")
        return out

    # --- helpers ---------------------------------------------------------------------
    def _special(self, kind: str, modality: str) -> int:
        if modality not in MODALITY_INDEX:
            raise VocabError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return self.specials[f"{kind}_{modality}"]

    def _check_codebook(self, codebook: int) -> None:
        if not 0 <= codebook < self.spec.audio_codebooks:
            raise VocabError(f"audio codebook {codebook} out of range [0, {self.spec.audio_codebooks})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        s = self.spec
        return (f"Vocab(size={self.size}, text={s.text_size}, image={s.image_size}, "
                f"audio={s.audio_codebooks}x{s.audio_codebook_size}"
                f"{' shared' if s.audio_shared else ''}, hash={self.hash})")


def _spec_dict(spec: VocabSpec) -> dict:
    d = asdict(spec)
    d["tasks"] = list(spec.tasks)
    return d


def _spec_hash(spec: VocabSpec) -> str:
    canonical = json.dumps(_spec_dict(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
