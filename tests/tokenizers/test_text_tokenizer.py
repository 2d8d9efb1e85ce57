"""Text tokenizer: train in memory, save/load, encode/decode round trips, hash stability.

(Named test_text_tokenizer.py, not test_text.py: tests/ has no __init__.py files, so two
test modules with one basename would collide under pytest's default import mode.)
"""

import random

import numpy as np
import pytest

from trimodal.config import ConfigError
from trimodal.tokenizers.base import Tokenizer, content_hash
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

WORDS = ["red", "green", "blue", "circle", "square", "the", "a", "small", "large", "on", "left",
         "right", "über", "naïve", "café", "dog", "cat", "sits", "runs", "quickly"]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15)))
                      for _ in range(rng.randint(1, 3))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(corpus(), config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_train_save_load_round_trip(tmp_path, model_type):
    cfg = TextTokenizerConfig(vocab_size=300, model_type=model_type, hard_vocab_limit=False)
    tok = TextTokenizer.train(corpus(), config=cfg)
    assert isinstance(tok, Tokenizer)
    assert 256 < tok.vocab_size <= 300
    path = str(tmp_path / "text.model")
    tok.save(path)
    again = TextTokenizer.load(path)
    assert again.hash == tok.hash == content_hash(open(path, "rb").read())
    assert again.name == tok.name and again.vocab_size == tok.vocab_size
    texts = ["the small cat sits", "café über\nnaïve  dog", "unseen ZEBRA 42 😀"]
    ids = tok.encode(texts)
    assert all(a.dtype == np.int32 and a.ndim == 1 for a in ids)
    assert [x.tolist() for x in again.encode(texts)] == [x.tolist() for x in ids]
    assert again.decode(ids) == texts  # lossless, newlines and double spaces included


def test_training_is_deterministic_and_corpus_sensitive(tok):
    cfg = TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False)
    assert TextTokenizer.train(corpus(), config=cfg).hash == tok.hash
    assert TextTokenizer.train(corpus(seed=1), config=cfg).hash != tok.hash


def test_no_bos_eos_in_ids(tok):
    ids = tok.encode(["red circle"])[0]
    assert len(ids) >= 2
    assert tok.decode([ids[:1]])[0] + tok.decode([ids[1:]])[0] == "red circle"
    assert all(tok.piece(i) not in ("<s>", "</s>") for i in ids)


def test_frequent_words_compress(tok):
    text = " ".join(WORDS[:10])
    assert len(tok.encode([text])[0]) < len(text.encode("utf-8"))


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(TypeError):
        tok.encode("a single string")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([np.array([tok.vocab_size])])
    with pytest.raises(ConfigError, match="empty"):
        TextTokenizer.train(["", "   "], config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))
    with pytest.raises(ConfigError, match="vocab_size"):
        TextTokenizer.train(corpus(50), vocab_size=5000)
    with pytest.raises(ConfigError, match="byte_fallback"):
        TextTokenizerConfig(vocab_size=100)
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.model"):
        TextTokenizer.load(str(tmp_path / "junk.model"))
    with pytest.raises(FileNotFoundError, match="missing.model"):
        TextTokenizer.load(str(tmp_path / "missing.model"))


def test_content_hash_blobs_are_length_prefixed():
    assert content_hash([b"ab", b"c"]) != content_hash([b"a", b"bc"])
    assert content_hash(b"abc") == content_hash([b"abc"])
    assert len(content_hash(b"")) == 16


def test_cli_trains_from_a_jsonl_corpus(tmp_path, capsys):
    import json

    from trimodal.cli import main

    lines = [json.dumps({"body": t}) for t in corpus(300)] + ["{broken"]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "tok.model")
    rc = main(["tokenizer", "text", "train", "--corpus", str(tmp_path / "docs.jsonl"), "--field", "body",
               "--vocab-size", "300", "--soft-vocab-limit", "--out", out])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    tok = TextTokenizer.load(out)
    assert report["hash"] == tok.hash and report["skipped"] == {"not valid JSON": 1}
    assert tok.decode(tok.encode(["red circle"])) == ["red circle"]
    assert main(["tokenizer", "text", "train", "--corpus", str(tmp_path / "nope"), "--out", out]) == 1
    assert "corpus path not found" in capsys.readouterr().err
