"""Audio reconstruction metrics: PESQ, STOI, multi-scale mel distance, SI-SDR, token rates.

Conventions: a clip is a mono float array (shape (N,), (1, N) or (N, 1)) at `sample_rate`,
nominally in [-1, 1]. Original and reconstruction must share the sample rate; a codec's
output is often a few samples longer or shorter (frame padding), so both are cut to the
shorter length before comparing, and a length difference of more than 10% is an error rather
than something to paper over.

- PESQ (ITU-T P.862 via the `pesq` package): wide band on 16 kHz audio, narrow band on
  8 kHz; the clips are resampled first with `scipy.signal.resample_poly`.
- STOI (`pystoi`, which resamples to 10 kHz itself); `extended=True` gives ESTOI.
- Mel distance: our own implementation of the multi-scale mel loss DAC reports (same
  definition as `dac.nn.loss.MelSpectrogramLoss` with DAC's evaluation settings): for window
  lengths 32..2048 (hop = window/4, periodic Hann, centred reflect-padded STFT) with
  5..320 Slaney mel bands (librosa filters), the mean |log10(max(mel_x, 1e-5)) -
  log10(max(mel_y, 1e-5))| over bands and frames, summed over the seven scales.
- SI-SDR (Le Roux et al. 2019) in dB: +inf for an exact (scaled) copy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view

from trimodal.config import require
from trimodal.metrics.evaluate import EvalReport, PairMetric, evaluate_items, paired

PESQ_RATES = {"wb": 16_000, "nb": 8_000}
MAX_LENGTH_MISMATCH = 0.10
AUDIO_METRICS = ("pesq_wb", "pesq_nb", "stoi", "mel_distance", "si_sdr")


def as_mono(clip: Any) -> np.ndarray:
    """A clip as a 1-D float64 array; raises ValueError for anything that is not mono audio."""
    arr = np.asarray(clip)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"expected a mono clip (N,), (1, N) or (N, 1), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("empty clip")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected float samples, got {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError("clip has NaN or infinite samples")
    return out


def align(reference: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both clips cut to the shorter length (codec frame padding); >10% difference is an error."""
    ref, est = as_mono(reference), as_mono(estimate)
    longer, shorter = max(len(ref), len(est)), min(len(ref), len(est))
    if (longer - shorter) > MAX_LENGTH_MISMATCH * longer:
        raise ValueError(f"lengths differ too much: reference {len(ref)}, estimate {len(est)} samples")
    return ref[:shorter], est[:shorter]


def resample(clip: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio target/source."""
    if sample_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {sample_rate} -> {target_rate}")
    if sample_rate == target_rate:
        return clip
    g = math.gcd(int(sample_rate), int(target_rate))
    return scipy.signal.resample_poly(clip, target_rate // g, sample_rate // g)


def pesq_score(reference: Any, estimate: Any, sample_rate: int,
               mode: Literal["wb", "nb"] = "wb") -> float:
    """PESQ MOS-LQO: wide band ("wb", at 16 kHz, about 1.04..4.64) or narrow band ("nb",
    at 8 kHz, about 1.02..4.55). Raises on clips without detectable speech."""
    from pesq import pesq  # metrics extra

    if mode not in PESQ_RATES:
        raise ValueError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
    ref, est = align(reference, estimate)
    rate = PESQ_RATES[mode]
    ref, est = resample(ref, sample_rate, rate), resample(est, sample_rate, rate)
    return float(pesq(rate, ref, est, mode))


def pesq_wb(reference: Any, estimate: Any, sample_rate: int) -> float:
    return pesq_score(reference, estimate, sample_rate, "wb")


def pesq_nb(reference: Any, estimate: Any, sample_rate: int) -> float:
    return pesq_score(reference, estimate, sample_rate, "nb")


def stoi(reference: Any, estimate: Any, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (0..1); ESTOI when `extended`."""
    from pystoi import stoi as _stoi  # metrics extra

    ref, est = align(reference, estimate)
    return float(_stoi(ref, est, sample_rate, extended=extended))


def si_sdr(reference: Any, estimate: Any) -> float:
    """Scale-invariant signal-to-distortion ratio in dB, after removing the means."""
    ref, est = align(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    energy = float(ref @ ref)
    if energy == 0.0:
        raise ValueError("SI-SDR is undefined for a silent (constant) reference")
    target = (float(est @ ref) / energy) * ref
    noise = est - target
    noise_energy = float(noise @ noise)
    target_energy = float(target @ target)
    if noise_energy == 0.0:
        return float("inf")
    if target_energy == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(target_energy / noise_energy))


@dataclass(frozen=True)
class MelDistanceConfig:
    """Scales of the multi-scale mel distance; defaults are DAC's evaluation settings."""

    window_lengths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    clamp_eps: float = 1e-5
    power: float = 1.0

    def __post_init__(self) -> None:
        require(len(self.window_lengths) == len(self.n_mels) > 0,
                "MelDistanceConfig: window_lengths and n_mels need the same, non-zero length")
        require(all(w >= 4 for w in self.window_lengths),
                "MelDistanceConfig: window lengths must be >= 4")
        require(all(m >= 1 for m in self.n_mels), "MelDistanceConfig: n_mels must be >= 1")
        require(self.clamp_eps > 0, "MelDistanceConfig: clamp_eps must be > 0")


@lru_cache(maxsize=64)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa  # audio extra

    with warnings.catch_warnings():
        # Narrow low bands at small n_fft are empty by construction; DAC's metric keeps them.
        warnings.filterwarnings("ignore", message="Empty filters detected")
        return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float64)


