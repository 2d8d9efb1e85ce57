"""`trimodal bench recon`: tables, JSON and HTML from tiny untrained tokenizers; n_q rows;
unreadable files and failing items counted and skipped; spec parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from trimodal.cli import main
from trimodal.config import ConfigError
from trimodal.metrics.recon import (
    Failure,
    ReconBenchConfig,
    TokenizerSpec,
    _robust_map,
    list_data_files,
    markdown,
    parse_tokenizer_spec,
    run_recon_bench,
)
from trimodal.tokenizers.image import ImageTokenizer
from trimodal.tokenizers.image.autoencoder import AutoencoderConfig
from trimodal.tokenizers.image.quantizers import QuantizerConfig
from trimodal.tokenizers.image.tokenizer import ImageTokenizerConfig

dac = pytest.importorskip("dac")
from trimodal.tokenizers.audio import AudioTokenizer, DACConfig  # noqa: E402

TINY_DAC = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                     decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8,
                     quantizer_dropout=0.5)
N_GOOD = 4


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recon")
    img_tok = ImageTokenizer(ImageTokenizerConfig(
        image_size=16,
        autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, channel_mult=(1, 1, 1),
                                      num_res_blocks=1, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=2**8)))
    img_tok.save(str(root / "fsq"))
    audio_tok = AudioTokenizer.from_config(TINY_DAC, seed=0)
    audio_tok.save(str(root / "dac.safetensors"))
    audio_tok.model.save(str(root / "dac.pth"), package=False)  # the upstream weight format

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for i in range(N_GOOD):
        arr = np.full((20, 24, 3), 200, np.uint8)  # not square: exercises the centre crop
        arr[4 + i: 12 + i, 5:15] = rng.integers(0, 255, 3)
        Image.fromarray(arr).save(images / f"img{i}.png")
    (images / "broken.png").write_bytes(b"not a png at all")
    (images / "caption.txt").write_text("ignored: not an image")

    audio = root / "audio"
    audio.mkdir()
    for i in range(N_GOOD):
        sr = 16000 if i % 2 == 0 else 8000  # resampled to the codec rate
        t = np.arange(int(0.4 * sr)) / sr
        wave = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t * (1 + 2 * t)) + 0.02 * rng.standard_normal(t.size)
        sf.write(audio / f"clip{i}.wav", wave.astype(np.float32), sr, subtype="PCM_16")
    (audio / "broken.wav").write_bytes(b"RIFF....garbage")
    return {"root": root, "fsq": root / "fsq", "dac_st": root / "dac.safetensors",
            "dac_pth": root / "dac.pth", "images": images, "audio": audio}


@pytest.fixture(scope="module")
def cli_run(assets) -> tuple[int, Path, dict]:
    out = assets["root"] / "out"
    rc = main(["bench", "recon",
               "--tokenizer", f"image:{assets['fsq']}",
               "--tokenizer", f"audio:{assets['dac_st']}:n_q=2",
               "--tokenizer", f"audio:{assets['dac_st']}:n_q=4",
               "--data", str(assets["images"]), "--data", str(assets["audio"]),
               "--out", str(out), "--no-fid", "--examples", "2", "--batch-size", "3", "--no-progress"])
    data = json.loads((out / "recon.json").read_text()) if rc == 0 else {}
    return rc, out, data


def test_cli_writes_json_markdown_and_html_with_one_row_per_tokenizer(cli_run):
    rc, out, data = cli_run
    assert rc == 0
    rows = data["tokenizers"]
    assert [(r["modality"], r["n_q"]) for r in rows] == [("image", 1), ("audio", 2), ("audio", 4)]
    assert [r["label"] for r in rows] == ["fsq-f4-240", "dac-16k-2q-256", "dac-16k-4q-256"]
    image, a2, a4 = rows
    assert set(image["metrics"]) == {"psnr", "ssim"}
    assert set(a2["metrics"]) == {"pesq_wb", "pesq_nb", "stoi", "mel_distance", "si_sdr"}
    for r in rows:
        assert r["n_files"] == N_GOOD + 1 and r["n_items"] == N_GOOD
        assert r["codebook"]["n_codes"] > 0 and 0 < r["codebook"]["usage"] <= 1
        assert 1 <= r["codebook"]["perplexity"] <= r["codebook_size"]
        assert r["config"]["hash"] and r["config"]["params"] > 0
    # metric summaries carry n and n_missing that add up to the items evaluated
    for name, s in a2["metrics"].items():
        assert s["n"] + s["n_missing"] == N_GOOD, name
    assert image["metrics"]["psnr"]["n"] == N_GOOD and image["metrics"]["psnr"]["mean"] > 0
    assert image["rates"]["tokens_per_item"] == 16  # 16x16 image, factor 4 -> 4x4 grid
    assert image["throughput"]["images_per_second"] > 0
    assert a4["throughput"]["realtime_factor"] > 0
    assert data["settings"]["fid"]["enabled"] is False

    md = (out / "recon.md").read_text()
    assert "| tokenizer | codebook | tokens/image | PSNR dB | SSIM | FID |" in md
    assert "| tokenizer | codebook | n_q | tokens/s | kbps | PESQ-wb | PESQ-nb | STOI | mel dist |" in md
    for r in rows:
        assert f"| {r['label']} |" in md
    html = (out / "index.html").read_text()
    assert html.count("<audio") == 2 * 3  # 2 examples x (original + two n_q settings)
    assert html.count("<img") >= 2 * 2 + 2  # image pairs + one spectrogram figure per clip
    assets_dir = out / "assets"
    assert all((assets_dir / p).stat().st_size > 0 for p in (q.name for q in assets_dir.iterdir()))


def test_two_n_q_settings_of_one_dac_differ_in_token_rate_and_bitrate(cli_run):
    _, _, data = cli_run
    _, a2, a4 = data["tokenizers"]
    frame_rate = 16000 / 320
    assert a2["rates"]["tokens_per_second"] == pytest.approx(2 * frame_rate)
    assert a4["rates"]["tokens_per_second"] == pytest.approx(4 * frame_rate)
    assert a4["rates"]["bitrate"] == pytest.approx(2 * a2["rates"]["bitrate"])
    assert a2["rates"]["bitrate"] == pytest.approx(2 * frame_rate * math.log2(256))
    assert a4["rates"]["tokens_per_item"] == pytest.approx(2 * a2["rates"]["tokens_per_item"])
    assert len(a4["codebook"]["per_codebook"]["usage"]) == 4
    # fewer codebooks decode to a different signal (the residual levels are not used)
    assert a2["metrics"]["mel_distance"]["mean"] != a4["metrics"]["mel_distance"]["mean"]


def test_unreadable_files_are_counted_and_skipped(cli_run):
    _, out, data = cli_run
    for r in data["tokenizers"]:
        assert [(f["key"], f["stage"]) for f in r["failures"]] == [
            ("broken.png" if r["modality"] == "image" else "broken.wav", "read")]
        assert r["n_failed"] == 1
        assert "broken" not in {item["key"] for item in r["items"]}
    assert "1 of 5 files skipped" in (out / "recon.md").read_text()


def test_upstream_dac_file_gives_the_same_numbers_as_our_export(assets):
    cfg = ReconBenchConfig(tokenizers=[TokenizerSpec("dac", str(assets["dac_pth"]), n_q=3),
                                       TokenizerSpec("audio", str(assets["dac_st"]), n_q=3, label="ours")],
                           data=[str(assets["audio"])], limit=2, progress=False, examples=0)
    res = run_recon_bench(cfg)
    upstream, ours = res.rows
    # Same weights, same codes, same numbers. (The hashes differ: dac's own save records
    # quantizer_dropout as False, a training-only setting that is part of our config.)
    assert upstream.items == ours.items
    assert upstream.metrics["mel_distance"]["mean"] == ours.metrics["mel_distance"]["mean"]
    assert upstream.n_files == 2 and ours.label == "ours"
    assert "| ours |" in markdown(res)


def test_a_tokenizer_failing_on_one_item_costs_only_that_item():
    failures: list[Failure] = []

    def encode(batch: list[int]) -> list[int]:
        if 3 in batch:
            raise RuntimeError("cannot encode item 3")
        return [x * 10 for x in batch]

    out = _robust_map(encode, [1, 2, 3, 4], ["a", "b", "c", "d"], "encode", failures)
    assert out == [10, 20, None, 40]
    assert [(f.key, f.stage) for f in failures] == [("c", "encode")]
    assert "cannot encode item 3" in failures[0].error


def test_spec_parsing():
    s = parse_tokenizer_spec("dac:s3://bucket/w:16k.pth:n_q=3:label=DAC 3q")
    assert (s.kind, s.path, s.n_q, s.label) == ("dac", "s3://bucket/w:16k.pth", 3, "DAC 3q")
    assert parse_tokenizer_spec("image:runs/fsq/tokenizer") == TokenizerSpec("image", "runs/fsq/tokenizer")
    for bad in ("runs/fsq", "video:x", "image:x:n_q=2", "audio:x:n_q=two", "audio:x:n_q=0", "audio:"):
        with pytest.raises(ConfigError):
            parse_tokenizer_spec(bad)


def test_bad_inputs_are_clear_errors(assets, tmp_path, capsys):
    rc = main(["bench", "recon", "--tokenizer", f"image:{tmp_path / 'nope'}", "--data", str(assets["images"]),
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "nope" in capsys.readouterr().err
    rc = main(["bench", "recon", "--tokenizer", f"audio:{assets['dac_st']}", "--data", str(assets["images"]),
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "no audio files" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data path not found"):
        list_data_files([str(tmp_path / "missing")], (".png",))


def test_fid_is_computed_with_provenance_when_weights_are_installed(assets):
    from trimodal.metrics.fid_network import find_inception_weights

    try:
        find_inception_weights()
    except FileNotFoundError as err:
        pytest.skip(f"no FID Inception weights: {err}")
    cfg = ReconBenchConfig(tokenizers=[TokenizerSpec("image", str(assets["fsq"]))],
                           data=[str(assets["images"])], fid=True, progress=False, examples=1)
    res = run_recon_bench(cfg)
    fid = res.rows[0].set_metrics["fid"]
    assert fid["n_a"] == fid["n_b"] == N_GOOD and fid["fid"] > 0
    assert fid["extractor"]["feature_dim"] == 2048 and fid["extractor"]["weights_sha256"]
    md = markdown(res)
    assert f"FID over n = {N_GOOD} image pairs" in md and "noisy" in md


def test_codecs_at_different_sample_rates_share_one_page(assets, tmp_path):
    import dataclasses

    from trimodal.metrics.recon import write_html

    AudioTokenizer.from_config(dataclasses.replace(TINY_DAC, sample_rate=8000), seed=1).save(str(tmp_path / "8k.safetensors"))
    cfg = ReconBenchConfig(tokenizers=[TokenizerSpec("audio", str(assets["dac_st"]), n_q=1, label="16k"),
                                       TokenizerSpec("audio", str(tmp_path / "8k.safetensors"), n_q=1, label="8k")],
                           data=[str(assets["audio"])], limit=2, progress=False, examples=1)
    res = run_recon_bench(cfg)
    assert [r.config["sample_rate"] for r in res.rows] == [16000, 8000]
    assert res.rows[1].rates["tokens_per_second"] == pytest.approx(8000 / 320)
    (ex,) = res.examples
    assert ex.sample_rate == 16000 and set(ex.reconstructions) == {"16k", "8k"}
    assert abs(len(ex.reconstructions["8k"]) - len(ex.original)) <= 2  # shown at the page's rate
    assert write_html(res, tmp_path / "page").read_text().count("<audio") == 3
