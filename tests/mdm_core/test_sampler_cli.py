"""`trimodal sample` end to end on a tiny untrained checkpoint and tiny saved tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from trimodal.cli import main
from trimodal.config import to_dict
from trimodal.mdm_core import checkpoint as ckpt
from trimodal.mdm_core.config import ModelConfig, TrainConfig
from trimodal.mdm_core.sampler import load_model, model_logits_fn
from trimodal.mdm_core.trainer import build_model
from trimodal.packing.vocab import Vocab, VocabError
from trimodal.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from trimodal.tokenizers.image.autoencoder import AutoencoderConfig
from trimodal.tokenizers.image.quantizers import QuantizerConfig
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

dac = pytest.importorskip("dac")
from trimodal.tokenizers.audio import AudioTokenizer, DACConfig  # noqa: E402

TINY_DAC = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                     decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=64, codebook_dim=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sample_cli")
    torch.manual_seed(0)
    img = ImageTokenizer(ImageTokenizerConfig(
        image_size=16, autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=256)))
    img.save(str(root / "imgtok"))
    txt = TextTokenizer.train([f"caption number {i} blue square" for i in range(50)],
                              config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))
    txt.save(str(root / "text.model"))
    aud = AudioTokenizer.from_config(TINY_DAC, n_q=2)
    aud.save(str(root / "audio.safetensors"))
    vocab = Vocab.from_sizes(txt.vocab_size, img.vocab_size, aud.vocab_size, 2)
    cfg = TrainConfig(model=ModelConfig(d_model=32, n_layers=1, n_heads=2, max_len=128))
    model = build_model(cfg, vocab)
    run_dir = str(root / "run")
    vocab.save(str(root / "vocab.json"))
    Path(run_dir).mkdir()
    vocab.save(run_dir + "/vocab.json")
    ckpt.save_main_state(run_dir, 5, model.state_dict(), {}, to_dict(cfg), vocab.hash)
    ckpt.mark_latest(run_dir, 5)
    return {"root": str(root), "run": run_dir, "img": str(root / "imgtok"), "txt": str(root / "text.model"),
            "aud": str(root / "audio.safetensors")}


def test_load_model_restores_weights_and_checks_the_vocabulary(run):
    model, vocab = load_model(run["run"])
    again, _ = load_model(ckpt.step_dir(run["run"], 5), vocab)
    x = torch.randint(0, vocab.size, (2, 9))
    pad = torch.zeros_like(x, dtype=torch.bool)
    assert torch.equal(model_logits_fn(model, vocab)(x, pad), model_logits_fn(again, vocab)(x, pad))
    other = Vocab.from_sizes(vocab.spec.text_size + 1, 256, 64, 2)
    with pytest.raises(VocabError, match="made with vocabulary"):
        load_model(run["run"], other)


def test_cli_t2i_writes_pngs(run, tmp_path, capsys):
    out = str(tmp_path / "img.png")
    rc = main(["sample", "t2i", "--checkpoint", run["run"], "--text-tokenizer", run["txt"],
               "--image-tokenizer", run["img"], "--prompt", "blue square", "--prompt", "caption 3",
               "--out", out, "--steps", "4", "--cfg", "1.5"])
    assert rc == 0
    for i in range(2):
        im = Image.open(tmp_path / f"img_{i}.png")
        assert im.size == (16, 16) and im.mode == "RGB"


def test_cli_t2s_writes_wav_and_i2t_s2t_text_print(run, tmp_path, capsys):
    wav = str(tmp_path / "speech.wav")
    rc = main(["sample", "t2s", "--checkpoint", run["run"], "--text-tokenizer", run["txt"],
               "--audio-tokenizer", run["aud"], "--prompt", "caption one", "--seconds", "0.1",
               "--out", wav, "--steps", "3"])
    assert rc == 0
    data, sr = sf.read(wav)
    assert sr == 16000 and data.ndim == 1 and data.size == 5 * 320  # ceil(1600/320) frames
    img_file = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(img_file)
    capsys.readouterr()
    rc = main(["sample", "i2t", "--checkpoint", run["run"], "--text-tokenizer", run["txt"],
               "--image-tokenizer", run["img"], "--image", str(img_file), "--length", "5"])
    assert rc == 0 and capsys.readouterr().out.strip() != ""
    rc = main(["sample", "s2t", "--checkpoint", run["run"], "--text-tokenizer", run["txt"],
               "--audio-tokenizer", run["aud"], "--audio", wav, "--length", "4",
               "--out", str(tmp_path / "t.txt")])
    assert rc == 0 and (tmp_path / "t.txt").read_text().strip() != ""


def test_cli_text_and_clear_errors(run, tmp_path, capsys):
    rc = main(["sample", "text", "--checkpoint", run["run"], "--text-tokenizer", run["txt"],
               "--prompt", "caption number", "--length", "6", "--block-length", "3"])
    assert rc == 0 and capsys.readouterr().out.strip() != ""
    rc = main(["sample", "text", "--checkpoint", run["run"], "--text-tokenizer", run["txt"],
               "--prompt", "x", "--temperature", "-1"])
    assert rc == 2 and "temperature" in capsys.readouterr().err
    rc = main(["sample", "t2i", "--checkpoint", run["run"], "--text-tokenizer", run["txt"], "--prompt", "x"])
    assert rc == 2 and "--image-tokenizer" in capsys.readouterr().err
    rc = main(["sample", "text", "--checkpoint", str(tmp_path / "nope"), "--text-tokenizer", run["txt"],
               "--prompt", "x"])
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_bf16_autocast_sampling_stays_in_range(run):
    from trimodal.mdm_core.sampler import generate, media_prompt
    from trimodal.mdm_core.sampling_config import SamplingConfig

    model, vocab = load_model(run["run"])
    prompt = media_prompt(vocab, [np.array([1, 2, 3])], "audio", 8, n_q=2)
    out = generate(model_logits_fn(model, vocab), vocab, prompt,
                   SamplingConfig(steps=3, temperature=0.5, bf16=True, cfg_scale=1.0))
    s, e = prompt.spans[0]
    assert vocab.audio_to_local(out[0, s:e].numpy(), 2).shape == (2, 4)
    assert torch.equal(out[~prompt.target], prompt.tokens[~prompt.target])
