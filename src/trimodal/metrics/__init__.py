"""Reconstruction metrics for images (PSNR, SSIM, FID, code statistics) and audio (PESQ,
STOI, multi-scale mel distance, SI-SDR, token rates), with failure-tolerant per-item
evaluation (`trimodal.metrics.image.evaluate_pairs`, `trimodal.metrics.audio.evaluate_pairs`).

Submodules are imported explicitly (`from trimodal.metrics import image`), so that using the
image metrics never needs the audio packages and vice versa.
"""
