import json

import pytest
import torch

from imgtok_helpers import one_thread, shape_images, tiny_model, tiny_train
from trimodal.config import ConfigError, from_dict
from trimodal.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from trimodal.tokenizers.image.train import ImageTrainConfig, batch_indices, cpu_preset, train

_threads = pytest.fixture(autouse=True, name="_one_thread")(one_thread)


@pytest.fixture(scope="module")
def images():
    return shape_images(32, size=16)


@pytest.mark.parametrize("kind", ["movq", "fsq", "lfq"])
def test_each_variant_learns(tmp_path, images, kind):
    torch.manual_seed(0)
    cfg = tiny_train(kind, steps=40)
    res = train(cfg, images, out=str(tmp_path), progress=False)
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert res.step == 40 and len(res.losses) == 40
    assert last < 0.7 * first, (first, last)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(0 < r["usage"] <= 1 and r["perplexity"] >= 1 and r["psnr"] > 0 for r in rows)
    assert rows[-1]["psnr"] > rows[0]["psnr"]
    # The export at the end loads back with the reported hash.
    back = ImageTokenizer.load(str(tmp_path / "tokenizer"))
    assert back.hash == res.hash == res.tokenizer.hash


@pytest.mark.parametrize("kind", ["movq", "lfq"])
def test_resume_continues_exactly(tmp_path, images, kind):
    extra = dict(kmeans_init=True, dead_code_threshold=2.0) if kind == "movq" else {}
    cfg = tiny_train(kind, steps=8, **extra)
    if kind == "movq":  # also cover the discriminator and its optimizer state
        cfg.loss.adversarial_weight = 0.1
        cfg.loss.adversarial_start_step = 2
        cfg.loss.disc_channels = 8
    full = train(cfg, images, out=str(tmp_path / "full"), progress=False)
    part = train(cfg, images, out=str(tmp_path / "split"), stop_at=4, progress=False)
    assert part.step == 4 and not (tmp_path / "split" / "tokenizer").exists()
    torch.manual_seed(12345)  # a resumed run must not depend on the caller's RNG
    rest = train(cfg, images, out=str(tmp_path / "split"), resume=True, progress=False)
    assert rest.step == 8
    torch.testing.assert_close(torch.tensor(part.losses + rest.losses), torch.tensor(full.losses),
                               rtol=1e-5, atol=1e-6)
    assert rest.hash == full.hash


def test_resume_refuses_other_model(tmp_path, images):
    train(tiny_train("fsq", steps=2), images, out=str(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="different model config"):
        train(tiny_train("lfq", steps=2), images, out=str(tmp_path), resume=True, progress=False)


def test_folder_data_skips_bad_files(tmp_path, images):
    data = tmp_path / "imgs"
    (data / "sub").mkdir(parents=True)
    for i, im in enumerate(images[:6]):
        im.save(data / "sub" / f"{i}.png")
    (data / "broken.png").write_bytes(b"not an image")
    cfg = tiny_train("fsq", steps=3)
    cfg.data = str(data)
    cfg.batch_size = 7
    res = train(cfg, out=str(tmp_path / "run"), progress=False)
    assert res.step == 3 and res.skipped == 3  # the broken file is in each 7-of-7 batch


def test_batch_indices_are_epoch_permutations():
    seen = [i for s in range(4) for i in batch_indices(s, 10, 5, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert batch_indices(2, 10, 5, seed=3) == seen[10:15]


@pytest.mark.parametrize("data, match", [
    ({"autoencoder": {"downsample_factor": 6}}, "downsample_factor must be one of"),
    ({"autoencoder": {"downsample_factor": 8, "channel_mult": [1, 2]}}, "needs 4 entries"),
    ({"quantizer": {"kind": "fsq", "codebook_size": 1000}}, "no recommended FSQ levels"),
    ({"quantizer": {"kind": "lfq", "codebook_size": 100}}, "power of two"),
    ({"quantizer": {"kind": "rvq"}}, "quantizer.kind must be one of"),
    ({"quantizer": {"kind": "movq", "codebook_update": "learnable", "dead_code_threshold": 2}}, "needs codebook_update='ema'"),
    ({"image_size": 20, "autoencoder": {"downsample_factor": 8}}, "multiple of downsample_factor"),
    ({"resize_policy": "stretch"}, "resize_policy"),
    ({"quantizer": {"codebok_size": 3}}, "unknown option"),
])
def test_model_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(ImageTokenizerConfig, data)


@pytest.mark.parametrize("data, match", [
    ({"loss": {"l1_weight": 0, "l2_weight": 0}}, "l1_weight \\+ l2_weight"),
    ({"optim": {"lr": 0}}, "optim.lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"device": "tpu"}, "device"),
])
def test_train_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(ImageTrainConfig, data)


def test_fsq_levels_and_presets():
    assert tiny_model("fsq", codebook_size=2**12).quantizer.levels == (7, 5, 5, 5, 5)
    assert tiny_model("fsq", levels=(5, 5)).quantizer.codebook_size == 25
    for kind in ("movq", "fsq", "lfq"):
        assert cpu_preset(kind).model.quantizer.kind == kind
    with pytest.raises(ConfigError, match="no CPU preset"):
        cpu_preset("vq")
    with pytest.raises(ConfigError, match="no training data"):
        train(ImageTrainConfig(model=tiny_model("fsq")), out="/nonexistent-never-created", progress=False)
