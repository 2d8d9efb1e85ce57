"""ImageEncoder and TextEncoder with the project's real (tiny, untrained) tokenizers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from jobs_toy import make_folder

from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
from trimodal.corpora.text import open_text_corpus
from trimodal.jobs.image import ImageEncoder, open_image
from trimodal.jobs.protocol import SkipSample
from trimodal.jobs.runner import JobConfig, run_job
from trimodal.jobs.text import TextEncoder
from trimodal.packing.table import read_table
from trimodal.tokenizers.image import (
    AutoencoderConfig, ImageTokenizer, ImageTokenizerConfig, QuantizerConfig, preprocess,
)
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig


@pytest.fixture(scope="module")
def text_tok() -> TextTokenizer:
    docs = [f"image {d} {i} a red circle on the left" for d in range(3) for i in range(20)]
    return TextTokenizer.train(docs, config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))


@pytest.fixture(scope="module")
def image_tok() -> ImageTokenizer:
    torch.manual_seed(0)
    cfg = ImageTokenizerConfig(
        image_size=16,
        autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=256))
    return ImageTokenizer(cfg).eval()


def test_image_job_rows_equal_bare_tokenizer(tmp_path: Path, image_tok, text_tok):
    make_folder(tmp_path / "corpus", n_dirs=1, per_dir=6)
    corpus = open_image_corpus(str(tmp_path / "corpus"), "folder", ImageCorpusOptions(name="pics"))
    enc = ImageEncoder(image_tok, text_tok, image_size=16, crop_policy="center_crop")
    run_job(corpus, enc, JobConfig(out=str(tmp_path / "out"), batch_size=4, workers=2, progress=False))
    (table,) = (tmp_path / "out" / "tables").glob("*.parquet")
    rows = read_table(str(table))
    assert [r.key for r in rows] == [f"d0/{i:03d}" for i in range(6)]
    samples = [s for u in corpus.units() for s in corpus.read(u)]
    pixels = torch.stack([preprocess(open_image(s.image, s.key), 16, "center_crop") for s in samples])
    expect = image_tok.encode(pixels).numpy()
    for r, s, e in zip(rows, samples, expect):
        assert r.task == "image_text" and r.modality == "image" and r.shape == (4, 4)
        assert np.array_equal(r.ids, e.reshape(-1)) and r.ids.max() < image_tok.vocab_size
        assert np.array_equal(r.text_ids, text_tok.encode([s.caption])[0])
        assert r.tokenizer == image_tok.name and r.tokenizer_hash == image_tok.hash
        assert r.text_tokenizer_hash == text_tok.hash


def test_image_encoder_pickles_without_model(image_tok, text_tok):
    enc = ImageEncoder(image_tok, text_tok, image_size=16)
    clone = pickle.loads(pickle.dumps(enc))
    assert clone.image_tokenizer is None and clone.tokenizer_hash == enc.tokenizer_hash
    with pytest.raises(ValueError, match="crop policy"):
        ImageEncoder(image_tok, text_tok, crop_policy="zoom")


def test_open_image_reasons():
    with pytest.raises(SkipSample) as err:
        open_image(b"", "k")
    assert err.value.reason == "empty_image"
    with pytest.raises(SkipSample) as err:
        open_image(b"<html>nope</html>", "k")
    assert err.value.reason == "undecodable_image"


def test_text_job(tmp_path: Path, text_tok):
    lines = [json.dumps({"id": f"doc{i}", "text": f"image {i} a red circle"}) for i in range(5)]
    lines.insert(2, json.dumps({"id": "blank", "text": "   "}))
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    corpus = open_text_corpus(str(tmp_path), "jsonl", name="txt", key_field="id")
    report = run_job(corpus, TextEncoder(text_tok),
                     JobConfig(out=str(tmp_path / "out"), batch_size=2, workers=0, progress=False))
    rows = [r for t in sorted((tmp_path / "out" / "tables").glob("*.parquet")) for r in read_table(str(t))]
    assert [r.key for r in rows] == [f"doc{i}" for i in range(5)]
    assert all(r.task == "text" and r.modality == "text" and r.ids.size == 0 for r in rows)
    assert text_tok.decode([rows[3].text_ids]) == ["image 3 a red circle"]
    assert report["samples_ok"] == 5 and sum(report["skipped"].values()) == 1