def _log_mel(clip: np.ndarray, sample_rate: int, window: int, n_mels: int,
             config: MelDistanceConfig) -> np.ndarray:
    """Centred STFT (reflect padding of window/2 each side, like torch.stft(center=True)),
    periodic Hann, magnitude, mel bands, log10. Plain numpy: these are many small FFTs, and a
    thread pool costs more than it saves on them."""
    hann = scipy.signal.get_window("hann", window)
    padded = np.pad(clip, window // 2, mode="reflect")
    frames = sliding_window_view(padded, window)[:: window // 4]
    spec = np.abs(np.fft.rfft(frames * hann, axis=-1))
    mel = spec @ _mel_filters(sample_rate, window, n_mels).T
    return np.log10(np.maximum(mel, config.clamp_eps) ** config.power)


def mel_distance(reference: Any, estimate: Any, sample_rate: int,
                 config: MelDistanceConfig = MelDistanceConfig()) -> float:
    """Multi-scale log-mel L1 distance (DAC's "mel loss"); 0 for identical clips."""
    ref, est = align(reference, estimate)
    if len(ref) <= max(config.window_lengths) // 2:  # reflect padding needs this much
        raise ValueError(f"clip of {len(ref)} samples is too short for a "
                         f"{max(config.window_lengths)}-sample window")
    total = 0.0
    for window, n_mels in zip(config.window_lengths, config.n_mels):
        a = _log_mel(ref, sample_rate, window, n_mels, config)
        b = _log_mel(est, sample_rate, window, n_mels, config)
        total += float(np.abs(a - b).mean())
    return total


# --- token rates ---------------------------------------------------------------------------
def tokens_per_second(n_codebooks: int, frame_rate: float) -> float:
    """Discrete tokens per second of audio when all `n_codebooks` levels are kept."""
    if n_codebooks < 1 or frame_rate <= 0:
        raise ValueError(f"need n_codebooks >= 1 and frame_rate > 0, got {n_codebooks}, {frame_rate}")
    return float(n_codebooks * frame_rate)


def bitrate(n_codebooks: int, frame_rate: float, codebook_size: int) -> float:
    """Bits per second: n_q * frame_rate * log2(codebook_size)."""
    if codebook_size < 2:
        raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
    return tokens_per_second(n_codebooks, frame_rate) * math.log2(codebook_size)


# --- batch evaluation ----------------------------------------------------------------------
def pair_metrics(sample_rate: int, names: Sequence[str] = AUDIO_METRICS,
                 mel_config: MelDistanceConfig = MelDistanceConfig()) -> dict[str, PairMetric]:
    """The named metrics as (reference, estimate) -> float callables at one sample rate."""
    table: dict[str, PairMetric] = {
        "pesq_wb": lambda r, e: pesq_wb(r, e, sample_rate),
        "pesq_nb": lambda r, e: pesq_nb(r, e, sample_rate),
        "stoi": lambda r, e: stoi(r, e, sample_rate),
        "estoi": lambda r, e: stoi(r, e, sample_rate, extended=True),
        "mel_distance": lambda r, e: mel_distance(r, e, sample_rate, mel_config),
        "si_sdr": si_sdr,
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown audio metric(s) {unknown}; known: {sorted(table)}")
    return {n: table[n] for n in names}


def evaluate_pairs(originals: Iterable[Any], reconstructions: Iterable[Any], sample_rate: int,
                   keys: Iterable[str] | None = None, *,
                   metrics: Sequence[str] = AUDIO_METRICS,
                   mel_config: MelDistanceConfig = MelDistanceConfig(),
                   progress: bool = True) -> EvalReport:
    """Per-clip metrics and their summaries. A metric failing on one clip (silence for PESQ,
    a clip too short for the mel windows, ...) makes that value None with the reason."""
    total = len(originals) if isinstance(originals, Sequence) else None
    report = evaluate_items(paired(originals, reconstructions),
                            pair_metrics(sample_rate, metrics, mel_config), keys,
                            modality="audio", progress=progress, total=total)
    report.info = {
        "sample_rate": sample_rate,
        "pesq": "P.862 via `pesq`; wb at 16 kHz, nb at 8 kHz, resample_poly",
        "stoi": "pystoi (internal 10 kHz)",
        "mel_distance": {"definition": "sum over scales of mean |log10 mel diff| (DAC)",
                         "window_lengths": list(mel_config.window_lengths),
                         "n_mels": list(mel_config.n_mels), "clamp_eps": mel_config.clamp_eps,
                         "power": mel_config.power},
        "si_sdr": "dB, zero-mean, scale-invariant",
        "length_policy": "cut to the shorter clip; >10% mismatch is an error",
    }
    return report
