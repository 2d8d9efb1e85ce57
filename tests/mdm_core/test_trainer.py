import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trimodal.mdm_core.checkpoint import latest_checkpoint, load_model_weights
from trimodal.mdm_core.data import InMemoryBatches
from trimodal.mdm_core.trainer import train
from trimodal.packing.vocab import Vocab, VocabError

from .train_helpers import tiny_config, tiny_tokens, tiny_vocab

HERE = Path(__file__).parent


class CrashAfter:
    """Wraps a batch source and raises after n batches, like a killed job."""

    def __init__(self, inner: InMemoryBatches, n: int):
        self.inner, self.n = inner, n

    def __iter__(self):
        for i, batch in enumerate(self.inner):
            if i == self.n:
                raise KeyboardInterrupt("simulated crash")
            yield batch

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def _params(out_dir: str) -> dict:
    state, _, _ = load_model_weights(latest_checkpoint(out_dir))
    return state


def test_resume_equals_uninterrupted_run(tmp_path):
    vocab, tokens = tiny_vocab(), tiny_tokens()
    full = train(tiny_config(str(tmp_path / "a"), grad_accum=2), vocab, InMemoryBatches(tokens, 4))

    cfg = tiny_config(str(tmp_path / "b"), grad_accum=2, ckpt_every=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, vocab, CrashAfter(InMemoryBatches(tokens, 4), n=3 * 2 + 1))
    assert latest_checkpoint(cfg.out_dir).endswith("step_00000003")
    resumed = train(tiny_config(str(tmp_path / "b"), grad_accum=2, ckpt_every=3), vocab,
                    InMemoryBatches(tokens, 4))
    assert resumed.step == 6
    np.testing.assert_allclose(resumed.losses, full.losses[3:], rtol=1e-6)
    a, b = _params(str(tmp_path / "a")), _params(str(tmp_path / "b"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    # Run dir holds config, vocab, resolved hyperparameters and a JSONL log.
    out = tmp_path / "b"
    assert {"config.yaml", "vocab.json", "hparams.json", "metrics.jsonl"} <= set(os.listdir(out))
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6


def test_refuses_checkpoint_of_another_vocabulary(tmp_path):
    cfg = tiny_config(str(tmp_path), max_steps=1)
    train(cfg, tiny_vocab(), InMemoryBatches(tiny_tokens(), 4))
    other = Vocab.from_sizes(32, 16, 8, 2, audio_shared=True)
    with pytest.raises(VocabError, match="refusing"):
        train(tiny_config(str(tmp_path), max_steps=2, **{"model.vocab_size": 0}), other,
              InMemoryBatches(tiny_tokens(), 4))


def _torchrun_two(out_dir: Path, *args: str) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "train_helpers.py"), str(out_dir), *args],
        env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out_dir / "losses.json").read_text())


