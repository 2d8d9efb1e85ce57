"""DAC tokenizer: codes match dac's own, safe loading, exact batching, lengths."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from trimodal.config import ConfigError
from trimodal.packing.vocab import Vocab
from trimodal.tokenizers.audio import (
    AudioTokenizer,
    DACConfig,
    flatten_codes,
    to_codec_input,
    unflatten_codes,
)

dac = pytest.importorskip("dac")

TINY = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                 decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8)


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return AudioTokenizer.from_config(TINY, seed=0)


def _clip(n: int, seed: int) -> np.ndarray:
    """A chirp plus noise: structured enough that codes vary along the clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 800 * t) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _dac_codes(model, wave: np.ndarray, n_q: int) -> np.ndarray:
    with torch.no_grad():
        x = model.preprocess(torch.from_numpy(wave)[None, None], model.sample_rate)
        return model.encode(x, n_q)[1][0, :n_q].numpy()


def test_codes_equal_dac_encode_and_compress(tok):
    wave = _clip(7000, 1)
    ours = tok.encode([wave])[0]
    assert ours.shape == (4, tok.frames(7000)) and ours.dtype == np.int32
    np.testing.assert_array_equal(ours, _dac_codes(tok.model, wave, 4))
    from audiotools import AudioSignal

    dac_file = tok.model.compress(AudioSignal(torch.from_numpy(wave)[None, None], 16000), normalize_db=None)
    np.testing.assert_array_equal(ours, dac_file.codes[0].numpy())


def test_batch_of_different_lengths_equals_single_clips(tok):
    lengths = [5000, 321, 16000, 319, 9600, 12345]
    waves = [_clip(n, i) for i, n in enumerate(lengths)]
    batch = tok.encode(waves)
    for w, codes in zip(waves, batch):
        np.testing.assert_array_equal(codes, tok.encode([w])[0])
        np.testing.assert_array_equal(codes, _dac_codes(tok.model, w, 4))
    # zero-padding the short clip instead (the naive batch) does change its last codes
    naive = _dac_codes(tok.model, np.pad(waves[0], (0, 16000 - 5000)), 4)[:, : batch[0].shape[1]]
    assert not np.array_equal(naive, batch[0])


def test_forward_pieces_bound_the_padded_size_and_keep_order():
    from trimodal.tokenizers.audio import forward_pieces

    lengths = [10, 30, 5, 50, 200, 20, 20]
    pieces = forward_pieces(lengths, 100)
    assert [i for p in pieces for i in p] == list(range(len(lengths)))
    for p in pieces:
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= 100
    assert [4] in pieces  # longer than the limit: alone
    assert forward_pieces([], 100) == []


def test_cpu_pieces_give_the_same_codes_as_one_forward(tok, monkeypatch):
    import trimodal.tokenizers.audio as audio

    waves = [_clip(n, i) for i, n in enumerate([16000, 700, 12000, 3300, 16000, 9000, 640, 15000])]
    monkeypatch.setattr(audio, "CPU_FORWARD_SAMPLES", 32000)  # several forwards
    pieces = tok.encode(waves)
    assert len(audio.forward_pieces([w.size for w in waves], 32000)) > 2
    monkeypatch.setattr(audio, "CPU_FORWARD_SAMPLES", 10**9)  # one masked forward
    whole = tok.encode(waves)
    for a, b in zip(pieces, whole):
        np.testing.assert_array_equal(a, b)


def test_fewer_codebooks_are_a_prefix(tok):
    waves = [_clip(4000, 3), _clip(2500, 4)]
    full = tok.encode(waves)
    two = tok.with_n_q(2)
    assert two.hash != tok.hash and two.name != tok.name
    for a, b in zip(full, two.encode(waves)):
        np.testing.assert_array_equal(a[:2], b)
    with pytest.raises(ConfigError):
        tok.with_n_q(5)


def test_decode_length_and_batch_equals_single(tok):
    lengths = [4321, 16000, 700]
    waves = [_clip(n, i) for i, n in enumerate(lengths)]
    codes = tok.encode(waves)
    out = tok.decode(codes, lengths)
    assert [o.shape[0] for o in out] == lengths
    for c, n, o in zip(codes, lengths, out):
        single = tok.decode([c], [n])[0]
        np.testing.assert_allclose(o, single, atol=1e-5)
        with torch.no_grad():
            ref = tok.model.decode(tok.model.quantizer.from_codes(torch.from_numpy(c[None]).long())[0])[0, 0].numpy()
        m = min(n, ref.shape[0])
        np.testing.assert_allclose(o[:m], ref[:m], atol=1e-5)
    assert tok.decode(codes)[0].shape[0] == codes[0].shape[1] * tok.hop_length


