"""In-memory batch source and a synthetic structured corpus.

The trainer reads any iterable of batch dicts ({"tokens": LongTensor [B, L], ...}); the shard
reader is the production source. `InMemoryBatches` is the same contract over an array already
in memory (tests, benchmarks, small studies): deterministic per-epoch shuffling, a rank/world
split that matches gradient accumulation (rank r of W takes global batches r, r+W, ...), and
`state_dict`/`load_state_dict` for exact resume.

`synthetic_corpus` makes token sequences with learnable structure in the real layout (TASK,
BOS/EOS segments, PAD), so loss curves mean something without any tokenizer.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from trimodal.packing.vocab import Vocab


class InMemoryBatches:
    """Endless batches of rows of `tokens` [N, L]; the position survives `state_dict`."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, loop: bool = True):
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"InMemoryBatches needs tokens [N, L], got shape {tokens.shape}")
        if tokens.shape[0] < batch_size:
            raise ValueError(f"InMemoryBatches: {tokens.shape[0]} rows < batch_size {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.shuffle, self.loop = shuffle, loop
        self.batches_per_epoch = tokens.shape[0] // batch_size
        self._next = rank  # global batch index this rank yields next

    def _order(self, epoch: int) -> torch.Tensor:
        n = self.tokens.shape[0]
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order, order_epoch = None, -1
        while True:
            epoch, pos = divmod(self._next, self.batches_per_epoch)
            if epoch > 0 and not self.loop:
                return
            if epoch != order_epoch:
                order, order_epoch = self._order(epoch), epoch
            idx = order[pos * self.batch_size:(pos + 1) * self.batch_size]
            self._next += self.world
            yield {"tokens": self.tokens[idx]}

    def state_dict(self) -> dict:
        return {"next": self._next, "rank": self.rank, "world_size": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size", self.world) != self.world or state.get("rank", self.rank) != self.rank:
            raise ValueError(f"data state was saved for rank {state.get('rank')} of {state.get('world_size')}, "
                             f"this is rank {self.rank} of {self.world}")
        self._next = int(state["next"])


def synthetic_corpus(vocab: Vocab, n: int, seq_len: int, seed: int = 0,
                     pair_fraction: float = 0.5) -> np.ndarray:
    """[n, seq_len] int64 sequences: packed Markov text and image-text pairs.

    Text: an order-1 chain where every token has two possible successors (entropy 1 bit per
    token once the previous token is known). Pairs: a short caption whose first token fixes
    the image codes (a deterministic pattern), right-padded. Entropy well below the unigram
    entropy, so an overfitting test can tell learning from guessing.
    """
    rng = np.random.default_rng(seed)
    text_size = vocab.spec.text_size
    succ = rng.integers(0, text_size, size=(text_size, 2))
    out = np.full((n, seq_len), vocab.pad, dtype=np.int64)
    img_lo, img_hi = vocab.range("image")

    def markov(length: int) -> list[int]:
        x = [int(rng.integers(text_size))]
        while len(x) < length:
            x.append(int(succ[x[-1], rng.integers(2)]))
        return x

    for i in range(n):
        row: list[int]
        if img_hi > img_lo and rng.random() < pair_fraction:
            cap = markov(max(2, seq_len // 8))
            n_img = min(16, seq_len // 2)
            codes = [img_lo + (cap[0] * 7 + 3 * j) % (img_hi - img_lo) for j in range(n_img)]
            row = [vocab.task("image_text"), vocab.bos("image"), *codes, vocab.eos("image"),
                   vocab.bos("text"), *cap, vocab.eos("text")]
        else:
            row = [vocab.task("text")]
            while len(row) < seq_len:
                doc = markov(int(rng.integers(4, max(5, seq_len // 2))))
                row += [vocab.bos("text"), *doc, vocab.eos("text")]
        row = row[:seq_len]
        out[i, :len(row)] = row
    return out


def shard_loader(url: str, vocab: Vocab, batch_size: int, seq_len: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, train: bool = True):
    """The shard reader as a trainer data source (state_dict/load_state_dict included).

    train=True: shuffled, looping forever; train=False (eval): one ordered pass. `url` may list
    several shard sets separated by commas (mixed with equal weight).
    """
    # Imported here so the in-memory path (tests, benchmarks) does not need the shard stack.
    from trimodal.shards import ReaderConfig, make_loader

    sources = [u for u in url.split(",") if u]
    config = ReaderConfig(seed=seed, shuffle=train, infinite=train, rank=rank, world_size=world_size)
    return make_loader(sources, vocab, batch_size=batch_size, length=seq_len, config=config,
                       num_workers=num_workers, drop_last=train)