def test_torchrun_two_processes_match_gradient_accumulation(tmp_path):
    ddp_dir = tmp_path / "ddp"
    ddp_losses = _torchrun_two(ddp_dir)

    single = train(tiny_config(str(tmp_path / "one"), grad_accum=2, **{"masking.anti_masking": True}),
                   tiny_vocab(), InMemoryBatches(tiny_tokens(), 4))
    np.testing.assert_allclose(ddp_losses, single.losses, rtol=1e-4, atol=1e-5)
    a, b = _params(str(ddp_dir)), _params(str(tmp_path / "one"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_slurm_variables_alone_launch_the_same_run(tmp_path):
    """Two plain processes with only SLURM's variables (what `srun` sets) + MASTER_ADDR/PORT
    train exactly like the torchrun run (and one process accumulating)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "slurm"
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [subprocess.Popen([sys.executable, str(HERE / "train_helpers.py"), str(out)],
                              env={**base, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE),
                                   "SLURM_PROCID": str(r), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(r),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
    single = train(tiny_config(str(tmp_path / "one"), grad_accum=2, **{"masking.anti_masking": True}),
                   tiny_vocab(), InMemoryBatches(tiny_tokens(), 4))
    np.testing.assert_allclose(json.loads((out / "losses.json").read_text()), single.losses, rtol=1e-4, atol=1e-5)


def test_several_processes_without_master_addr_are_refused(tmp_path, monkeypatch):
    from trimodal.config import ConfigError
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        train(tiny_config(str(tmp_path)), tiny_vocab(), InMemoryBatches(tiny_tokens(), 4))


def test_torchrun_fsdp_matches_one_process_and_resumes_exactly(tmp_path):
    """FSDP2 over 2 ranks x 2 micro-batches = one process accumulating 4, including across a
    checkpoint: steps 4-6 run in a second `train` that resumes the sharded optimizer state."""
    fsdp_dir = tmp_path / "fsdp"
    fsdp_losses = _torchrun_two(fsdp_dir, "fsdp")
    single = train(tiny_config(str(tmp_path / "one"), grad_accum=4), tiny_vocab(),
                   InMemoryBatches(tiny_tokens(), 4))
    assert len(fsdp_losses) == 6
    np.testing.assert_allclose(fsdp_losses, single.losses, rtol=1e-4, atol=1e-5)
    a, b = _params(str(fsdp_dir)), _params(str(tmp_path / "one"))
    assert a.keys() == b.keys()  # full tensors under the plain model's names (sampler loads them)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    # An FSDP checkpoint's optimizer state is keyed by name: a DDP/single run refuses it.
    from trimodal.mdm_core.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="parallel=fsdp"):
        train(tiny_config(str(fsdp_dir), max_steps=7), tiny_vocab(), InMemoryBatches(tiny_tokens(), 4))


def _write_tiny_shards(url: str, vocab: Vocab, tokens: np.ndarray) -> None:
    from trimodal.packing.layout import PackedSequence
    from trimodal.shards import WriterConfig, write_shards

    names = {vocab.task(t): t for t in vocab.spec.tasks}
    seqs = [PackedSequence(tokens=row.astype(np.int32), task=names[int(row[0])], keys=[f"syn/{i}"],
                           spans=[], pad_count=int((row == vocab.pad).sum()), source="syn")
            for i, row in enumerate(tokens)]
    write_shards(seqs, url, vocab, tokens.shape[1], "pad", WriterConfig(max_samples=3))


def test_overfits_tiny_shard_set_below_unigram_entropy(tmp_path):
    from trimodal.mdm_core.data import shard_loader

    vocab = tiny_vocab()
    tokens = tiny_tokens(n=8, seed=3)
    shards = str(tmp_path / "shards")
    _write_tiny_shards(shards, vocab, tokens)
    # Unigram entropy of the maskable tokens (nats): what a model that ignores context gets.
    maskable = tokens[(tokens != vocab.pad) & (vocab.modality_of(tokens) >= 0)]
    _, counts = np.unique(maskable, return_counts=True)
    p = counts / counts.sum()
    unigram = float(-(p * np.log(p)).sum())

    cfg = tiny_config(str(tmp_path / "run"), max_steps=400, log_every=100, eval_every=400,
                      eval_batches=8, **{"data.batch_size": 8, "model.d_model": 48,
                                         "optim.lr": 1e-2, "optim.warmup_steps": 10,
                                         "optim.weight_decay": 0.0})
    data = shard_loader(shards, vocab, batch_size=8, seed=0)
    result = train(cfg, vocab, data, eval_data=lambda: shard_loader(shards, vocab, 8, train=False))
    assert result.losses[-1] < result.losses[0]
    final = result.eval[-1]["eval/elbo"]
    print(f"overfit: eval ELBO {final:.3f} nats vs unigram entropy {unigram:.3f}")
    assert final < 0.5 * unigram, (final, unigram)
    # The reader's position went into the checkpoint (exact resume of the shard stream).
    from trimodal.mdm_core.checkpoint import load_checkpoint
    state = load_checkpoint(latest_checkpoint(cfg.out_dir), 0, vocab.hash)
    assert state["data"]["batch_size"] == 8


def test_cli_train_from_yaml_with_overrides(tmp_path):
    import yaml

    from trimodal.cli import main

    vocab = tiny_vocab()
    shards = str(tmp_path / "shards")
    _write_tiny_shards(shards, vocab, tiny_tokens(n=8))
    cfg = {"model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 32},
           "data": {"train": shards, "eval": shards, "batch_size": 4, "num_workers": 0},
           "out_dir": str(tmp_path / "run"), "max_steps": 50, "progress": False, "device": "cpu"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["train", "--config", str(tmp_path / "cfg.yaml"), "max_steps=2", "eval_every=2",
               "masking.anti_masking=true", "optim.betas=[0.9, 0.99]"])
    assert rc == 0
    assert latest_checkpoint(str(tmp_path / "run")).endswith("step_00000002")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["masking"]["anti_masking"] is True and saved["optim"]["betas"] == [0.9, 0.99]
    assert any("eval/elbo" in line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "optim.lrr=1"]) == 2


def test_cli_train_reports_a_damaged_checkpoint(tmp_path, capsys):
    import yaml

    from trimodal.cli import main

    vocab = tiny_vocab()
    shards = str(tmp_path / "shards")
    _write_tiny_shards(shards, vocab, tiny_tokens(n=8))
    cfg = {"model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 32},
           "data": {"train": shards, "batch_size": 4, "num_workers": 0},
           "out_dir": str(tmp_path / "run"), "max_steps": 1, "progress": False, "device": "cpu"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 0
    state = Path(latest_checkpoint(str(tmp_path / "run"))) / "state.pt"
    state.write_bytes(b"not a checkpoint")
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "max_steps=2"]) == 2
    err = capsys.readouterr().err
    assert "trimodal train:" in err and "state.pt" in err
