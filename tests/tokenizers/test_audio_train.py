"""DAC training: loss goes down, exact resume from a checkpoint, exported tokenizer loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from trimodal.config import ConfigError
from trimodal.tokenizers.audio import AudioTokenizer, DACConfig
from trimodal.tokenizers.audio_train import AudioTrainConfig, load_training_audio, make_batch, train_audio_tokenizer

pytest.importorskip("dac")

TINY = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                 decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8)


def clips() -> list[np.ndarray]:
    t = np.arange(8000) / 16000
    return [(0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)))
            .astype(np.float32) for i in range(6)]


def cfg(steps: int, **kw) -> AudioTrainConfig:
    return AudioTrainConfig(model=TINY, steps=steps, batch_size=3, segment_seconds=0.2, log_every=1,
                            checkpoint_every=3, export_n_q=2, **kw)


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_training_improves_and_resume_is_exact(tmp_path: Path):
    data = clips()
    straight = train_audio_tokenizer(cfg(6), str(tmp_path / "a"), progress=False, clips=data)
    log_a = log_lines(tmp_path / "a")
    assert [e["step"] for e in log_a] == list(range(1, 7))
    assert log_a[-1]["loss/mel"] < log_a[0]["loss/mel"]

    train_audio_tokenizer(cfg(3), str(tmp_path / "b"), progress=False, clips=data)
    # a killed run may have logged past its last checkpoint; resume must drop those lines
    with (tmp_path / "b" / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    resumed = train_audio_tokenizer(cfg(6), str(tmp_path / "b"), progress=False, clips=data)
    for (k, v), (k2, v2) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert straight.hash == resumed.hash
    strip = lambda log: [{k: v for k, v in e.items() if k != "seconds"} for e in log]  # noqa: E731
    assert strip(log_lines(tmp_path / "b")) == strip(log_a)

    exported = AudioTokenizer.load(str(tmp_path / "a" / "tokenizer.safetensors"))
    assert exported.hash == straight.hash and exported.n_q == 2
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6


def test_adversarial_step_runs(tmp_path: Path):
    tok = train_audio_tokenizer(cfg(1, adversarial=True), str(tmp_path / "g"), progress=False, clips=clips())
    entry = log_lines(tmp_path / "g")[0]
    assert {"loss/adv_gen", "loss/adv_feat", "loss/discriminator"} <= set(entry)
    assert all(np.isfinite(v) for v in entry.values())
    assert tok.n_q == 2


def test_batches_are_a_function_of_seed_and_step():
    data = clips()
    a = make_batch(data, 4, 3200, seed=3, step=7)
    assert torch.equal(a, make_batch(data, 4, 3200, seed=3, step=7))
    assert not torch.equal(a, make_batch(data, 4, 3200, seed=3, step=8))


def test_training_audio_loading(tmp_path: Path):
    sf.write(tmp_path / "a.wav", np.zeros((22050, 2), np.float32) + 0.1, 44100)
    (tmp_path / "b.wav").write_bytes(b"junk" * 100)
    (tmp_path / "c.txt").write_text("ignored")
    loaded = load_training_audio([str(tmp_path)], 16000)
    assert len(loaded) == 1 and loaded[0].shape == (8000,)
    with pytest.raises(ConfigError, match="not found"):
        load_training_audio([str(tmp_path / "nope")], 16000)
    with pytest.raises(ConfigError, match="export_n_q"):
        cfg(1, ).__class__(model=TINY, export_n_q=9)
