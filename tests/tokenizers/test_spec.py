"""The tokenizer factory: spec grammar (old and MODALITY:FORMAT:PATH forms), the format
registry, and loading each built-in format from locally saved files."""

from __future__ import annotations

import numpy as np
import pytest

from trimodal.config import ConfigError
from trimodal.tokenizers import spec as specmod
from trimodal.tokenizers.spec import TokenizerSpec, load_for, load_tokenizer, parse_tokenizer_spec


def test_todays_grammar_still_parses():
    s = parse_tokenizer_spec("audio:s3://b/x.safetensors:n_q=2:label=two books")
    assert (s.kind, s.modality, s.resolved_format, s.path, s.n_q, s.label) == \
        ("audio", "audio", "trimodal", "s3://b/x.safetensors", 2, "two books")
    d = parse_tokenizer_spec("dac:w.pth:n_q=3")
    assert (d.kind, d.modality, d.resolved_format, d.n_q) == ("dac", "audio", "dac", 3)
    assert parse_tokenizer_spec("image:runs/fsq") == TokenizerSpec("image", "runs/fsq")
    t = parse_tokenizer_spec("text:tok/text.model")
    assert (t.modality, t.resolved_format, t.path) == ("text", "sentencepiece", "tok/text.model")


def test_modality_format_path_form_and_format_options(monkeypatch):
    monkeypatch.setitem(specmod.FORMATS["image"], "fake-vq", lambda spec, device: spec)
    s = parse_tokenizer_spec("image:fake-vq:hub/models/vq:scale=2:label=VQ")
    assert (s.modality, s.format, s.path, s.option("scale"), s.label) == ("image", "fake-vq", "hub/models/vq", "2", "VQ")
    assert str(s) == "image:fake-vq:hub/models/vq:scale=2:label=VQ"
    # the same through a --image-tokenizer flag, and the audio form of it
    assert parse_tokenizer_spec("fake-vq:hub/models/vq:scale=2:label=VQ", "image") == s
    assert load_tokenizer(s) is s  # the registry entry is what loads it
    # a path whose first part is not a registered format stays a path
    assert parse_tokenizer_spec("image:s3://bucket/tok").path == "s3://bucket/tok"


@pytest.mark.parametrize("bad", ["runs/fsq", "video:x", "image:x:n_q=2", "audio:x:n_q=two", "audio:x:n_q=0",
                                 "audio:", "audio:x:n_q=1:n_q=2"])
def test_bad_specs_are_config_errors(bad):
    with pytest.raises(ConfigError):
        parse_tokenizer_spec(bad)


def test_unknown_format_and_option_name_what_is_known(tmp_path):
    with pytest.raises(ConfigError, match="known: \\['dac', 'trimodal'\\]"):
        TokenizerSpec("audio", "x", format="nope")
    with pytest.raises(ConfigError, match="unknown option"):
        load_tokenizer(parse_tokenizer_spec(f"text:{tmp_path / 'x.model'}:colour=red"))
    with pytest.raises(ConfigError, match="not found|cannot load"):
        load_for("image", str(tmp_path / "missing"))


def test_text_image_audio_and_dac_load_through_the_factory(tmp_path):
    from trimodal.tokenizers.image import ImageTokenizer
    from trimodal.tokenizers.image.autoencoder import AutoencoderConfig
    from trimodal.tokenizers.image.quantizers import QuantizerConfig
    from trimodal.tokenizers.image.tokenizer import ImageTokenizerConfig
    from trimodal.tokenizers.text import TextTokenizer

    text = TextTokenizer.train([f"a red circle number {i}" for i in range(40)], vocab_size=300)
    text.save(str(tmp_path / "t.model"))
    assert load_tokenizer(f"text:{tmp_path / 't.model'}").hash == text.hash
    image = ImageTokenizer(ImageTokenizerConfig(
        image_size=16, autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, channel_mult=(1, 1, 1),
                                                     num_res_blocks=1, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=2**8)))
    image.save(str(tmp_path / "img"))
    loaded = load_for("image", str(tmp_path / "img"), bf16=True)
    assert loaded.hash == image.hash and not loaded.training and loaded.use_bf16

    pytest.importorskip("dac")
    from trimodal.tokenizers.audio import AudioTokenizer, DACConfig

    cfg = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                    decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8)
    audio = AudioTokenizer.from_config(cfg, seed=0)
    audio.save(str(tmp_path / "a.safetensors"))
    audio.model.save(str(tmp_path / "a.pth"), package=False)
    wave = np.sin(np.arange(3200) / 7.0).astype(np.float32)
    ours = load_for("audio", str(tmp_path / "a.safetensors"), n_q=2)
    upstream = load_tokenizer(f"dac:{tmp_path / 'a.pth'}:n_q=2")
    assert ours.n_q == upstream.n_q == 2
    np.testing.assert_array_equal(ours.encode([wave])[0], upstream.encode([wave])[0])
    assert load_for("audio", f"dac:{tmp_path / 'a.pth'}").n_q == 4
