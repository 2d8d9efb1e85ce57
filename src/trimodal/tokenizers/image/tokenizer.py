"""The public image tokenizer: images <-> grids of discrete ids.

Tensor API (what training, metrics and the job framework's device step use)::

    tok = ImageTokenizer.load("runs/img/tokenizer")         # or ImageTokenizer(config)
    ids = tok.encode(images)      # float [B,3,H,W] in [-1,1] -> int64 [B,H/f,W/f]
    images = tok.decode(ids)      # int [B,h,w] -> float [B,3,H,W] in [-1,1]

List API (the `trimodal.tokenizers.base.Tokenizer` protocol): a list of PIL images in gives a
list of int32 arrays [h,w] out, and a list of id arrays in gives a list of PIL images out.

Saved form (`save(path)`, any fsspec URL; `path` is a folder)::

    path/config.json        {"format", "version", "config", "hash", "name", "vocab_size"}
    path/model.safetensors  weights and persistent buffers (e.g. EMA codebook statistics)

`hash` is `content_hash([canonical config JSON without the name, safetensors bytes])`: two
tokenizers with the same hash produce the same ids. It is recomputed from the weights on each
access (it cannot go stale while training); read it once per job.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import fsspec
import numpy as np
import safetensors.torch
import torch
from PIL import Image
from torch import nn

from trimodal.config import ConfigError, from_dict, require, to_dict
from trimodal.io import atomic_write, atomic_write_json
from trimodal.tokenizers.base import content_hash, load_weights_only
from trimodal.tokenizers.image.autoencoder import AutoencoderConfig, Decoder, Encoder
from trimodal.tokenizers.image.preprocess import POLICIES, preprocess, to_pil
from trimodal.tokenizers.image.quantizers import QuantizerConfig, Quantizer, QuantOut

log = logging.getLogger(__name__)

FORMAT = "trimodal-image-tokenizer"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: Prefixes that upstream training frameworks put in front of parameter names.
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")


@dataclass
class ImageTokenizerConfig:
    #: Stable identifier; empty: derived as "<kind>-f<factor>-<codebook_size>".
    name: str = ""
    #: Default image size for `encode_pil`/training (an int: square images).
    image_size: int = 64
    resize_policy: str = "center_crop"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = (f"{self.quantizer.kind}-f{self.autoencoder.downsample_factor}-"
                         f"{self.quantizer.codebook_size}")
        require(self.resize_policy in POLICIES,
                f"resize_policy must be one of {list(POLICIES)}, got {self.resize_policy!r}")
        f = self.autoencoder.downsample_factor
        require(self.image_size >= f and self.image_size % f == 0,
                f"image_size {self.image_size} must be a positive multiple of downsample_factor {f}")


def _arch_json(cfg: ImageTokenizerConfig) -> bytes:
    d = to_dict(cfg)
    d.pop("name")
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def _weights_bytes(module: nn.Module) -> bytes:
    """The safetensors file exactly as `save` writes it (the hash is taken over these bytes)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    return safetensors.torch.save(state, metadata={"format": FORMAT})


