"""SentencePiece text tokenizer (BPE or unigram), trained in memory, stored as its model proto.

Defaults aim at a *lossless* round trip (decode(encode(s)) == s), because captions and
transcripts come back out of the sampler and must read as they went in: byte fallback (no
unknown pieces), whitespace kept as is, and "\\n" as its own piece. The ids carry no BOS/EOS:
the unified vocabulary adds per-modality BOS/EOS around every segment.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Sequence

import fsspec
import numpy as np
import sentencepiece as spm

from trimodal.config import ConfigError, require
from trimodal.io import atomic_write
from trimodal.tokenizers.base import content_hash

log = logging.getLogger(__name__)

#: SentencePiece skips training sentences longer than this (bytes); we cut lines to fit.
_MAX_SENTENCE_BYTES = 4192


@dataclass
class TextTokenizerConfig:
    vocab_size: int = 32000
    model_type: Literal["bpe", "unigram"] = "bpe"
    #: Bytes as pieces for anything unseen, so nothing ever becomes <unk>. Costs 256 ids.
    byte_fallback: bool = True
    #: SentencePiece normalization rule ("identity" keeps text byte-exact; "nmt_nfkc" folds
    #: Unicode compatibility forms, which makes decode differ from the input).
    normalization: str = "identity"
    character_coverage: float = 0.9995
    #: False: the trainer may return fewer pieces than vocab_size on a small corpus.
    hard_vocab_limit: bool = True
    #: Lines sampled by the trainer (0 = all); keeps training memory bounded on big corpora.
    input_sentence_size: int = 2_000_000
    num_threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.vocab_size > 0, f"TextTokenizerConfig.vocab_size must be > 0, got {self.vocab_size}")
        require(self.model_type in ("bpe", "unigram"),
                f"TextTokenizerConfig.model_type must be 'bpe' or 'unigram', got {self.model_type!r}")
        require(not self.byte_fallback or self.vocab_size > 260,
                f"TextTokenizerConfig.vocab_size={self.vocab_size} is too small for byte_fallback "
                "(256 byte pieces + specials); use a larger vocabulary or byte_fallback=False")
        require(0 < self.character_coverage <= 1,
                f"TextTokenizerConfig.character_coverage must be in (0, 1], got {self.character_coverage}")
        require(self.num_threads >= 1, "TextTokenizerConfig.num_threads must be >= 1")


def _training_lines(texts: Iterable[str]) -> Iterator[str]:
    """Documents -> non-empty lines short enough that the trainer does not drop them."""
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            while line:
                # Cut on characters with a byte budget: 4 bytes per char is the UTF-8 worst case.
                piece, line = line[: _MAX_SENTENCE_BYTES // 4], line[_MAX_SENTENCE_BYTES // 4:]
                yield piece


class TextTokenizer:
    """A trained SentencePiece model; follows `trimodal.tokenizers.base.Tokenizer`."""

    def __init__(self, model_proto: bytes):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self.vocab_size: int = int(self._sp.get_piece_size())
        self.hash: str = content_hash(self._proto)
        # Derived from the proto alone so that it is the same after save/load.
        self.name: str = f"sentencepiece-{self.vocab_size}"

    # --- training and persistence --------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 32000,
              model_type: Literal["bpe", "unigram"] = "bpe",
              config: TextTokenizerConfig | None = None) -> "TextTokenizer":
        """Train on an iterable of documents (streamed to the trainer, nothing written to disk).

        `vocab_size`/`model_type` are shortcuts; a full `config` wins when given.
        """
        cfg = config or TextTokenizerConfig(vocab_size=vocab_size, model_type=model_type)
        counter = {"lines": 0}

        def counted() -> Iterator[str]:
            for line in _training_lines(texts):
                counter["lines"] += 1
                yield line

        writer = io.BytesIO()
        # SentencePiece only offers a process-wide seed (used when it samples/shuffles lines).
        spm.set_random_generator_seed(cfg.seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=counted(), model_writer=writer,
                vocab_size=cfg.vocab_size, model_type=cfg.model_type,
                byte_fallback=cfg.byte_fallback, normalization_rule_name=cfg.normalization,
                remove_extra_whitespaces=False, user_defined_symbols=["\n"],
                character_coverage=cfg.character_coverage, hard_vocab_limit=cfg.hard_vocab_limit,
                input_sentence_size=cfg.input_sentence_size, shuffle_input_sentence=True,
                num_threads=cfg.num_threads, seed_sentencepiece_size=1_000_000,
                # No BOS/EOS/PAD ids: the unified vocabulary owns all special tokens.
                unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                minloglevel=2,
            )
        except RuntimeError as err:
            raise ConfigError(
                f"SentencePiece training failed on {counter['lines']} lines with "
                f"vocab_size={cfg.vocab_size}: {err} (a small corpus needs a smaller vocab_size "
                "or hard_vocab_limit=False)"
            ) from err
        if counter["lines"] == 0:
            raise ConfigError("SentencePiece training got no text: the corpus is empty")
        tok = cls(writer.getvalue())
        log.info("trained %s %s on %d lines: %d pieces, hash %s",
                 cfg.model_type, tok.name, counter["lines"], tok.vocab_size, tok.hash)
        return tok

    def save(self, path: str) -> None:
        """Write the model proto (the file `spm_train` would write; usable by stock sentencepiece)."""
        atomic_write(str(path), self._proto)

    @classmethod
    def load(cls, path: str) -> "TextTokenizer":
        try:
            with fsspec.open(str(path), "rb") as f:
                proto = f.read()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"text tokenizer model not found: {path}") from err
        try:
            return cls(proto)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{path}: not a SentencePiece model ({err})") from err

    @property
    def model_proto(self) -> bytes:
        return self._proto

    # --- encode / decode -----------------------------------------------------------------
    def encode(self, batch: Sequence[str]) -> list[np.ndarray]:
        """Texts -> int32 id arrays (SentencePiece encodes the batch in its own threads)."""
        if isinstance(batch, str):
            raise TypeError("TextTokenizer.encode takes a list of strings, got one string")
        ids = self._sp.encode(list(batch), out_type=int)
        return [np.asarray(x, dtype=np.int32) for x in ids]

    def decode(self, batch: Sequence[np.ndarray | Sequence[int]]) -> list[str]:
        out = []
        for ids in batch:
            arr = np.asarray(ids, dtype=np.int64).reshape(-1)
            if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
                raise ValueError(f"text id out of range [0, {self.vocab_size}) in decode")
            out.append(arr.tolist())
        return list(self._sp.decode(out)) if out else []

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def __repr__(self) -> str:
        return f"TextTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, hash={self.hash})"
