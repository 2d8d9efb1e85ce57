"""`trimodal shards verify/inspect` and `trimodal pack`, end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trimodal.cli import main
from trimodal.packing.table import TokenRow, write_table
from trimodal.packing.vocab import Vocab
from trimodal.shards import ReaderConfig, ShardDataset, Source, read_manifest
from trimodal.shards.verify import verify_shards

from shard_helpers import write_set


def test_verify_accepts_a_good_set(text_set, capsys):
    assert verify_shards(text_set).ok
    assert main(["shards", "verify", text_set]) == 0
    assert "OK: 6 shard(s), 0 bad" in capsys.readouterr().out


def test_verify_reports_truncated_and_corrupted_shards(tmp_path, vocab, capsys):
    url = str(tmp_path / "set")
    write_set(url, vocab, 30, per_shard=10)
    p1 = tmp_path / "set" / "shard-000001.tar"
    p1.write_bytes(p1.read_bytes()[:3000])
    p2 = tmp_path / "set" / "shard-000002.tar"
    data = bytearray(p2.read_bytes())
    data[512 + 100] ^= 0x01  # inside the first tokens.npy payload: only the sha256 can tell
    p2.write_bytes(bytes(data))
    report = verify_shards(url)
    by_name = {s.name: s for s in report.shards}
    assert by_name["shard-000000.tar"].ok
    assert not by_name["shard-000001.tar"].ok
    assert any("truncated" in p for p in by_name["shard-000001.tar"].problems)
    assert not by_name["shard-000002.tar"].ok and not by_name["shard-000002.tar"].sha256_ok
    assert main(["shards", "verify", url]) == 1
    out = capsys.readouterr().out
    assert "shard-000001.tar: BAD" in out and "shard-000002.tar: BAD" in out and "FAILED" in out


def test_verify_flags_missing_shard_and_leftovers(tmp_path, vocab):
    url = str(tmp_path / "set")
    write_set(url, vocab, 20, per_shard=10)
    (tmp_path / "set" / "shard-000001.tar").unlink()
    (tmp_path / "set" / ".shard-000002.tar.abc.tmp").write_bytes(b"x")
    report = verify_shards(url)
    assert not report.ok and any("missing" in p for p in report.shards[1].problems)
    assert any("interrupted write" in w for w in report.warnings)


def test_verify_checks_pad_counts_and_ranges(tmp_path, vocab):
    from trimodal.shards.writer import write_shards
    from shard_helpers import L, make_seq
    seq = make_seq(vocab, 0)
    seq.pad_count += 1  # a packer bug: meta disagrees with the tokens
    write_shards([seq], str(tmp_path), vocab, L, "pad")
    report = verify_shards(str(tmp_path))
    assert not report.ok and "pad_count" in report.shards[0].problems[0]


def test_verify_refuses_other_vocab(text_set, tmp_path, capsys):
    other = Vocab.from_sizes(text_size=99)
    other.save(str(tmp_path / "other.json"))
    assert main(["shards", "verify", text_set, "--vocab", str(tmp_path / "other.json")]) == 1
    assert "vocabulary" in capsys.readouterr().out


def test_inspect_prints_spans(tmp_path, vocab, capsys):
    url = str(tmp_path / "img")
    write_set(url, vocab, 4, "image_text")
    assert main(["shards", "inspect", url, "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("task=image_text") == 2
    assert "TASK_image_text@0" in out and "BOS_image ... EOS_image" in out and "[text" in out


def _sp_model(tmp_path):
    from trimodal.tokenizers.text import TextTokenizer
    texts = ["the quick brown fox jumps over the lazy dog", "a red square on a blue circle",
             "speech synthesis from text", "masked diffusion over tokens"] * 20
    tok = TextTokenizer.train(texts, vocab_size=300)
    path = str(tmp_path / "text.model")
    tok.save(path)
    return tok, path


def test_pack_then_train_reader_then_inspect_text(tmp_path, capsys):
    tok, model_path = _sp_model(tmp_path)
    vocab = Vocab.from_sizes(text_size=tok.vocab_size, image_size=16, audio_codebook_size=8,
                             audio_codebooks=2)
    vocab.save(str(tmp_path / "vocab.json"))
    rng = np.random.default_rng(0)
    docs = ["the quick brown fox", "a red square on a blue circle", "masked diffusion"] * 10
    text_rows = [TokenRow(f"d{i}", "wiki", "text", tok.encode([d])[0]) for i, d in enumerate(docs)]
    pair_rows = [TokenRow(f"i{i}", "cc", "image_text", tok.encode(["a red square"])[0], "image",
                          rng.integers(0, 16, 9).astype(np.int32), (3, 3)) for i in range(7)]
    (tmp_path / "tables").mkdir()
    write_table(text_rows, str(tmp_path / "tables" / "a.parquet"))
    write_table(pair_rows, str(tmp_path / "tables" / "b.parquet"))
    (tmp_path / "tables" / "broken.parquet").write_bytes(b"not parquet")
    out = str(tmp_path / "out")
    assert main(["pack", "--tables", str(tmp_path / "tables"), "--vocab", str(tmp_path / "vocab.json"),
                 "--out", out, "--length", "32", "--mode", "pack", "--shard-samples", "3"]) == 0
    sets = json.loads((tmp_path / "out" / "sets.json").read_text())
    assert {(s["task"], s["source"]) for s in sets["sets"]} == {("text", "wiki"), ("image_text", "cc")}
    assert sets["skipped_tables"] and sets["skipped_tables"][0].endswith("broken.parquet")
    m = read_manifest(out + "/image_text/cc")
    assert m.total_samples == 7 and m.mode == "pack" and m.config["packer"]["length"] == 32
    assert main(["shards", "verify", out]) == 0
    ds = ShardDataset([Source(out + "/text/wiki", 1.0), Source(out + "/image_text/cc", 1.0)], vocab, 32,
                      ReaderConfig())
    assert sum(1 for _ in ds) == read_manifest(out + "/text/wiki").total_samples + 7
    capsys.readouterr()
    assert main(["shards", "inspect", out + "/text/wiki", "-n", "1", "--text-tokenizer", model_path]) == 0
    printed = capsys.readouterr().out
    assert "text: 'the quick brown fox'" in printed


def test_pack_reports_bad_arguments(tmp_path, vocab):
    vocab.save(str(tmp_path / "vocab.json"))
    assert main(["pack", "--tables", str(tmp_path / "nothing"), "--vocab", str(tmp_path / "vocab.json"),
                 "--out", str(tmp_path / "out"), "--length", "32"]) == 1
    with pytest.raises(SystemExit):
        main(["pack", "--vocab", "v.json"])
