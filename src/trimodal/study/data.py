"""The study dataset: demo-like corpus -> three in-memory pools of token sequences.

Why a stand-in tokenizer: a sweep trains dozens of models, and on a laptop-class CPU there is
no time to train an image autoencoder and an audio codec first. The study only needs token
streams with real structure and a caption <-> content relation, so images and audio are
quantized by cheap, deterministic rules (below). Results are about *these* tokens: they show
that the machinery works and how trends are read, not what the paper's tokenizers give.

  text        SentencePiece BPE trained on the demo text (the real text tokenizer)
  image       STAND-IN: the picture box-pooled to grid x grid, each RGB channel quantized to
              4 levels -> 64 colour codes per cell, row-major
  audio       STAND-IN: 64 ms frames; code = 8 log-energy bins x 8 log-spaced spectral-peak
              bins (64 codes, one codebook); the demo's synthetic "word melody" speech gives
              every word its own pitch, so the codes carry the transcript

Sequences follow the packing layout: text documents as [BOS doc EOS] back to back cut every L
(no TASK token, as the packer writes text), pairs via `packing.layout.pair_tokens`.
`MixedBatches` draws rows from the three pools with given weights (the mixing-ratio axis).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from trimodal.config import require
from trimodal.io import atomic_open, atomic_write_json
from trimodal.packing.layout import SkipRow, pair_tokens
from trimodal.packing.vocab import Vocab

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("text", "image_text", "audio_text")
IMAGE_LEVELS = 4  # per RGB channel -> 64 codes
AUDIO_ENERGY_BINS = 8
AUDIO_PITCH_BINS = 8


@dataclass(frozen=True)
class StudyDataConfig:
    seq_len: int = 64
    text_vocab: int = 256
    image_grid: int = 6
    audio_hop: int = 1024  # samples at 16 kHz: 64 ms
    max_audio_frames: int = 32
    n_text_docs: int = 3000
    n_images: int = 1500
    n_audio: int = 600
    #: Held-out sequences per task for evaluation (equal for every task, whatever the mix).
    n_eval: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.seq_len >= 16, f"data.seq_len must be >= 16, got {self.seq_len}")
        require(self.image_grid >= 1, "data.image_grid must be >= 1")
        require(self.image_grid ** 2 + 6 <= self.seq_len,
                f"data: an image of {self.image_grid}x{self.image_grid} codes does not fit seq_len {self.seq_len}")
        require(self.max_audio_frames + 6 <= self.seq_len,
                f"data: max_audio_frames {self.max_audio_frames} does not fit seq_len {self.seq_len}")
        require(self.text_vocab >= 32, "data.text_vocab must be >= 32")
        require(self.audio_hop >= 64, "data.audio_hop must be >= 64")
        for name in ("n_text_docs", "n_images", "n_audio", "n_eval"):
            require(getattr(self, name) > 0, f"data.{name} must be > 0")


@dataclass
class StudyData:
    """Train and eval pools per task ([N, L] int64 each) and the vocabulary they use."""

    vocab: Vocab
    train: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    info: dict

    def eval_rows(self) -> np.ndarray:
        """The balanced held-out set: the same rows for every sweep point."""
        return np.concatenate([self.eval[t] for t in TASKS])


# --- stand-in quantizers ------------------------------------------------------------------
def image_codes(image, grid: int) -> np.ndarray:
    """PIL image -> [grid * grid] codes in [0, 64): box-pooled colour, 4 levels per channel."""
    from PIL import Image

    small = np.asarray(image.convert("RGB").resize((grid, grid), Image.Resampling.BOX), dtype=np.int64)
    q = np.clip(small * IMAGE_LEVELS // 256, 0, IMAGE_LEVELS - 1)
    return (q[..., 0] * IMAGE_LEVELS ** 2 + q[..., 1] * IMAGE_LEVELS + q[..., 2]).reshape(-1)


def audio_codes(wave: np.ndarray, sample_rate: int, hop: int, max_frames: int) -> np.ndarray:
    """Mono waveform -> [frames] codes in [0, 64): log-energy bin x spectral-peak bin."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    n = min(len(wave) // hop, max_frames)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    frames = wave[: n * hop].reshape(n, hop) * np.hanning(hop)
    energy_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
    e_bin = np.clip(((energy_db + 60.0) / 60.0 * AUDIO_ENERGY_BINS).astype(np.int64), 0, AUDIO_ENERGY_BINS - 1)
    spec = np.abs(np.fft.rfft(frames, axis=1))
    freqs = np.fft.rfftfreq(hop, 1.0 / sample_rate)
    peak = freqs[np.argmax(spec, axis=1)]
    edges = np.geomspace(80.0, 2000.0, AUDIO_PITCH_BINS - 1)
    p_bin = np.searchsorted(edges, peak)
    return e_bin * AUDIO_PITCH_BINS + p_bin


