import importlib
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trimodal.metrics.fid_network import feature_stats, tf_legacy_bilinear_resize
from trimodal.metrics.image import (codebook_perplexity, codebook_usage, fid_from_features,
                                    frechet_distance, gaussian_window, psnr, ssim, to_float01,
                                    tokens_per_image)


# --- PSNR / SSIM ---------------------------------------------------------------------------
def test_psnr_known_value_and_scale_independence():
    x = np.zeros((8, 8, 3))
    y = np.full((8, 8, 3), 0.1)
    assert psnr(x, y) == pytest.approx(20.0)
    u8 = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    noisy = np.clip(u8.astype(int) + 7, 0, 255).astype(np.uint8)
    assert psnr(u8, noisy) == pytest.approx(psnr(u8 / 255.0, noisy / 255.0))
    assert psnr(u8, u8) == float("inf")


def _ssim_brute_force(x, y, size=11, sigma=1.5, c1=0.01**2, c2=0.03**2):
    """Straight from the definition: one weighted window at a time."""
    w1 = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    w = np.outer(w1, w1)
    w /= w.sum()
    vals = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_the_definition_window_by_window():
    rng = np.random.default_rng(1)
    x = rng.random((14, 13))
    y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1)
    assert ssim(x, y) == pytest.approx(_ssim_brute_force(x, y), rel=1e-10)


def test_ssim_of_constant_images_has_closed_form():
    a, b = 0.3, 0.6
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected)


def test_ssim_is_one_on_copies_and_falls_with_noise():
    rng = np.random.default_rng(2)
    x = rng.random((32, 32, 3))
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, x, channels="luma") == pytest.approx(1.0)
    scores = [ssim(x, np.clip(x + s * rng.normal(size=x.shape), 0, 1)) for s in (0.02, 0.1, 0.3)]
    assert scores[0] > scores[1] > scores[2]
    y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1)
    assert ssim(x, y) == pytest.approx(ssim(y, x))


def test_ssim_refuses_small_or_mismatched_images():
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(np.zeros((16, 16, 3)), np.zeros((16, 17, 3)))
    with pytest.raises(ValueError):
        gaussian_window(10)


def test_to_float01_accepts_common_inputs_and_names_bad_ones():
    assert to_float01(np.full((2, 2, 4), 255, np.uint8)).shape == (2, 2, 3)
    assert to_float01(np.full((2, 2), 65535, np.uint16)).max() == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_float01(np.full((2, 2, 3), 2.0))
    with pytest.raises(ValueError, match="shape"):
        to_float01(np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        to_float01(np.full((2, 2, 3), np.nan))


# --- code statistics -----------------------------------------------------------------------
def test_codebook_usage_and_perplexity():
    k = 16
    uniform = [np.arange(k).reshape(4, 4), np.arange(k)[::-1]]
    assert codebook_usage(uniform, k) == 1.0
    assert codebook_perplexity(uniform, k) == pytest.approx(k)
    one = np.zeros((4, 4), dtype=np.int64)
    assert codebook_usage(one, k) == pytest.approx(1 / k)
    assert codebook_perplexity(one, k) == pytest.approx(1.0)
    half = np.array([0, 0, 0, 1])  # p = (3/4, 1/4)
    assert codebook_perplexity(half, k) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    with pytest.raises(ValueError, match="out of range"):
        codebook_usage(np.array([0, 16]), k)
    assert tokens_per_image([np.zeros((16, 16)), np.zeros((2, 16, 16))]) == pytest.approx(384)


# --- Fréchet distance ----------------------------------------------------------------------
@pytest.fixture
def pytorch_fid_frechet():
    """pytorch-fid's own `calculate_frechet_distance`, imported without torchvision.

    fid_score.py needs torchvision only for its dataset transforms and its Inception module;
    neither is used by calculate_frechet_distance, so both are stubbed in sys.modules for the
    duration of this test when the real torchvision is absent, then removed again."""
    if importlib.util.find_spec("pytorch_fid") is None:
        pytest.skip("pytorch-fid is not installed (pip install --no-deps pytorch-fid==0.3.0)")
    added: list[str] = []
    if importlib.util.find_spec("torchvision") is None:
        stubs = {"torchvision": types.ModuleType("torchvision"),
                 "torchvision.transforms": types.ModuleType("torchvision.transforms"),
                 "pytorch_fid.inception": types.ModuleType("pytorch_fid.inception")}
        stubs["torchvision"].transforms = stubs["torchvision.transforms"]
        stubs["pytorch_fid.inception"].InceptionV3 = type(
            "InceptionV3", (), {"BLOCK_INDEX_BY_DIM": {2048: 3}})  # read at import time
        for name, module in stubs.items():
            if name not in sys.modules:
                sys.modules[name] = module
                added.append(name)
    fresh = "pytorch_fid.fid_score" not in sys.modules
    try:
        yield importlib.import_module("pytorch_fid.fid_score").calculate_frechet_distance
    finally:
        if added and fresh:
            sys.modules.pop("pytorch_fid.fid_score", None)
        for name in added:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("n,d", [(300, 32), (40, 64)])  # full-rank and rank-deficient
def test_frechet_distance_equals_pytorch_fid(pytorch_fid_frechet, n, d):
    rng = np.random.default_rng(n + d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    fa = rng.normal(size=(n, d)) @ mix
    fb = rng.normal(size=(n + 7, d)) @ (mix + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)) + 0.2
    (mu1, s1), (mu2, s2) = feature_stats(fa), feature_stats(fb)
    ours = frechet_distance(mu1, s1, mu2, s2)
    theirs = float(pytorch_fid_frechet(mu1, s1, mu2, s2))
    assert ours == pytest.approx(theirs, rel=1e-6)
    lowrank, method = fid_from_features(fa, fb, "lowrank")
    assert method == "lowrank" and lowrank == pytest.approx(theirs, rel=1e-6)


def test_frechet_distance_basic_properties():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(50, 8))
    assert fid_from_features(f, f, "sqrtm")[0] == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(f, f, "lowrank")[0] == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(8, dtype=float)
    assert fid_from_features(f, f + shift, "sqrtm")[0] == pytest.approx(shift @ shift)
    assert fid_from_features(f, f, "auto")[1] == "sqrtm"
    assert fid_from_features(f[:5], f[:6], "auto")[1] == "lowrank"
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(f[:1], f)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- resize --------------------------------------------------------------------------------
def test_tf_legacy_bilinear_hand_example_and_grid_sample_equivalence():
    x = torch.tensor([[[[0.0, 1.0]]]])
    out = tf_legacy_bilinear_resize(x, (1, 4))
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.5, 1.0, 1.0]]]]))
    # The same sampling positions expressed through grid_sample: shift the normalised grid by
    # 1/in - 1/out so pixel i lands on source coordinate i * in / out.
    img = torch.rand(2, 3, 37, 53, dtype=torch.float64)
    oh, ow = 64, 29
    theta = torch.tensor([[[1.0, 0.0, 1 / 53 - 1 / ow], [0.0, 1.0, 1 / 37 - 1 / oh]]],
                         dtype=torch.float64).repeat(2, 1, 1)
    grid = F.affine_grid(theta, [2, 3, oh, ow], align_corners=False)
    ref = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(tf_legacy_bilinear_resize(img, (oh, ow)), ref, atol=1e-10)
    assert tf_legacy_bilinear_resize(img, (37, 53)) is img
