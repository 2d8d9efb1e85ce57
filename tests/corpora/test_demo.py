import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from trimodal.config import ConfigError
from trimodal.corpora.demo import (COLOURS, DemoCorpusConfig, Scene, dominant_colour, generate,
                                   render_scene, word_melody)

SMALL = DemoCorpusConfig(n_text_docs=5, n_images=12, n_heldout_images=3, n_audio=2,
                         n_heldout_audio=1, speech="synthetic")


def test_generate_writes_every_part_and_is_deterministic(tmp_path):
    info = generate(tmp_path / "a", SMALL)
    generate(tmp_path / "b", SMALL)
    assert info["speech_source"] == "synthetic word melody"
    pngs = sorted((tmp_path / "a" / "images" / "train").glob("*.png"))
    assert len(pngs) == 12 and len(list((tmp_path / "a" / "images" / "heldout").glob("*.png"))) == 3
    for p in pngs:
        assert (p.with_suffix(".txt")).read_text() == Scene(**json.loads(p.with_suffix(".json").read_text())).caption()
        twin = tmp_path / "b" / "images" / "train" / p.name
        assert p.read_bytes() == twin.read_bytes()
    docs = [json.loads(x) for x in (tmp_path / "a" / "text" / "docs.jsonl").read_text().splitlines()]
    assert len(docs) == 5 and all(d["text"] for d in docs)
    audio, sr = sf.read(tmp_path / "a" / "audio" / "train" / "train_aud00000.wav")
    assert sr == 16000 and len(audio) > 1000 and np.isfinite(audio).all()


def test_dominant_colour_reads_back_the_caption_colour():
    rng = np.random.default_rng(1)
    for colour in COLOURS:
        img = render_scene(Scene("circle", colour, "left", 1), 64, rng)
        assert dominant_colour(img) == colour
    assert dominant_colour(Image.new("RGB", (32, 32), (245, 245, 240))) is None


def test_caption_grammar():
    assert Scene("square", "red", "left", 1).caption() == "a red square on the left"
    assert Scene("circle", "blue", "center", 2).caption() == "two blue circles in the center"


def test_word_melody_differs_per_word():
    assert not np.array_equal(word_melody("red circle", 16000), word_melody("blue square", 16000))


def test_bad_config():
    with pytest.raises(ConfigError, match="speech"):
        DemoCorpusConfig(speech="loud")
