"""The image-text encoder of tokenization jobs: decode + resize in workers, tokenize on device.

`open_image` sorts unreadable files into a few named skip reasons (so a job report says *what*
was wrong with the corpus, not just how much). `ImageEncoder` adapts any image tokenizer with
`encode(images [B,3,H,W] in [-1,1]) -> ids [B,h,w]`, `name` and `hash` (the project's
`ImageTokenizer`) plus a text tokenizer for the captions to the job's `Encoder` protocol.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from trimodal.corpora.samples import ImageText, Sample
from trimodal.jobs.protocol import SkipSample
from trimodal.packing.table import TokenRow
from trimodal.tokenizers.image.preprocess import POLICIES, preprocess

#: Skip reasons of image decoding.
TRUNCATED_IMAGE = "truncated_image"
UNDECODABLE_IMAGE = "undecodable_image"
EMPTY_IMAGE = "empty_image"
IMAGE_TOO_LARGE = "image_too_large"
WRONG_SAMPLE_TYPE = "wrong_sample_type"

#: Refuse images above this many pixels (decompression bombs); PIL's own guard warns at ~89M.
MAX_PIXELS = 64_000_000


def open_image(data: bytes, key: str) -> Image.Image:
    """Fully decode image bytes to an RGB PIL image, or raise SkipSample with the reason.

    `Image.open` only reads the header, so `load()` is forced here: a truncated JPEG opens
    fine and fails only when its pixels are read, and it must fail inside the worker.
    """
    if not data:
        raise SkipSample(key, EMPTY_IMAGE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise SkipSample(key, IMAGE_TOO_LARGE)
            img.load()
    except SkipSample:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SkipSample(key, IMAGE_TOO_LARGE) from None
    except OSError as err:
        reason = TRUNCATED_IMAGE if "truncated" in str(err).lower() else UNDECODABLE_IMAGE
        raise SkipSample(key, reason) from None
    except Exception:  # PIL raises ValueError, SyntaxError, struct.error... for junk bytes
        raise SkipSample(key, UNDECODABLE_IMAGE) from None
    if img.width < 1 or img.height < 1:
        raise SkipSample(key, UNDECODABLE_IMAGE)
    return img.convert("RGB")


@dataclass
class PreparedImage:
    """What a worker hands to `ImageEncoder.encode` for one sample.

    Pixels are a numpy array, not a tensor: a tensor leaving a DataLoader worker gets its own
    shared-memory file and a socket hand-over in the main process (about a millisecond per
    sample, as much as decoding it), while an array is copied through the pipe in tens of
    microseconds.
    """

    key: str
    source: str
    pixels: np.ndarray  # float32 [3, H, W] in [-1, 1]
    text_ids: np.ndarray  # int32


class ImageEncoder:
    """Job `Encoder` for image-text pairs -> rows with task "image_text".

    The image tokenizer itself is dropped when the encoder is pickled for spawned DataLoader
    workers: workers only decode and resize, and shipping model weights to each would cost
    memory for nothing.
    """

    def __init__(self, image_tokenizer: Any, text_tokenizer: Any, image_size: int = 64,
                 crop_policy: str = "center_crop", bf16: bool = False):
        if crop_policy not in POLICIES:
            raise ValueError(f"unknown crop policy {crop_policy!r}; use one of {list(POLICIES)}")
        if image_size <= 0:
            raise ValueError(f"image_size must be > 0, got {image_size}")
        self.image_tokenizer = image_tokenizer
        self.text_tokenizer = text_tokenizer
        self.image_size = image_size
        self.crop_policy = crop_policy
        self.bf16 = bf16
        self.name = str(image_tokenizer.name)
        self.tokenizer_hash = str(image_tokenizer.hash)
        self.text_tokenizer_hash = str(text_tokenizer.hash)
        self._on_device: torch.device | None = None

    def prepare(self, sample: Sample) -> PreparedImage:
        if not isinstance(sample, ImageText):
            raise SkipSample(getattr(sample, "key", "?"), WRONG_SAMPLE_TYPE)
        img = open_image(sample.image, sample.key)
        pixels = preprocess(img, self.image_size, self.crop_policy).numpy()
        text_ids = self.text_tokenizer.encode([sample.caption])[0]
        return PreparedImage(sample.key, sample.source, pixels, np.asarray(text_ids, np.int32))

    def encode(self, prepared: list[PreparedImage], device: Any) -> list[TokenRow]:
        if not prepared:
            return []
        device = torch.device(device)
        self._move_to(device)
        pixels = torch.from_numpy(np.stack([np.asarray(p.pixels, dtype=np.float32) for p in prepared]))
        if device.type == "cuda":
            pixels = pixels.pin_memory() if not pixels.is_pinned() else pixels
        pixels = pixels.to(device, non_blocking=True)
        # A tokenizer with its own `use_bf16` switch keeps its quantizer in float32 (ids must
        # not depend on bf16 rounding of distances); others get plain autocast.
        own_switch = hasattr(self.image_tokenizer, "use_bf16")
        if own_switch:
            self.image_tokenizer.use_bf16 = self.bf16
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) \
            if self.bf16 and not own_switch else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            ids = self.image_tokenizer.encode(pixels)
        ids = _as_numpy_grid(ids, len(prepared))
        return [
            TokenRow(key=p.key, source=p.source, task="image_text", text_ids=p.text_ids,
                     modality="image", ids=g.reshape(-1).astype(np.int32), shape=tuple(g.shape),
                     tokenizer=self.name, tokenizer_hash=self.tokenizer_hash,
                     text_tokenizer_hash=self.text_tokenizer_hash)
            for p, g in zip(prepared, ids)
        ]

    def _move_to(self, device: torch.device) -> None:
        """Move a torch-module tokenizer to the device once (cheap no-op afterwards)."""
        if self._on_device == device:
            return
        mover = getattr(self.image_tokenizer, "to", None)
        if callable(mover):
            result = mover(device)
            if result is not None and hasattr(result, "encode"):
                self.image_tokenizer = result
        self._on_device = device

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["image_tokenizer"] = None
        return state


def _as_numpy_grid(ids: Any, n: int) -> list[np.ndarray]:
    """Tokenizer output (tensor [B,h,w] or list of [h,w] arrays) -> list of int arrays [h,w]."""
    if isinstance(ids, torch.Tensor):
        arr = ids.detach().to("cpu", torch.int64).numpy()
        grids = [arr[i] for i in range(arr.shape[0])]
    else:
        grids = [np.asarray(x) for x in ids]
    if len(grids) != n:
        raise RuntimeError(f"image tokenizer returned {len(grids)} grids for {n} images")
    for g in grids:
        if g.ndim != 2:
            raise RuntimeError(f"image tokenizer must return [h, w] grids, got shape {g.shape}")
    return grids
