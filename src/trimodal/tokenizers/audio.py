"""Audio tokenizer: the Descript Audio Codec (DAC) through the `descript-audio-codec` package.

What we add on top of `dac.DAC`:

- **Safe loading.** Upstream `DAC.load` calls `torch.load` without `weights_only`, i.e. it
  unpickles whatever the file holds. `load_dac_weights` reads the same file format (a dict with
  `state_dict` and `metadata["kwargs"]`, as `DAC.save(path, package=False)` writes it and as the
  released 16/24/44 kHz `.pth` files are) with `torch.load(weights_only=True)`, so a malicious
  pickle is refused instead of executed. `torch.package` files are refused too.
- **Exact batching of clips of different lengths.** DAC's convolutions use zero "same" padding,
  so padding a short clip to the length of a longer one changes its codes near its end (the
  padded zeros pass through biases and Snake activations and are no longer zero one layer
  later). We batch anyway and stay exact by running the encoder (and decoder) layer by layer
  and zeroing, before every convolution, each clip's positions beyond its own valid length at
  that layer. A clip then sees exactly what it would see alone: its own samples, then zeros.
  The modules and weights are dac's own; only the traversal is ours. The valid length of a clip
  at the input is its length rounded up to the hop, as `DAC.preprocess` pads it.
- **Codebook choice and flattening.** `n_q <= n_codebooks` residual codebooks are kept (the
  first ones: residual quantization makes the first codes independent of later codebooks).
  Codes are `[n_q, frames]`; the token table stores them flattened frame-major
  (t0q0 t0q1 ... t1q0 ...), see `flatten_codes` / `unflatten_codes`.
- **Exact decode length.** The original length in samples is kept by the caller (token table
  `audio_length`); `decode` trims or zero-pads the codec output to it (with odd rates such as 5
  the transposed convolutions give a few samples fewer than frames * hop).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import pickle
import struct
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Sequence

import fsspec
import numpy as np
import torch
from torch import nn

from trimodal.config import ConfigError, from_dict, require, to_dict
from trimodal.io import atomic_write
from trimodal.tokenizers.base import content_hash

log = logging.getLogger(__name__)

FORMAT = "trimodal-dac"
FORMAT_VERSION = "1"


def _dac():
    """Import `dac` lazily: it pulls audiotools/torchaudio, which many callers never need."""
    import dac  # noqa: PLC0415

    return dac


@dataclass
class DACConfig:
    """Architecture of a DAC model; the field names are `dac.DAC`'s own arguments."""

    sample_rate: int = 16000
    encoder_dim: int = 16
    encoder_rates: list[int] = field(default_factory=lambda: [2, 4, 5, 8])
    latent_dim: int | None = None
    decoder_dim: int = 128
    decoder_rates: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    n_codebooks: int = 8
    codebook_size: int = 1024
    codebook_dim: int | list[int] = 8
    quantizer_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.latent_dim is None:  # resolved here as dac does, so equal models have equal configs
            self.latent_dim = self.encoder_dim * 2 ** len(self.encoder_rates)
        require(self.sample_rate > 0, f"DACConfig.sample_rate must be > 0, got {self.sample_rate}")
        require(self.encoder_dim > 0 and self.decoder_dim > 0, "DACConfig: encoder_dim and decoder_dim must be > 0")
        require(bool(self.encoder_rates) and all(r > 0 for r in self.encoder_rates),
                f"DACConfig.encoder_rates must be positive, got {self.encoder_rates}")
        require(math.prod(self.encoder_rates) == math.prod(self.decoder_rates),
                f"DACConfig: encoder_rates {self.encoder_rates} and decoder_rates {self.decoder_rates} "
                "must have the same product (the hop length)")
        require(self.decoder_dim // 2 ** len(self.decoder_rates) >= 1,
                f"DACConfig: decoder_dim {self.decoder_dim} is too small for {len(self.decoder_rates)} upsampling blocks")
        require(self.n_codebooks > 0, f"DACConfig.n_codebooks must be > 0, got {self.n_codebooks}")
        require(1 < self.codebook_size <= 2**31 - 1, f"DACConfig.codebook_size out of range: {self.codebook_size}")
        dims = self.codebook_dim if isinstance(self.codebook_dim, list) else [self.codebook_dim]
        require(all(d > 0 for d in dims), f"DACConfig.codebook_dim must be > 0, got {self.codebook_dim}")
        if isinstance(self.codebook_dim, list):
            require(len(self.codebook_dim) == self.n_codebooks,
                    f"DACConfig: {len(self.codebook_dim)} codebook_dim values for {self.n_codebooks} codebooks")
        require(0.0 <= float(self.quantizer_dropout) <= 1.0,
                f"DACConfig.quantizer_dropout must be in [0, 1], got {self.quantizer_dropout}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    def build(self) -> nn.Module:
        return _dac().DAC(**to_dict(self))


#: A small model that trains visibly in minutes on a CPU (320-sample hop: 50 frames/s at 16 kHz).
TINY_PRESET = DACConfig(sample_rate=16000, encoder_dim=16, encoder_rates=[2, 4, 5, 8],
                        decoder_dim=128, decoder_rates=[8, 5, 4, 2], n_codebooks=8,
                        codebook_size=1024, codebook_dim=8)

#: The architecture of the released 16 kHz DAC (descript's `16khz` weights): 12 codebooks at
#: 50 frames/s. Used to load those weights and to count what encoding costs at full size.
DAC16K_PRESET = DACConfig(sample_rate=16000, encoder_dim=64, encoder_rates=[2, 4, 5, 8],
                          decoder_dim=1536, decoder_rates=[8, 5, 4, 2], n_codebooks=12,
                          codebook_size=1024, codebook_dim=8)


# --- safe loading of upstream weight files ---------------------------------------------
def load_dac_weights(path: str) -> tuple[nn.Module, DACConfig]:
    """Read an upstream DAC weight file (`DAC.save(path, package=False)`, the released `.pth`)
    without unpickling arbitrary objects; returns the model (eval mode) and its config."""
    try:
        with fsspec.open(path, "rb") as f:
            blob = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ConfigError(f"DAC weights file not found: {path}") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as err:
        raise ConfigError(
            f"{path}: refused to load as DAC weights: it is not a plain weights file that "
            "torch.load(weights_only=True) can read (a torch.package export or an arbitrary "
            f"pickle). Re-save it with DAC.save(path, package=False). Detail: {err}"
        ) from err
    if not isinstance(blob, dict) or "state_dict" not in blob or "metadata" not in blob:
        raise ConfigError(f"{path}: not a DAC weights file (expected a dict with 'state_dict' and 'metadata')")
    kwargs = blob["metadata"].get("kwargs") if isinstance(blob["metadata"], dict) else None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{path}: DAC weights file has no metadata['kwargs'] (the model arguments)")
    known = set(inspect.signature(_dac().DAC).parameters) & {f.name for f in dataclasses.fields(DACConfig)}
    ignored = sorted(set(kwargs) - known)
    if ignored:
        log.info("%s: ignoring model arguments %s", path, ignored)
    args = {k: v for k, v in kwargs.items() if k in known}
    if isinstance(args.get("quantizer_dropout"), bool):
        args["quantizer_dropout"] = float(args["quantizer_dropout"])
    cfg = from_dict(DACConfig, args, where=f"{path} metadata.kwargs")
    model = cfg.build()
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{path}: weights do not fit the model its metadata describes: {err}") from err
    return model.eval(), cfg


def _safetensors_metadata(data: bytes, where: str) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob (its header is 8-byte length + JSON)."""
    if len(data) < 8:
        raise ConfigError(f"{where}: too short to be a tokenizer file")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: not a safetensors file ({err})") from err
    return header.get("__metadata__", {}) if isinstance(header, dict) else {}


# --- code layout -------------------------------------------------------------------------
def flatten_codes(codes: np.ndarray) -> np.ndarray:
    """[n_q, frames] -> frame-major flat ids (t0q0 t0q1 ... t1q0 ...), the token-table layout."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"audio codes must be [n_q, frames], got shape {codes.shape}")
    return np.ascontiguousarray(codes.T).reshape(-1)


def unflatten_codes(ids: np.ndarray, n_q: int) -> np.ndarray:
    """Frame-major flat ids -> [n_q, frames]."""
    ids = np.asarray(ids)
    if n_q <= 0 or ids.ndim != 1 or ids.size % n_q:
        raise ValueError(f"{ids.size} audio ids do not split into {n_q} codebooks")
    return np.ascontiguousarray(ids.reshape(-1, n_q).T)


# --- masked layer-by-layer traversal ---------------------------------------------------------
def _mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    idx = torch.arange(x.shape[-1], device=x.device)
    return x * (idx[None, :] < lengths[:, None]).unsqueeze(1).to(x.dtype)


def _conv_out_lengths(conv: nn.Module, lengths: torch.Tensor) -> torch.Tensor:
    k, s, d, p = conv.kernel_size[0], conv.stride[0], conv.dilation[0], conv.padding[0]
    if isinstance(conv, nn.ConvTranspose1d):
        return (lengths - 1) * s - 2 * p + d * (k - 1) + conv.output_padding[0] + 1
    return torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1


def _masked(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a DAC encoder/decoder as if each batch row were alone at its own valid length.

    Only convolutions mix time steps; zeroing their input beyond each row's valid length makes
    every valid output position identical to the unbatched computation (whose conv padding is
    zeros). Pointwise layers (Snake, Tanh) need nothing. Unknown layer types are refused, so a
    future dac version that adds e.g. normalization over time fails loudly, not silently.
    """
    dac = _dac()
    layers = dac.model.dac
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        return module(_mask(x, lengths)), _conv_out_lengths(module, lengths)
    if isinstance(module, nn.Sequential):
        for sub in module:
            x, lengths = _masked(sub, x, lengths)
        return x, lengths
    if isinstance(module, layers.ResidualUnit):
        y, _ = _masked(module.block, x, lengths)
        if y.shape != x.shape:
            raise RuntimeError("DAC ResidualUnit changed the length; masked batching needs padded convs")
        return x + y, lengths
    if isinstance(module, (layers.Encoder, layers.EncoderBlock, layers.DecoderBlock)):
        return _masked(module.block, x, lengths)
    if isinstance(module, layers.Decoder):
        return _masked(module.model, x, lengths)
    if isinstance(module, (dac.nn.layers.Snake1d, nn.Tanh, nn.Identity)):
        return module(x), lengths
    raise TypeError(f"masked DAC traversal does not know layer {type(module).__name__}")


# --- the tokenizer -------------------------------------------------------------------------
#: Padded samples per encoder forward on CPU (8 s at 16 kHz); see `AudioTokenizer.encode`.
CPU_FORWARD_SAMPLES = 1 << 17


def forward_pieces(lengths: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive index groups whose padded size (count x longest) stays within `limit`; a
    clip longer than `limit` goes alone. Order is kept, so outputs concatenate back."""
    pieces: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if cur and (len(cur) + 1) * max(longest, n) > limit:
            pieces.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        pieces.append(cur)
    return pieces


class AudioTokenizer:
    """DAC codec + the number of codebooks kept; follows `trimodal.tokenizers.base.Tokenizer`.

    Inputs to `encode` are mono float waveforms at `sample_rate` (see `to_codec_input` for
    downmix/resample); outputs are int32 codes `[n_q, frames]`, frames = ceil(len / hop).
    """

    def __init__(self, model: nn.Module, config: DACConfig, n_q: int | None = None,
                 use_bf16: bool = False):
        n_q = config.n_codebooks if n_q is None else n_q
        if not 1 <= n_q <= config.n_codebooks:
            raise ConfigError(f"n_q must be in [1, {config.n_codebooks}] for this model, got {n_q}")
        self.model = model.eval()
        self.config = config
        self.n_q = n_q
        self.use_bf16 = use_bf16
        self._hash: str | None = None

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DACConfig, n_q: int | None = None, seed: int = 0) -> "AudioTokenizer":
        """A freshly initialised (untrained) model; deterministic given `seed`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = config.build()
        return cls(model, config, n_q)

    @classmethod
    def from_dac_weights(cls, path: str, n_q: int | None = None) -> "AudioTokenizer":
        """An upstream DAC weight file (16/24/44 kHz release or `DAC.save(..., package=False)`)."""
        model, cfg = load_dac_weights(path)
        return cls(model, cfg, n_q)

    @classmethod
    def download_pretrained(cls, model_type: str = "16khz", n_q: int | None = None) -> "AudioTokenizer":
        """Fetch released weights through dac's own registry (needs network; never in tests),
        then load them with our safe loader."""
        path = _dac().utils.download(model_type=model_type)
        return cls.from_dac_weights(str(path), n_q)

    def with_n_q(self, n_q: int) -> "AudioTokenizer":
        """Same weights, another number of kept codebooks (a different tokenizer hash)."""
        return AudioTokenizer(self.model, self.config, n_q, self.use_bf16)

    # --- identity -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"dac-{self.sample_rate / 1000:g}k-{self.n_q}q-{self.vocab_size}"

    @property
    def vocab_size(self) -> int:
        return int(self.config.codebook_size)

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def hop_length(self) -> int:
        return int(self.config.hop_length)

    @property
    def hash(self) -> str:
        """Content hash of what defines the tokenizer (weights, config, n_q).

        Hashed over a canonical form, not the file bytes: safetensors writes its metadata in
        no fixed order, and an upstream `.pth` and our re-save of it are the same tokenizer."""
        if self._hash is None:
            blobs = [json.dumps(self._metadata(), sort_keys=True).encode()]
            for key, value in sorted(self._state().items()):
                blobs.append(f"{key}:{value.dtype}:{list(value.shape)}".encode())
                blobs.append(value.numpy().tobytes())
            self._hash = content_hash(blobs)
        return self._hash

    def frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop_length)

    # --- persistence --------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}

    def _metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "n_q": str(self.n_q),
                "config": json.dumps(to_dict(self.config), sort_keys=True)}

    def to_bytes(self) -> bytes:
        from safetensors.torch import save  # noqa: PLC0415

        return save(self._state(), metadata=self._metadata())

    def save(self, path: str) -> None:
        """One safetensors file: weights + config + n_q in its metadata (no pickle)."""
        atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: str) -> "AudioTokenizer":
        from safetensors.torch import load as st_load  # noqa: PLC0415

        try:
            with fsspec.open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as err:
            raise ConfigError(f"audio tokenizer file not found: {path}") from err
        meta = _safetensors_metadata(data, path)
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{path}: not a trimodal audio tokenizer (format {meta.get('format')!r}); "
                              "for an upstream DAC .pth use AudioTokenizer.from_dac_weights / --dac-weights")
        cfg = from_dict(DACConfig, json.loads(meta["config"]), where=f"{path} config")
        model = cfg.build()
        try:
            model.load_state_dict(st_load(data), strict=True)
        except RuntimeError as err:
            raise ConfigError(f"{path}: weights do not fit its config: {err}") from err
        return cls(model, cfg, int(meta["n_q"]))

    # --- encode / decode ----------------------------------------------------------------
    def _device(self, device: Any) -> torch.device:
        device = torch.device(device) if device is not None else next(self.model.parameters()).device
        self.model.to(device)
        return device

    def _autocast(self, device: torch.device):
        if not self.use_bf16:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    @torch.inference_mode()
    def encode(self, batch: Sequence[np.ndarray], device: Any = None) -> list[np.ndarray]:
        """Mono waveforms at `sample_rate` -> int32 codes [n_q, frames] each, same order.

        Clips of any lengths share a forward pass and give exactly the codes each would give
        alone (see the module docstring). On CPU the batch is cut into forwards of at most
        CPU_FORWARD_SAMPLES padded samples: large padded activations run out of cache, and a
        batch of 16 clips of 1-4 s encoded 3.3x slower in one forward than in such pieces (tiny
        DAC, 2 cores). On CUDA the whole batch is one forward."""
        if not batch:
            return []
        waves = [np.asarray(w, dtype=np.float32) for w in batch]
        for i, w in enumerate(waves):
            if w.ndim != 1 or w.size == 0:
                raise ValueError(f"encode: clip {i} must be a non-empty mono 1-D array, got shape {w.shape}")
        device = self._device(device)
        if device.type != "cpu":
            return self._encode_forward(waves, device)
        return [c for piece in forward_pieces([w.size for w in waves], CPU_FORWARD_SAMPLES)
                for c in self._encode_forward([waves[i] for i in piece], device)]

    def _encode_forward(self, waves: list[np.ndarray], device: torch.device) -> list[np.ndarray]:
        hop = self.hop_length
        valid = [self.frames(w.size) * hop for w in waves]
        x = torch.zeros(len(waves), 1, max(valid), dtype=torch.float32)
        for i, w in enumerate(waves):
            x[i, 0, : w.size] = torch.from_numpy(w)
        x = x.to(device, non_blocking=True)
        lengths = torch.tensor(valid, device=device)
        with self._autocast(device):
            z, frame_lengths = _masked(self.model.encoder, x, lengths)
            _, codes, _, _, _ = self.model.quantizer(z.float(), self.n_q)
        codes = codes[:, : self.n_q].to("cpu", torch.int32).numpy()
        return [np.ascontiguousarray(codes[i, :, : int(f)]) for i, f in enumerate(frame_lengths.tolist())]

    @torch.inference_mode()
    def decode(self, batch: Sequence[np.ndarray], lengths: Sequence[int] | None = None,
               device: Any = None) -> list[np.ndarray]:
        """Codes [n_q', frames] (n_q' <= n_codebooks) -> float32 waveforms at `sample_rate`.

        With `lengths` (original sample counts, the token table's `audio_length`) each output
        has exactly that length; without, frames * hop."""
        if not batch:
            return []
        codes = [np.asarray(c) for c in batch]
        n_q = codes[0].shape[0] if codes[0].ndim == 2 else -1
        for i, c in enumerate(codes):
            if c.ndim != 2 or c.shape[0] != n_q or not 1 <= n_q <= self.config.n_codebooks:
                raise ValueError(f"decode: codes {i} must be [n_q, frames] with one n_q <= "
                                 f"{self.config.n_codebooks} for the batch, got {c.shape}")
            if c.size and (c.min() < 0 or c.max() >= self.vocab_size):
                raise ValueError(f"decode: codes {i} out of range [0, {self.vocab_size})")
        if lengths is None:
            lengths = [c.shape[1] * self.hop_length for c in codes]
        if len(lengths) != len(codes):
            raise ValueError(f"decode: {len(lengths)} lengths for {len(codes)} code arrays")
        device = self._device(device)
        frames = [c.shape[1] for c in codes]
        padded = np.zeros((len(codes), n_q, max(frames)), dtype=np.int64)
        for i, c in enumerate(codes):
            padded[i, :, : c.shape[1]] = c
        with self._autocast(device):
            z = self.model.quantizer.from_codes(torch.from_numpy(padded).to(device))[0]
            y, out_lengths = _masked(self.model.decoder, z, torch.tensor(frames, device=device))
        y = y.float().to("cpu").numpy()[:, 0]
        out = []
        for i, (n, m) in enumerate(zip(lengths, out_lengths.tolist())):
            wave = y[i, : min(int(n), int(m))]
            if wave.size < n:  # codec output is a few samples short with odd rates: pad with silence
                wave = np.pad(wave, (0, int(n) - wave.size))
            out.append(np.ascontiguousarray(wave, dtype=np.float32))
        return out


# --- waveform preparation (CPU side) -------------------------------------------------------
def to_codec_input(audio: np.ndarray, sample_rate: int, target_rate: int,
                   loudness_db: float | None = None) -> np.ndarray:
    """Any [channels, samples] or [samples] float audio -> mono float32 at `target_rate`.

    Downmix is the channel mean; resampling is polyphase (scipy `resample_poly`, rational
    ratio reduced by the gcd). With `loudness_db`, the clip is normalized to that integrated
    loudness (ITU-R BS.1770 via pyloudnorm) when it is long enough to measure, then peak-limited
    to 1, like DAC's own `compress` (which uses -16 dB)."""
    from scipy.signal import resample_poly  # noqa: PLC0415

    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"audio must be [channels, samples] or [samples], got shape {np.shape(audio)}")
    if sample_rate != target_rate:
        g = math.gcd(int(sample_rate), int(target_rate))
        x = resample_poly(x, target_rate // g, sample_rate // g)
    if loudness_db is not None:
        import pyloudnorm  # noqa: PLC0415

        meter = pyloudnorm.Meter(target_rate)
        if x.size > meter.block_size * target_rate:
            current = meter.integrated_loudness(x)
            if np.isfinite(current):
                x = x * 10.0 ** ((loudness_db - current) / 20.0)
        peak = np.abs(x).max(initial=0.0)
        if peak > 1.0:
            x = x / peak
    return x.astype(np.float32)
