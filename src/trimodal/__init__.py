"""trimodal: discrete-token data pipelines and masked-diffusion training for text, image-text
and audio-text (after "The Design Space of Tri-Modal Masked Diffusion Models", 2026)."""

__version__ = "0.1.0"