# --- building the pools -------------------------------------------------------------------
def pack_text(docs: list[np.ndarray], vocab: Vocab, length: int) -> np.ndarray:
    """Documents (local text ids) as [BOS doc EOS] back to back, cut every `length` tokens."""
    pieces = [np.concatenate([[vocab.bos("text")], vocab.to_global("text", d), [vocab.eos("text")]])
              for d in docs if len(d)]
    stream = np.concatenate(pieces).astype(np.int64)
    n = len(stream) // length
    return stream[: n * length].reshape(n, length)


def pair_rows(vocab: Vocab, task: str, modality: str, items: list[tuple[np.ndarray, np.ndarray]],
              length: int, skips: dict[str, int]) -> np.ndarray:
    """(local codes, local text ids) pairs -> [N, length]; unpackable pairs are counted, not fatal."""
    rows = []
    for i, (codes, text) in enumerate(items):
        try:
            if len(codes) == 0:
                raise SkipRow(f"{task}{i}", "no codes")
            glob = (vocab.to_global("image", codes) if modality == "image"
                    else vocab.audio_to_global(codes[None, :]))
            tokens, _, _ = pair_tokens(vocab, task, modality, glob, text, length, "truncate_text", f"{task}{i}")
            rows.append(tokens.astype(np.int64))
        except SkipRow as err:
            skips[err.reason] = skips.get(err.reason, 0) + 1
    if not rows:
        raise ValueError(f"study data: no {task} pair could be built (skips: {skips})")
    return np.stack(rows)


