"""Every reader, every format, through the real CLI, on a corpus of hostile files.

For each (modality, format) the job must: finish (exit 0), keep every good item exactly once,
report the exact skip count per reason and the skipped keys per reason, and write nothing
outside `--out` (tar members named `../../x` or `/x`, keys that look like paths, links).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hostile_files import CASES, HostileCorpus, build, png_bomb

from trimodal.cli import main
from trimodal.packing.table import read_table

pytest.importorskip("dac")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, list[str]]:
    """Tiny saved tokenizers: CLI arguments per modality."""
    from trimodal.tokenizers.audio import AudioTokenizer, DACConfig
    from trimodal.tokenizers.image import (
        AutoencoderConfig, ImageTokenizer, ImageTokenizerConfig, QuantizerConfig,
    )
    from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

    root = tmp_path_factory.mktemp("hostile_tokenizers")
    torch.manual_seed(0)
    img = ImageTokenizer(ImageTokenizerConfig(
        image_size=16, autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=256)))
    img.save(str(root / "imgtok"))
    txt = TextTokenizer.train([f"document {i} says a red circle on the left" for i in range(60)],
                              config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))
    txt.save(str(root / "text.model"))
    tiny = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                     decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8)
    AudioTokenizer.from_config(tiny, n_q=2, seed=1).save(str(root / "audio.safetensors"))
    text = ["--text-tokenizer", str(root / "text.model")]
    return {"text": text,
            "image": text + ["--image-tokenizer", str(root / "imgtok"), "--image-size", "16"],
            "audio": text + ["--audio-tokenizer", str(root / "audio.safetensors")]}


def tree(root: Path) -> set[str]:
    """Every path below root (files, links, folders), relative, without following links."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def run_cli(corpus: HostileCorpus, tok_args: list[str], out: Path, workers: int = 0) -> int:
    args = ["tokenize", corpus.modality, "--corpus", str(corpus.path), "--format", corpus.fmt,
            "--out", str(out), "--workers", str(workers), "--batch-size", "4", "--no-progress",
            "--device", "cpu", *tok_args, *corpus.args]
    return main(args)


def check_outcome(corpus: HostileCorpus, out: Path) -> None:
    report = json.loads((out / "report.json").read_text())
    what = {k: w for k, w, _ in corpus.items}
    assert report["skipped"] == dict(sorted(corpus.skipped.items())), corpus.items
    assert report["samples_ok"] == len(corpus.kept)
    keys = Counter(r.key for p in sorted((out / "tables").glob("*.parquet")) for r in read_table(str(p)))
    missing = set(corpus.kept) - set(keys)
    assert not missing, f"good items lost: {[(k, what[k]) for k in missing]}"
    assert set(keys) == set(corpus.kept), f"unexpected rows: {set(keys) - set(corpus.kept)}"
    assert all(n == 1 for n in keys.values()), f"rows more than once: {[k for k, n in keys.items() if n > 1]}"
    # every skipped item is named, under its reason, in the unit stats files
    listed: dict[str, list[str]] = {}
    for p in (out / "tables").glob("*.stats.json"):
        for reason, entry in json.loads(p.read_text())["skipped"].items():
            assert entry["count"] == len(entry["keys"])
            listed.setdefault(reason, []).extend(entry["keys"])
    assert {r: sorted(k) for r, k in listed.items()} == corpus.skip_keys


@pytest.mark.timeout(180)  # a reader that opens a FIFO would block forever
@pytest.mark.parametrize(("modality", "fmt"), CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_hostile_corpus_through_cli(modality, fmt, tokenizers, tmp_path, monkeypatch):
    corpus = build(tmp_path / "corpora", modality, fmt)
    # Run from a deep folder inside tmp_path: a relative `../../x` write would land in the tree.
    cwd = tmp_path / "a" / "b" / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    out = tmp_path / "a" / "b" / "out"
    absolute = [Path("/tmp/abs_evil.png"), Path("/abs/evil.flac")]
    existed = {p for p in absolute if p.exists()}
    before = tree(tmp_path)

    assert run_cli(corpus, tokenizers[modality], out) == 0

    created = tree(tmp_path) - before
    outside = sorted(p for p in created if not p.startswith(os.path.join("a", "b", "out")))
    assert outside == [], f"written outside --out: {outside}"
    assert {p for p in absolute if p.exists()} == existed
    check_outcome(corpus, out)

    # A rerun over the same hostile corpus changes nothing (every unit is done).
    snapshot = {p: (out / p).stat().st_mtime_ns for p in tree(out) if p.startswith("tables")}
    assert run_cli(corpus, tokenizers[modality], out) == 0
    assert {p: (out / p).stat().st_mtime_ns for p in tree(out) if p.startswith("tables")} == snapshot
    check_outcome(corpus, out)


@pytest.mark.slow
@pytest.mark.parametrize(("modality", "fmt"), [("image", "wds"), ("audio", "folder"), ("text", "jsonl")])
def test_hostile_corpus_with_worker_processes(modality, fmt, tokenizers, tmp_path):
    """Same outcome when decoding runs in DataLoader worker processes."""
    corpus = build(tmp_path / "corpora", modality, fmt)
    assert run_cli(corpus, tokenizers[modality], tmp_path / "out", workers=2) == 0
    check_outcome(corpus, tmp_path / "out")


BOMB_PROBE = """
import resource, sys
from trimodal.jobs.image import open_image
from trimodal.jobs.protocol import SkipSample
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        open_image(data, path)
        reason = "decoded"
    except SkipSample as s:
        reason = s.reason
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(reason, (after - before) // 1024)
"""


def test_bombs_are_refused_from_the_header(tmp_path):
    """PNGs claiming 9000^2 and 20000^2 pixels are refused before their pixels are allocated.

    Decoding them would take 81 MB and 400 MB (greyscale); the probe process's peak memory must
    not grow by more than a few MB while refusing them. One process for both: importing torch
    costs seconds. The small one goes first so the peak it could leave cannot hide the big one.
    """
    paths = []
    for side in (9000, 20000):
        paths.append(tmp_path / f"bomb{side}.png")
        paths[-1].write_bytes(png_bomb(side, side))
    res = subprocess.run([sys.executable, "-c", BOMB_PROBE, *map(str, paths)], capture_output=True,
                         text=True, check=True)
    lines = [line.split() for line in res.stdout.splitlines()]
    assert [reason for reason, _ in lines] == ["image_too_large", "image_too_large"]
    assert all(int(grew_mb) < 20 for _, grew_mb in lines), lines
