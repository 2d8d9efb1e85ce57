"""No loader unpickles untrusted data: a malicious file is refused and its payload never runs.

The payload of every malicious file below creates a marker file when unpickled. Each loader
must raise a clear error naming the file, and the marker must not exist afterwards. The image
tokenizer and DAC `.pth` loaders have their own tests (tests/tokenizers); this module covers
the other loaders and scans `src/` so that a new unsafe call cannot slip in.
"""

from __future__ import annotations

import ast
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import trimodal
from trimodal.config import ConfigError


class Payload:
    """Unpickling this object opens (creates) `marker` for writing."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_torch_file(path: Path, marker: Path, **extra) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "step": 1, **extra, "evil": Payload(marker)}, path)


def evil_npy_bytes(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([Payload(marker), 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


def test_payload_really_runs_when_unpickled(tmp_path):
    """The payload is live: loading it the unsafe way does create the marker."""
    marker = tmp_path / "marker"
    evil_torch_file(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    np.load(io.BytesIO(evil_npy_bytes(marker)), allow_pickle=True)
    assert marker.exists()


# --- training resume checkpoints -------------------------------------------------------------
def test_image_trainer_resume_refuses_pickle(tmp_path):
    from trimodal.tokenizers.image import AutoencoderConfig, ImageTokenizerConfig, QuantizerConfig
    from trimodal.tokenizers.image.train import ImageTrainConfig, train

    marker = tmp_path / "marker"
    out = tmp_path / "run"
    out.mkdir()
    evil_torch_file(out / "checkpoint.pt", marker)
    cfg = ImageTrainConfig(
        model=ImageTokenizerConfig(image_size=16, autoencoder=AutoencoderConfig(
            downsample_factor=4, base_channels=8, norm_groups=4),
            quantizer=QuantizerConfig(kind="fsq", codebook_size=256)),
        batch_size=2, steps=2, device="cpu")
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: refused or unreadable checkpoint"):
        train(cfg, images, out=str(out), resume=True, progress=False)
    assert not marker.exists()


def test_audio_trainer_resume_refuses_pickle(tmp_path):
    pytest.importorskip("dac")
    from trimodal.tokenizers.audio import DACConfig
    from trimodal.tokenizers.audio_train import AudioTrainConfig, train_audio_tokenizer

    marker = tmp_path / "marker"
    out = tmp_path / "run"
    out.mkdir()
    evil_torch_file(out / "checkpoint.pt", marker)
    tiny = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                     decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8)
    cfg = AudioTrainConfig(model=tiny, steps=2, batch_size=2, segment_seconds=0.2, device="cpu")
    clips = [np.zeros(8000, np.float32) + 0.1]
    with pytest.raises(ConfigError, match=r"checkpoint\.pt: refused or unreadable checkpoint"):
        train_audio_tokenizer(cfg, str(out), resume=True, progress=False, clips=clips)
    assert not marker.exists()


# --- MDM checkpoints -------------------------------------------------------------------------
@pytest.mark.parametrize("evil_file", ["state.pt", "rank_0.pt"])
def test_mdm_checkpoint_refuses_pickle(tmp_path, evil_file):
    from trimodal.mdm_core.checkpoint import (
        CheckpointError, load_checkpoint, load_model_weights, save_main_state, save_rank_state,
    )

    marker = tmp_path / "marker"
    out = str(tmp_path / "ckpt")
    save_main_state(out, 5, {"w": torch.zeros(2)}, {}, {"d": 1}, "vocabhash")
    save_rank_state(out, 5, 0, {"pos": 3}, {"torch": torch.get_rng_state()})
    step = tmp_path / "ckpt" / "step_00000005"
    assert load_checkpoint(str(step), 0, "vocabhash")["data"] == {"pos": 3}  # the good one loads
    evil_torch_file(step / evil_file, marker, vocab_hash="vocabhash", config={})
    with pytest.raises(CheckpointError, match=f"{evil_file}: cannot load as a weights-only checkpoint"):
        load_checkpoint(str(step), 0, "vocabhash")
    if evil_file == "state.pt":
        with pytest.raises(CheckpointError, match="weights-only"):
            load_model_weights(str(step))
    assert not marker.exists()


# --- shards ----------------------------------------------------------------------------------
def _shard_set(url: str):
    from trimodal.packing.layout import PackedSequence
    from trimodal.packing.vocab import Vocab
    from trimodal.shards.writer import WriterConfig, write_shards

    vocab = Vocab.from_sizes(text_size=50, image_size=0, audio_codebook_size=4, audio_codebooks=1)
    L = 12
    seqs = []
    for i in range(6):
        tokens = np.full(L, vocab.pad, np.int32)
        tokens[:5] = [vocab.task("text"), vocab.bos("text"), i, i + 1, vocab.eos("text")]
        seqs.append(PackedSequence(tokens=tokens, task="text", keys=[f"doc{i}"],
                                   spans=[("text", 1, 5)], pad_count=L - 5, source="s"))
    write_shards(seqs, url, vocab, L, "pad", WriterConfig(max_samples=3))
    return vocab


def _replace_member(tar_path: Path, suffix: str, data: bytes) -> str:
    """Rewrite a tar with the first member ending in `suffix` replaced by `data`; returns its name."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    name = next(m.name for m, _ in members if m.name.endswith(suffix))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m, payload in members:
            payload = data if m.name == name else payload
            m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload))
    tar_path.write_bytes(buf.getvalue())
    return name


