"""`trimodal tokenize image|text` end to end on tiny saved tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jobs_toy import add_tar, image_bytes

from trimodal.cli import main
from trimodal.packing.table import read_table
from trimodal.tokenizers.image import (
    AutoencoderConfig, ImageTokenizer, ImageTokenizerConfig, QuantizerConfig,
)
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig


def save_tokenizers(tmp_path: Path) -> tuple[str, str]:
    torch.manual_seed(0)
    img = ImageTokenizer(ImageTokenizerConfig(
        image_size=16, autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=8, norm_groups=4),
        quantizer=QuantizerConfig(kind="fsq", codebook_size=256)))
    img_path = str(tmp_path / "imgtok")
    img.save(img_path)
    txt = TextTokenizer.train([f"caption number {i} blue square" for i in range(50)],
                              config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))
    txt_path = str(tmp_path / "text.model")
    txt.save(txt_path)
    return img_path, txt_path


def test_tokenize_image_and_text_cli(tmp_path: Path, capsys, caplog):
    caplog.set_level("INFO", logger="trimodal")
    img_path, txt_path = save_tokenizers(tmp_path)
    (tmp_path / "wds").mkdir()
    for s in range(2):
        add_tar(tmp_path / "wds" / f"{s:05d}.tar",
                [m for i in range(3) for m in ((f"{s}{i:04d}.jpg", image_bytes(10 * s + i)),
                                               (f"{s}{i:04d}.txt", f"caption number {i}".encode()))]
                + [("../bad.jpg", image_bytes(1)), ("../bad.txt", b"x")])
    args = ["tokenize", "image", "--corpus", str(tmp_path / "wds"), "--format", "wds",
            "--image-tokenizer", img_path, "--text-tokenizer", txt_path, "--image-size", "16",
            "--out", str(tmp_path / "out"), "--workers", "0", "--batch-size", "4", "--no-progress"]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["samples_ok"] == 6 and report["skipped"] == {"unsafe_member_name": 2}
    assert "unsafe_member_name | 2" in capsys.readouterr().out
    rows = read_table(str(tmp_path / "out" / "tables" / "wds__00001.parquet"))
    assert [r.key for r in rows] == ["10000", "10001", "10002"] and rows[0].shape == (4, 4)
    assert main(args) == 0  # rerun: everything already done
    assert json.loads((tmp_path / "out" / "report_rank0.json").read_text())["units_already_done"] == 2

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.jsonl").write_text(
        "\n".join(json.dumps({"text": f"caption number {i}"}) for i in range(4)) + "\n")
    assert main(["tokenize", "text", "--corpus", str(tmp_path / "docs"), "--format", "jsonl",
                 "--text-tokenizer", txt_path, "--out", str(tmp_path / "tout"),
                 "--workers", "0", "--threads", "1", "--no-progress"]) == 0
    rows = [r for p in (tmp_path / "tout" / "tables").glob("*.parquet") for r in read_table(str(p))]
    assert len(rows) == 4 and {r.task for r in rows} == {"text"}
    assert "encoder uses 1 torch threads" in caplog.text


def test_tokenize_cli_errors(tmp_path: Path, capsys):
    _, txt_path = save_tokenizers(tmp_path)
    code = main(["tokenize", "image", "--corpus", str(tmp_path / "missing"), "--format", "folder",
                 "--image-tokenizer", str(tmp_path / "nope"), "--text-tokenizer", txt_path,
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "tokenize image" in capsys.readouterr().err