def build_study_data(root: str | Path, cfg: StudyDataConfig = StudyDataConfig()) -> StudyData:
    """Generate the demo-like corpus under root/corpus, tokenize it, cache pools in root/pools.npz.

    A second call with the same config loads the cache (sweeps resume without re-tokenizing).
    """
    root = Path(root)
    cache, meta = root / "pools.npz", root / "pools.json"
    if cache.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("config") == asdict(cfg):
            try:
                with np.load(cache, allow_pickle=False) as z:
                    train = {t: z[f"train_{t}"] for t in TASKS}
                    ev = {t: z[f"eval_{t}"] for t in TASKS}
            except (OSError, ValueError, KeyError) as err:
                raise ValueError(f"{cache}: refused or unreadable study cache ({err}); "
                                 "delete it to rebuild") from None
            vocab = Vocab.from_json(json.dumps(info["vocab"]), where=str(meta))
            return StudyData(vocab, train, ev, info)

    import soundfile as sf
    from PIL import Image

    from trimodal.corpora.demo import DemoCorpusConfig, generate
    from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

    n_eval = cfg.n_eval
    corpus = root / "corpus"
    # Enough held-out docs for n_eval text rows (a doc is ~40-60 ids, i.e. about one row).
    demo = DemoCorpusConfig(n_text_docs=cfg.n_text_docs + 2 * n_eval, n_images=cfg.n_images,
                            n_heldout_images=n_eval, n_audio=cfg.n_audio, n_heldout_audio=n_eval,
                            seed=cfg.seed, speech="synthetic")
    log.info("study data: generating the demo-like corpus under %s", corpus)
    generate(corpus, demo)
    docs = [json.loads(line)["text"] for line in (corpus / "text" / "docs.jsonl").read_text().splitlines()]
    captions = {split: sorted((corpus / "images" / split).glob("*.txt")) for split in ("train", "heldout")}
    transcripts = {split: sorted((corpus / "audio" / split).glob("*.txt")) for split in ("train", "heldout")}
    all_text = docs + [p.read_text() for s in captions.values() for p in s] \
        + [p.read_text() for s in transcripts.values() for p in s]
    tok = TextTokenizer.train(all_text, config=TextTokenizerConfig(
        vocab_size=cfg.text_vocab, byte_fallback=False, hard_vocab_limit=False, num_threads=1, seed=cfg.seed))
    vocab = Vocab.from_sizes(tok.vocab_size, IMAGE_LEVELS ** 3, AUDIO_ENERGY_BINS * AUDIO_PITCH_BINS, 1,
                             tokenizers={"text": tok.name, "image": f"study-standin-pool{cfg.image_grid}-rgb4",
                                         "audio": f"study-standin-energy-peak-hop{cfg.audio_hop}"})
    skips: dict[str, int] = {}
    L = cfg.seq_len

    def images(split: str) -> np.ndarray:
        items = []
        for cap in captions[split]:
            with Image.open(cap.with_suffix(".png")) as img:
                items.append((image_codes(img, cfg.image_grid), tok.encode([cap.read_text()])[0]))
        return pair_rows(vocab, "image_text", "image", items, L, skips)

    def audio(split: str) -> np.ndarray:
        items = []
        for tr in transcripts[split]:
            wave, sr = sf.read(tr.with_suffix(".wav"), dtype="float32", always_2d=True)
            items.append((audio_codes(wave.mean(axis=1), sr, cfg.audio_hop, cfg.max_audio_frames),
                          tok.encode([tr.read_text()])[0]))
        return pair_rows(vocab, "audio_text", "audio", items, L, skips)

    ids = tok.encode(docs)
    n_held = 2 * n_eval
    text_train, text_eval = pack_text(ids[:-n_held], vocab, L), pack_text(ids[-n_held:], vocab, L)
    require(len(text_eval) >= n_eval, f"study data: only {len(text_eval)} held-out text rows, need {n_eval}")
    train = {"text": text_train, "image_text": images("train"), "audio_text": audio("train")}
    ev = {"text": text_eval[:n_eval], "image_text": images("heldout")[:n_eval], "audio_text": audio("heldout")[:n_eval]}
    info = {"config": asdict(cfg), "vocab": json.loads(vocab.to_json()), "skips": skips,
            "rows": {t: int(len(train[t])) for t in TASKS},
            "tokens": {t: int((train[t] != vocab.pad).sum()) for t in TASKS},
            "stand_in": {"image": vocab.spec.tokenizers["image"], "audio": vocab.spec.tokenizers["audio"]}}
    root.mkdir(parents=True, exist_ok=True)
    with atomic_open(str(cache)) as f:
        np.savez(f, **{f"train_{t}": train[t] for t in TASKS}, **{f"eval_{t}": ev[t] for t in TASKS})
    atomic_write_json(str(meta), info, indent=2)
    log.info("study data: rows %s, non-pad tokens %s, skipped %s", info["rows"], info["tokens"], skips or "none")
    return StudyData(vocab, train, ev, info)


# --- mixing -----------------------------------------------------------------------------
class MixedBatches:
    """Endless batches whose rows come from the task pools with probabilities `weights`.

    Each row picks its pool by weight, then a row of that pool at random; the draw of global
    batch g uses a generator seeded by (seed, g), so the stream is a pure function of the
    position (exact resume via state_dict) and rank r of W takes global batches r, r+W, ...
    """

    def __init__(self, pools: dict[str, np.ndarray], weights: dict[str, float], batch_size: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        names = [t for t in pools if weights.get(t, 0.0) > 0]
        if not names:
            raise ValueError(f"MixedBatches: no pool has a positive weight ({weights})")
        unknown = sorted(set(weights) - set(pools))
        if unknown:
            raise ValueError(f"MixedBatches: weights for unknown pools {unknown}; pools: {sorted(pools)}")
        self.names = names
        self.pools = [torch.from_numpy(np.asarray(pools[t], dtype=np.int64)) for t in names]
        w = np.array([weights[t] for t in names], dtype=np.float64)
        self.probs = w / w.sum()
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self._next = rank

    def _batch(self, g: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, g])
        which = rng.choice(len(self.pools), size=self.batch_size, p=self.probs)
        rows = [self.pools[k][int(rng.integers(len(self.pools[k])))] for k in which]
        return torch.stack(rows)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            g = self._next
            self._next += self.world
            yield {"tokens": self._batch(g)}

    def state_dict(self) -> dict:
        return {"next": self._next, "rank": self.rank, "world_size": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size") != self.world or state.get("rank") != self.rank:
            raise ValueError(f"MixedBatches: state saved for rank {state.get('rank')} of "
                             f"{state.get('world_size')}, this is rank {self.rank} of {self.world}")
        self._next = int(state["next"])
