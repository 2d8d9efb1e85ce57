import importlib.util
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from trimodal.config import ConfigError
from trimodal.metrics.audio import (MelDistanceConfig, align, bitrate, evaluate_pairs,
                                    mel_distance, pesq_nb, pesq_wb, resample, si_sdr, stoi,
                                    tokens_per_second)

SR = 16_000


def speech_like(seconds: float = 2.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: a gliding harmonic complex shaped by three moving formant
    bumps, amplitude-modulated at a syllable rate with short pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = [(500 + 150 * np.sin(2 * np.pi * 1.3 * t), 80),
                (1500 + 300 * np.sin(2 * np.pi * 0.9 * t + 1), 120),
                (2500 + 200 * np.sin(2 * np.pi * 1.1 * t + 2), 160)]
    x = np.zeros_like(t)
    for k in range(1, 30):
        freq = k * f0
        gain = sum(np.exp(-((freq - fc) ** 2) / (2 * bw**2)) for fc, bw in formants) + 0.02
        x += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    syllables *= (np.sin(2 * np.pi * 0.5 * t) > -0.7)  # pauses between "words"
    x *= syllables
    return 0.5 * x / np.abs(x).max()


def with_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=x.shape)
    noise *= np.sqrt((x @ x) / (noise @ noise) / 10 ** (snr_db / 10))
    return x + noise


@pytest.fixture(scope="module")
def espeak_speech():
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/speech.wav"
        subprocess.run([exe, "-w", path, "The quick brown fox jumps over the lazy dog."],
                       check=True, capture_output=True, timeout=30)
        audio, sr = sf.read(path, dtype="float64")
    return audio, sr


@pytest.fixture(params=["synthetic", "espeak"])
def speech(request):
    if request.param == "synthetic":
        return speech_like(), SR
    return request.getfixturevalue("espeak_speech")


def test_pesq_and_stoi_top_of_scale_on_copies_and_fall_with_noise(speech):
    x, sr = speech
    assert pesq_wb(x, x, sr) > 4.5 and pesq_nb(x, x, sr) > 4.4
    assert stoi(x, x, sr) > 0.99
    wb = [pesq_wb(x, with_noise(x, snr), sr) for snr in (30, 10, 0)]
    nb = [pesq_nb(x, with_noise(x, snr), sr) for snr in (30, 10, 0)]
    st = [stoi(x, with_noise(x, snr), sr) for snr in (30, 10, -5)]
    assert 4.6 > wb[0] > wb[1] > wb[2] >= 1.0
    assert 4.6 > nb[0] > nb[1] > nb[2] >= 1.0
    assert 1.0 > st[0] > st[1] > st[2]


def test_mel_distance_zero_on_copies_and_grows_with_noise(speech):
    x, sr = speech
    assert mel_distance(x, x, sr) == 0.0
    d = [mel_distance(x, with_noise(x, snr), sr) for snr in (30, 10, 0)]
    assert 0 < d[0] < d[1] < d[2]


def test_si_sdr_known_value_infinite_on_copies_and_falls_with_noise():
    n = 8000
    t = np.arange(n) / n
    ref = np.sin(2 * np.pi * 50 * t)
    est = ref + 0.1 * np.cos(2 * np.pi * 50 * t)  # orthogonal, zero-mean distortion
    assert si_sdr(ref, est) == pytest.approx(20.0, abs=1e-6)
    assert si_sdr(ref, ref) == float("inf")
    assert si_sdr(ref, 0.5 * ref) > 100  # scale-invariant
    x = speech_like()
    s = [si_sdr(x, with_noise(x, snr)) for snr in (30, 10, 0)]
    assert s[0] > s[1] > s[2]
    assert s[1] == pytest.approx(10.0, abs=0.5)
    with pytest.raises(ValueError, match="silent"):
        si_sdr(np.zeros(100), np.ones(100))


@pytest.mark.skipif(importlib.util.find_spec("dac") is None, reason="descript-audio-codec not installed")
def test_mel_distance_matches_dac_mel_loss_with_its_eval_settings():
    import torch
    from audiotools import AudioSignal
    from dac.nn.loss import MelSpectrogramLoss

    x = speech_like(1.0)
    y = with_noise(x, 15)
    theirs = MelSpectrogramLoss(
        n_mels=[5, 10, 20, 40, 80, 160, 320], window_lengths=[32, 64, 128, 256, 512, 1024, 2048],
        mag_weight=0.0, pow=1.0, clamp_eps=1e-5, mel_fmin=[0.0] * 7, mel_fmax=[None] * 7)

    def sig(a):
        return AudioSignal(torch.tensor(a, dtype=torch.float64)[None, None], SR)

    expected = float(theirs(sig(y), sig(x)))
    assert mel_distance(x, y, SR) == pytest.approx(expected, rel=1e-5)


def test_length_alignment_resampling_and_config_validation():
    x = speech_like(0.5)
    ref, est = align(x, np.concatenate([x, np.zeros(100)]))
    assert len(ref) == len(est) == len(x)
    with pytest.raises(ValueError, match="lengths differ"):
        align(x, x[: len(x) // 2])
    with pytest.raises(ValueError, match="mono"):
        align(np.zeros((2, 100)), np.zeros((2, 100)))
    assert len(resample(x, SR, 8000)) == len(x) // 2
    assert len(resample(np.zeros(44100), 44100, SR)) == SR
    with pytest.raises(ConfigError):
        MelDistanceConfig(window_lengths=(32,), n_mels=(5, 10))


def test_token_rates():
    # DAC 44 kHz: 9 codebooks of 1024 at 44100 / 512 frames per second, about 7.75 kbps
    frame_rate = 44100 / 512
    assert tokens_per_second(9, frame_rate) == pytest.approx(9 * 86.1328125)
    assert bitrate(9, frame_rate, 1024) == pytest.approx(7751.953125)
    assert bitrate(4, 50, 2048) == pytest.approx(2200.0)
    with pytest.raises(ValueError):
        bitrate(4, 50, 1)


def test_audio_evaluate_pairs_records_a_failing_item_and_carries_on():
    x = speech_like(1.0)
    originals = [x, np.zeros_like(x), x[:200], x]
    recons = [with_noise(x, 20), np.zeros_like(x), x[:200], np.stack([x, x])]
    report = evaluate_pairs(originals, recons, SR, keys=["ok", "silent", "short", "stereo"],
                            progress=False)
    ok, silent, short, stereo = report.items
    assert all(v is not None for v in ok.values.values()) and not ok.errors
    assert silent.values["pesq_wb"] is None and "pesq_wb" in silent.errors
    assert silent.values["si_sdr"] is None and "silent" in silent.errors["si_sdr"]
    assert silent.values["mel_distance"] == 0.0
    assert short.values["mel_distance"] is None and "too short" in short.errors["mel_distance"]
    assert all(v is None for v in stereo.values.values())
    assert "mono" in stereo.errors["stoi"]
    assert report.summary["pesq_wb"].n == 1 and report.summary["pesq_wb"].n_missing == 3
    assert short.values["si_sdr"] == float("inf")  # an exact copy, however short
    assert report.summary["si_sdr"].n == 2 and report.summary["si_sdr"].std is None
    assert report.info["sample_rate"] == SR
    with pytest.raises(ValueError, match="unknown audio metric"):
        evaluate_pairs([x], [x], SR, metrics=["fad"])