def test_save_load_same_hash_and_codes(tok, tmp_path):
    path = str(tmp_path / "tok.safetensors")
    tok2 = tok.with_n_q(3)
    h = tok2.hash
    tok2.save(path)
    assert tok2.hash == h
    loaded = AudioTokenizer.load(path)
    assert loaded.hash == h and loaded.n_q == 3 and loaded.name == tok2.name
    wave = _clip(6000, 7)
    np.testing.assert_array_equal(loaded.encode([wave])[0], tok2.encode([wave])[0])
    (tmp_path / "junk").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ConfigError, match="junk"):
        AudioTokenizer.load(str(tmp_path / "junk"))


def test_upstream_weight_file_loads_with_identical_codes(tok, tmp_path):
    path = tmp_path / "weights_16khz.pth"
    tok.model.save(str(path), package=False)  # exactly how dac writes its released weights
    loaded = AudioTokenizer.from_dac_weights(str(path), n_q=4)
    assert loaded.config == TINY
    assert loaded.hash == tok.hash  # the same weights and n_q are the same tokenizer
    waves = [_clip(5000, 8), _clip(1234, 9)]
    for a, b in zip(loaded.encode(waves), tok.encode(waves)):
        np.testing.assert_array_equal(a, b)
    # the same dict structure written by hand loads too
    blob = {"state_dict": tok.model.state_dict(), "metadata": {"kwargs": {**TINY.__dict__, "extra": 1}}}
    torch.save(blob, tmp_path / "hand.pth")
    np.testing.assert_array_equal(AudioTokenizer.from_dac_weights(str(tmp_path / "hand.pth")).encode(waves)[0],
                                  tok.encode(waves)[0])


class _Evil:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (shutil.copyfile, (__file__, self.target))


def test_malicious_pickle_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "metadata": {"kwargs": {}}, "x": _Evil(str(target))}, path)
    with pytest.raises(ConfigError, match="refused"):
        AudioTokenizer.from_dac_weights(str(path))
    assert not target.exists()
    with pytest.raises(ConfigError, match="not found"):
        AudioTokenizer.from_dac_weights(str(tmp_path / "missing.pth"))
    torch.save({"state_dict": {}}, tmp_path / "nometa.pth")
    with pytest.raises(ConfigError, match="not a DAC weights file"):
        AudioTokenizer.from_dac_weights(str(tmp_path / "nometa.pth"))


def test_flatten_is_frame_major_and_matches_vocab():
    codes = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    flat = flatten_codes(codes)
    assert flat.tolist() == [1, 4, 2, 5, 3, 6]
    np.testing.assert_array_equal(unflatten_codes(flat, 2), codes)
    vocab = Vocab.from_sizes(10, 0, 8, 2)
    np.testing.assert_array_equal(vocab.audio_to_global(codes) - vocab.audio_offset,
                                  flat + np.tile([0, 8], 3))
    with pytest.raises(ValueError):
        unflatten_codes(flat, 4)


def test_to_codec_input_downmix_and_resample():
    stereo = np.stack([np.ones(44100), -np.ones(44100) * 0.5]).astype(np.float32)
    mono = to_codec_input(stereo, 44100, 16000)
    assert mono.shape == (16000,) and mono.dtype == np.float32
    assert abs(float(np.median(mono)) - 0.25) < 1e-3
    loud = to_codec_input(0.01 * _clip(16000, 0), 16000, 16000, loudness_db=-16.0)
    assert np.abs(loud).max() > 0.1


def test_config_validation():
    with pytest.raises(ConfigError, match="same product"):
        DACConfig(encoder_rates=[2, 4], decoder_rates=[4, 4])
    with pytest.raises(ConfigError, match="codebook_dim"):
        DACConfig(n_codebooks=2, codebook_dim=[8, 8, 8])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_speech_batch_equals_single(tok, tmp_path):
    waves = []
    for i, text in enumerate(["a red circle", "two"]):
        wav = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        data, sr = sf.read(wav, dtype="float32", always_2d=True)
        waves.append(to_codec_input(data.T, sr, 16000))
    batch = tok.encode(waves)
    for w, c in zip(waves, batch):
        np.testing.assert_array_equal(c, _dac_codes(tok.model, w, 4))
    out = tok.decode(batch, [w.size for w in waves])
    assert [o.size for o in out] == [w.size for w in waves]
