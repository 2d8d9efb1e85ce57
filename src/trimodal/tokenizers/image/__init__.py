"""Image tokenizer: convolutional autoencoder + movq / fsq / lfq quantizers.

Public API (see docs/image_tokenizer.md)::

    from trimodal.tokenizers.image import ImageTokenizer, ImageTokenizerConfig, preprocess
"""

from trimodal.tokenizers.image.autoencoder import AutoencoderConfig
from trimodal.tokenizers.image.preprocess import POLICIES, load_image, preprocess, to_pil
from trimodal.tokenizers.image.quantizers import FSQ_LEVELS, QuantizerConfig
from trimodal.tokenizers.image.tokenizer import ImageTokenizer, ImageTokenizerConfig

__all__ = [
    "AutoencoderConfig", "FSQ_LEVELS", "ImageTokenizer", "ImageTokenizerConfig", "POLICIES",
    "QuantizerConfig", "load_image", "preprocess", "to_pil",
]