class ImageTokenizer(nn.Module):
    def __init__(self, config: ImageTokenizerConfig):
        super().__init__()
        self.config = config
        qcfg = config.quantizer
        self.quantizer = Quantizer(qcfg)
        self.encoder = Encoder(config.autoencoder, self.quantizer.dim)
        self.decoder = Decoder(config.autoencoder, self.quantizer.dim)
        #: bf16 autocast in encode/decode on CUDA (quantization itself stays float32).
        self.use_bf16 = False

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def vocab_size(self) -> int:
        return int(self.quantizer.codebook_size)

    @property
    def downsample_factor(self) -> int:
        return self.config.autoencoder.downsample_factor

    @property
    def hash(self) -> str:
        return content_hash([_arch_json(self.config), _weights_bytes(self)])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def grid(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Code grid (h, w) of an image of `image_size` (int or (H, W))."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        f = self.downsample_factor
        if h % f or w % f or h < f or w < f:
            raise ValueError(f"image size {h}x{w} is not a positive multiple of the downsampling factor {f}")
        return h // f, w // f

    # --- training forward -----------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantOut]:
        """Reconstruction (unclamped) and the quantizer output; used by training."""
        q = self.quantizer(self.encoder(images))
        return self.decoder(q.z_q), q

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- tensor API -----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """float [B,3,H,W] in [-1,1] -> int64 ids [B,h,w]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encode expects images [B,3,H,W], got shape {tuple(images.shape)}")
        self.grid(tuple(images.shape[-2:]))
        was_training = self.training
        self.eval()
        try:
            with self._autocast():
                ids = self.quantizer(self.encoder(images.to(self.device, torch.float32))).ids
        finally:
            self.train(was_training)
        return ids

    @torch.inference_mode()
    def decode_tensor(self, ids: torch.Tensor) -> torch.Tensor:
        """int ids [B,h,w] -> float images [B,3,H,W] in [-1,1]."""
        if ids.ndim != 3:
            raise ValueError(f"decode expects ids [B,h,w], got shape {tuple(ids.shape)}")
        ids = ids.to(self.device, torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        was_training = self.training
        self.eval()
        try:
            with self._autocast():
                out = self.decoder(self.quantizer.ids_to_latent(ids))
        finally:
            self.train(was_training)
        return out.float().clamp_(-1.0, 1.0)

    # --- protocol API (tensor in -> tensor out; list in -> list out) ----------------------
    def encode(self, batch: torch.Tensor | Sequence[Image.Image]) -> Any:
        """Tensor [B,3,H,W] -> LongTensor [B,h,w]; list of PIL images -> list of int32 [h,w]."""
        if isinstance(batch, torch.Tensor):
            return self.encode_tensor(batch)
        return self.encode_pil(list(batch))

    def decode(self, batch: torch.Tensor | Sequence[np.ndarray]) -> Any:
        """LongTensor [B,h,w] -> images [B,3,H,W]; list of id arrays [h,w] -> list of PIL."""
        if isinstance(batch, torch.Tensor):
            return self.decode_tensor(batch)
        arrays = [np.asarray(a) for a in batch]
        if not arrays:
            return []
        if any(a.ndim != 2 or a.shape != arrays[0].shape for a in arrays):
            # Different grids cannot share a batch: decode one by one.
            return [self.to_pil(self.decode_tensor(torch.from_numpy(a.astype(np.int64))[None]))[0]
                    for a in arrays]
        return self.to_pil(self.decode_tensor(torch.from_numpy(np.stack(arrays).astype(np.int64))))

    def encode_pil(self, images: Sequence[Image.Image], size: int | tuple[int, int] | None = None,
                   policy: str | None = None) -> list[np.ndarray]:
        if not images:
            return []
        x = torch.stack([preprocess(im, size or self.config.image_size, policy or self.config.resize_policy)
                         for im in images])
        return [a for a in self.encode_tensor(x).cpu().numpy().astype(np.int32)]

    @staticmethod
    def to_pil(images: torch.Tensor) -> list[Image.Image]:
        return to_pil(images)

    # --- save / load ----------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Write `path/config.json` + `path/model.safetensors`; returns the hash."""
        weights = _weights_bytes(self)
        digest = content_hash([_arch_json(self.config), weights])
        fs, root = fsspec.core.url_to_fs(str(path))
        fs.makedirs(root, exist_ok=True)
        url = str(path).rstrip("/")
        # weights first: config.json (the file `load` starts from) appears once they are whole
        atomic_write(f"{url}/{WEIGHTS_FILE}", weights)
        meta = {"format": FORMAT, "version": VERSION, "name": self.name, "hash": digest,
                "vocab_size": self.vocab_size, "config": to_dict(self.config)}
        atomic_write_json(f"{url}/{CONFIG_FILE}", meta, indent=2, sort_keys=True)
        log.info("saved image tokenizer %s (hash %s) to %s", self.name, digest, path)
        return digest

    @classmethod
    def load(cls, path: str, map_location: str | torch.device = "cpu") -> "ImageTokenizer":
        """Load what `save` wrote (a folder), or a training checkpoint file (.pt/.ckpt/.pth
        holding "config" and "model"); never unpickles arbitrary objects."""
        fs, root = fsspec.core.url_to_fs(str(path))
        if not fs.isdir(root):
            if not fs.exists(root):
                raise FileNotFoundError(f"{path}: no such image tokenizer folder or checkpoint")
            ckpt = _torch_load(path, map_location)
            if not (isinstance(ckpt, dict) and "config" in ckpt and "model" in ckpt):
                raise ConfigError(f"{path}: not a trimodal training checkpoint (needs 'config' and "
                                  f"'model'); for a plain state_dict use from_state_dict_file(path, config)")
            model_cfg = ckpt["config"].get("model", ckpt["config"])
            tok = cls(from_dict(ImageTokenizerConfig, model_cfg, where=f"{path}:config"))
            tok._load_weights(ckpt["model"], str(path))
            return tok.to(map_location)
        try:
            with fs.open(f"{root}/{CONFIG_FILE}", "r") as f:
                meta = json.load(f)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{path}: missing {CONFIG_FILE}") from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}/{CONFIG_FILE}: not valid JSON: {err}") from err
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{path}/{CONFIG_FILE}: format is {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("version") != VERSION:
            raise ConfigError(f"{path}/{CONFIG_FILE}: version {meta.get('version')} not supported (want {VERSION})")
        cfg = from_dict(ImageTokenizerConfig, meta["config"], where=f"{path}/{CONFIG_FILE}")
        with fs.open(f"{root}/{WEIGHTS_FILE}", "rb") as f:
            weights = f.read()
        digest = content_hash([_arch_json(cfg), weights])
        if meta.get("hash") != digest:
            raise ConfigError(f"{path}: stored hash {meta.get('hash')} does not match the content "
                              f"({digest}); the files were edited or are corrupt")
        tok = cls(cfg)
        try:
            state = safetensors.torch.load(weights)
        except Exception as err:
            raise ConfigError(f"{path}/{WEIGHTS_FILE}: not a safetensors file ({err})") from err
        tok._load_weights(state, str(path))
        return tok.to(map_location).eval()

    @classmethod
    def from_state_dict_file(cls, path: str, config: ImageTokenizerConfig,
                             map_location: str | torch.device = "cpu") -> "ImageTokenizer":
        """Load an upstream-style checkpoint of our architecture: a .pt/.ckpt holding a plain
        state dict, or a dict with a "state_dict" (Lightning) or "model" key."""
        obj = _torch_load(path, map_location)
        if isinstance(obj, dict):
            for key in ("state_dict", "model"):
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ConfigError(f"{path}: expected a state dict of tensors (optionally under 'state_dict')")
        tok = cls(config)
        tok._load_weights(obj, str(path))
        return tok.to(map_location).eval()

    def _load_weights(self, state: dict[str, torch.Tensor], where: str) -> None:
        ours = self.state_dict()
        fixed: dict[str, torch.Tensor] = {}
        for k, v in state.items():
            name = k
            while name not in ours and name.startswith(_STRIP_PREFIXES):
                name = name.split(".", 1)[1]
            fixed[name] = v
        missing = sorted(set(ours) - set(fixed))
        unexpected = sorted(set(fixed) - set(ours))
        bad_shape = sorted(k for k in set(ours) & set(fixed) if ours[k].shape != fixed[k].shape)
        if missing or unexpected or bad_shape:
            raise ConfigError(f"{where}: weights do not fit this architecture: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''}, wrong shape {bad_shape[:5]}")
        self.load_state_dict(fixed, strict=True)


def _torch_load(path: str, map_location: str | torch.device) -> Any:
    """`load_weights_only` of an fsspec path (a missing file stays FileNotFoundError)."""
    with fsspec.open(str(path), "rb") as f:
        return load_weights_only(f, str(path), map_location)

