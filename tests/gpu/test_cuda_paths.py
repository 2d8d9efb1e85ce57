"""The CUDA paths (bf16 autocast, pinned memory, device placement), run where a GPU is present.

Skipped on CPU-only machines (CI here): run `python -m pytest tests/gpu` on a GPU host. Each
test compares the device result with the CPU one on tiny models, so a wrong dtype, device or
non-blocking copy shows up as a mismatch rather than passing silently.
`TRIMODAL_TEST_DEVICE=cpu` runs the same code against the CPU (a dry run of the tests
themselves: nothing CUDA-specific is checked then).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

DEVICE = os.environ.get("TRIMODAL_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")

L = 24


def _train_config(out_dir: str, **over):
    from trimodal.config import from_dict
    from trimodal.mdm_core.config import TrainConfig

    base = {"model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_len": L},
            "data": {"batch_size": 4}, "optim": {"lr": 3e-3, "warmup_steps": 2},
            "out_dir": out_dir, "max_steps": 6, "log_every": 1, "eval_every": 0, "ckpt_every": 0,
            "progress": False, "device": DEVICE, "bf16": True, **over}
    return from_dict(TrainConfig, base)


def test_trainer_on_cuda_with_bf16_resumes_like_an_uninterrupted_run(tmp_path):
    from trimodal.mdm_core.data import InMemoryBatches, synthetic_corpus
    from trimodal.mdm_core.trainer import train
    from trimodal.packing.vocab import Vocab

    vocab = Vocab.from_sizes(32, 16, 8, 2)
    tokens = synthetic_corpus(vocab, 64, L, seed=0)
    full = train(_train_config(str(tmp_path / "a")), vocab, InMemoryBatches(tokens, 4))
    assert all(np.isfinite(full.losses)) and len(full.losses) == 6
    train(_train_config(str(tmp_path / "b"), max_steps=3, ckpt_every=3), vocab, InMemoryBatches(tokens, 4))
    rest = train(_train_config(str(tmp_path / "b"), ckpt_every=3), vocab, InMemoryBatches(tokens, 4))
    np.testing.assert_allclose(rest.losses, full.losses[3:], rtol=2e-3, atol=2e-3)


def test_image_tokenizer_codes_on_cuda_match_cpu():
    from trimodal.tokenizers.image.autoencoder import AutoencoderConfig
    from trimodal.tokenizers.image.quantizers import QuantizerConfig
    from trimodal.tokenizers.image.tokenizer import ImageTokenizer, ImageTokenizerConfig

    torch.manual_seed(0)
    tok = ImageTokenizer(ImageTokenizerConfig(
        image_size=32, autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=256))).eval()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    cpu = tok.encode_tensor(images).cpu()
    tok.to(DEVICE)
    gpu = tok.encode_tensor(images).cpu()
    # fp32 on both (cuDNN convolutions may use TF32): codes differ only at rounding boundaries
    assert (gpu == cpu).float().mean() > 0.95
    tok.use_bf16 = True
    bf16 = tok.encode_tensor(images).cpu()
    assert (bf16 == cpu).float().mean() > 0.8
    out = tok.decode_tensor(bf16.to(DEVICE))
    assert out.dtype == torch.float32 and out.shape == (4, 3, 32, 32) and out.abs().max() <= 1


def test_audio_tokenizer_codes_on_cuda_match_cpu():
    from trimodal.tokenizers.audio import AudioTokenizer, DACConfig

    tiny = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                     decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8)
    tok = AudioTokenizer.from_config(tiny, seed=0)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 7000, 2500)]
    cpu = tok.encode(waves, device="cpu")
    gpu = tok.encode(waves, device=DEVICE)
    for a, b in zip(cpu, gpu):
        assert a.shape == b.shape
        assert (a == b).mean() > 0.9  # residual VQ: a changed first code changes the rest
    back = tok.decode(gpu, lengths=[len(w) for w in waves], device=DEVICE)
    assert [len(x) for x in back] == [len(w) for w in waves]


def test_shard_loader_pins_batches_and_they_move_to_the_device(tmp_path):
    from trimodal.packing.layout import PackedSequence
    from trimodal.packing.vocab import Vocab
    from trimodal.shards import ShardDataset, WriterConfig, make_loader, write_shards

    vocab = Vocab.from_sizes(50, 20, 8, 2)
    rng = np.random.default_rng(0)
    seqs = []
    for i in range(20):
        tokens = rng.integers(0, 50, L).astype(np.int32)
        tokens[0], tokens[-1] = vocab.bos("text"), vocab.eos("text")
        seqs.append(PackedSequence(tokens, "text", [f"d{i}"], [("text", 0, L)], 0, "s"))
    url = str(tmp_path / "set")
    write_shards(seqs, url, vocab, L, "pack", WriterConfig(max_samples=8))
    for workers in (0, 2):
        loader = make_loader(ShardDataset([url], vocab, L), batch_size=4, num_workers=workers)
        batches = list(loader)
        assert sum(len(b) for b in batches) == 20
        for b in batches:
            assert b.tokens.is_pinned() or DEVICE == "cpu"  # pin_memory defaults to CUDA presence
            on_gpu = b.to(DEVICE, non_blocking=True)
            assert on_gpu.tokens.device.type == DEVICE
            assert torch.equal(on_gpu.tokens.cpu(), b.tokens)
            assert torch.equal(on_gpu.pad_mask.cpu(), b.tokens == vocab.pad)
