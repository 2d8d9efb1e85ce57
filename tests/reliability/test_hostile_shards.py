"""The shard reader and `trimodal shards verify` on hostile shards.

Shards may come from elsewhere (a download, another team's bucket). Each shard below is damaged
in one way: members with `../..` names, a link member, a member name that is not UTF-8, a
header claiming more data than the file holds, a tokens.npy of floats. The training reader
must not crash and may only yield genuine samples; verify must name every bad shard and exit 1;
neither may write a file anywhere.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from trimodal.packing.layout import PackedSequence
from trimodal.packing.vocab import Vocab

L = 12
PER_SHARD = 3


def _write_set(url: str, n: int) -> tuple[Vocab, list[PackedSequence]]:
    from trimodal.shards.writer import WriterConfig, write_shards

    vocab = Vocab.from_sizes(text_size=50, image_size=0, audio_codebook_size=4, audio_codebooks=1)
    seqs = []
    for i in range(n):
        tokens = np.full(L, vocab.pad, np.int32)
        tokens[:6] = [vocab.task("text"), vocab.bos("text"), i % 50, (3 * i) % 50, 7, vocab.eos("text")]
        seqs.append(PackedSequence(tokens=tokens, task="text", keys=[f"doc{i}"],
                                   spans=[("text", 1, 6)], pad_count=L - 6, source="s"))
    write_shards(seqs, url, vocab, L, "pad", WriterConfig(max_samples=PER_SHARD))
    return vocab, seqs


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _rewrite(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], encoding: str = "utf-8") -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT, encoding=encoding) as tar:
        for info, data in members:
            if info.issym() or info.islnk():
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def _traversal_names(path: Path) -> None:
    members = _members(path)
    for info, _ in members[2:4]:  # sample 1 of the shard
        info.name = "../../evil" + info.name[info.name.index("."):]
    _rewrite(path, members)


def _link_member(path: Path) -> None:
    members = _members(path)
    info = members[2][0]
    info.type, info.linkname, info.size = tarfile.SYMTYPE, "/etc/passwd", 0
    _rewrite(path, members)


def _non_utf8_name(path: Path) -> None:
    members = _members(path)
    for info, _ in members[2:4]:
        info.name = "caf\xe9" + info.name[info.name.index("."):]
    _rewrite(path, members, encoding="latin-1")


def _float_tokens(path: Path) -> None:
    members = _members(path)
    buf = io.BytesIO()
    np.save(buf, np.zeros(L, np.float64), allow_pickle=False)
    members[2] = (members[2][0], buf.getvalue())
    _rewrite(path, members)


def _oversized_header(path: Path) -> None:
    """The last member's header claims 8 GB: the file ends long before."""
    members = _members(path)
    _rewrite(path, members)
    data = bytearray(path.read_bytes())
    last = tarfile.open(path).getmembers()[-1]
    header = last.offset
    size_field = f"{8**11 - 1:011o}\0".encode()  # the largest size the field can hold (8 GB)
    data[header + 124:header + 136] = size_field
    data[header + 148:header + 156] = b"        "
    data[header + 148:header + 155] = f"{sum(data[header:header + 512]):06o}\0".encode()
    path.write_bytes(bytes(data[: header + 512 + 600]))


DAMAGE = {1: _traversal_names, 2: _link_member, 3: _non_utf8_name, 4: _float_tokens, 5: _oversized_header}


def tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root)
            for d, dirs, files in os.walk(root, followlinks=False) for n in dirs + files}


@pytest.mark.timeout(120)
def test_hostile_shards_reader_and_verify(tmp_path, monkeypatch, capsys):
    from trimodal.cli import main
    from trimodal.shards.reader import ReaderConfig, ShardDataset

    url = tmp_path / "deep" / "set"
    vocab, seqs = _write_set(str(url), PER_SHARD * (len(DAMAGE) + 1))
    shards = sorted(url.glob("*.tar"))
    for idx, damage in DAMAGE.items():
        damage(shards[idx])
    cwd = tmp_path / "deep" / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = tree(tmp_path)

    genuine = {tuple(s.tokens.tolist()) for s in seqs}
    for workers_config in (ReaderConfig(shuffle=False), ReaderConfig(seed=1)):
        got = list(ShardDataset([str(url)], vocab, L, workers_config))
        assert all(tuple(np.asarray(s.tokens).tolist()) in genuine for s in got)
        clean = [tuple(s.tokens.tolist()) for s in seqs[:PER_SHARD]]
        assert set(clean) <= {tuple(np.asarray(s.tokens).tolist()) for s in got}  # the good shard whole
        assert len(got) <= len(seqs)

    assert main(["shards", "verify", str(url)]) == 1
    out = capsys.readouterr().out
    assert f"{shards[0].name}: ok" in out
    for idx in DAMAGE:
        assert f"{shards[idx].name}: BAD" in out, out
    assert "unreadable member name" in out
    assert tree(tmp_path) == before
    assert not (tmp_path / "evil.tokens.npy").exists() and not Path("/evil.tokens.npy").exists()