def test_shard_with_pickled_tokens_npy_is_refused(tmp_path, capsys):
    from trimodal.cli import main
    from trimodal.shards.reader import ShardDataset

    marker = tmp_path / "marker"
    url = str(tmp_path / "set")
    vocab = _shard_set(url)
    shard = sorted((tmp_path / "set").glob("*.tar"))[0]
    name = _replace_member(shard, ".tokens.npy", evil_npy_bytes(marker))
    bad_key = name.removesuffix(".tokens.npy")

    keys = [s.key for s in ShardDataset([url], vocab)]
    assert len(keys) == 5 and bad_key not in keys  # the one bad sample skipped, the rest read
    assert main(["shards", "verify", url]) == 1
    out = capsys.readouterr().out
    assert f"{shard.name}: BAD" in out
    assert f"sample {bad_key}: tokens.npy does not load" in out and "allow_pickle=False" in out
    assert not marker.exists()


# --- study cache -----------------------------------------------------------------------------
def test_study_cache_with_object_arrays_is_refused(tmp_path):
    from dataclasses import asdict

    from trimodal.study.data import StudyDataConfig, build_study_data

    marker = tmp_path / "marker"
    cfg = StudyDataConfig()
    (tmp_path / "pools.json").write_text(json.dumps({"config": asdict(cfg), "vocab": {}}))
    arrays = {f"{split}_{t}": np.array([Payload(marker)], dtype=object)
              for split in ("train", "eval") for t in ("text", "image_text", "audio_text")}
    with open(tmp_path / "pools.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"pools\.npz: refused or unreadable study cache"):
        build_study_data(tmp_path, cfg)
    assert not marker.exists()


# --- tokenizer files that are pickles in disguise ---------------------------------------------
def test_text_tokenizer_refuses_a_pickle(tmp_path):
    from trimodal.tokenizers.text import TextTokenizer

    marker = tmp_path / "marker"
    evil_torch_file(tmp_path / "text.model", marker)
    with pytest.raises((ConfigError, ValueError), match="text.model"):
        TextTokenizer.load(str(tmp_path / "text.model"))
    assert not marker.exists()


def test_audio_tokenizer_refuses_a_pickle_named_safetensors(tmp_path):
    pytest.importorskip("dac")
    from trimodal.tokenizers.audio import AudioTokenizer

    marker = tmp_path / "marker"
    evil_torch_file(tmp_path / "codec.safetensors", marker)
    with pytest.raises(ConfigError, match="codec.safetensors"):
        AudioTokenizer.load(str(tmp_path / "codec.safetensors"))
    assert not marker.exists()


def test_image_tokenizer_folder_with_pickled_weights_is_refused(tmp_path):
    """A tokenizer folder whose weight file was swapped for a pickle."""
    from trimodal.tokenizers.image import (
        AutoencoderConfig, ImageTokenizer, ImageTokenizerConfig, QuantizerConfig,
    )

    marker = tmp_path / "marker"
    tok = ImageTokenizer(ImageTokenizerConfig(
        image_size=16, autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=256)))
    tok.save(str(tmp_path / "tok"))
    weights = [p for p in (tmp_path / "tok").iterdir() if p.suffix in (".safetensors", ".pt", ".pth")]
    assert weights, list((tmp_path / "tok").iterdir())
    for p in weights:
        evil_torch_file(p, marker)
    with pytest.raises((ConfigError, ValueError, RuntimeError)):
        ImageTokenizer.load(str(tmp_path / "tok"))
    assert not marker.exists()


# --- the whole source tree -------------------------------------------------------------------
SRC = Path(trimodal.__file__).parent


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str, filename: str) -> list[str]:
    """Calls that could unpickle or execute untrusted data, as 'file:line: what'."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{filename}:{node.lineno}"
        if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
            problems.append(f"{where}: {func.id}()")
        if not isinstance(func, ast.Attribute):
            if _is_const(_keyword(node, "trust_remote_code"), True):
                problems.append(f"{where}: trust_remote_code=True")
            continue
        owner = func.value.id if isinstance(func.value, ast.Name) else ""
        if owner == "torch" and func.attr == "load" and not _is_const(_keyword(node, "weights_only"), True):
            problems.append(f"{where}: torch.load without weights_only=True")
        if owner in ("np", "numpy") and func.attr == "load" and not _is_const(_keyword(node, "allow_pickle"), False):
            problems.append(f"{where}: np.load without allow_pickle=False")
        if owner in ("pickle", "cPickle", "dill", "joblib", "marshal") and func.attr in ("load", "loads"):
            problems.append(f"{where}: {owner}.{func.attr}")
        if owner == "yaml" and func.attr in ("load", "unsafe_load", "full_load", "load_all"):
            problems.append(f"{where}: yaml.{func.attr} (use yaml.safe_load)")
        if owner == "pd" and func.attr == "read_pickle":
            problems.append(f"{where}: pandas.read_pickle")
        if _is_const(_keyword(node, "trust_remote_code"), True):
            problems.append(f"{where}: trust_remote_code=True")
    return problems


def test_scanner_catches_unsafe_calls():
    bad = ("torch.load(f)\ntorch.load(f, weights_only=False)\nnp.load(p)\npickle.loads(b)\n"
           "yaml.load(s)\neval('1')\nload_dataset('x', trust_remote_code=True)\n")
    assert len(unsafe_calls(bad, "bad.py")) == 7
    good = "torch.load(f, weights_only=True)\nnp.load(p, allow_pickle=False)\nyaml.safe_load(s)\n"
    assert unsafe_calls(good, "good.py") == []


def test_no_unsafe_loading_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files for p in unsafe_calls(f.read_text(), str(f.relative_to(SRC)))]
    assert problems == []
