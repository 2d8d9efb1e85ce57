"""trimodal.io: the one atomic write and the one device choice (issue 23.2, issue 22.12)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import fsspec
import pytest
import torch

from trimodal.errors import ConfigError, UserError
from trimodal.io import (AtomicFile, atomic_open, atomic_write, atomic_write_json, is_temp_name, resolve_device,
                         stale_temps, temp_path)

SRC = Path(__file__).resolve().parents[1] / "src" / "trimodal"


def test_temp_names_are_unique_hidden_and_beside_the_target(tmp_path):
    names = {temp_path(str(tmp_path / "out.json")) for _ in range(100)}
    assert len(names) == 100
    for n in names:
        assert os.path.dirname(n) == str(tmp_path)
        assert is_temp_name(n) and os.path.basename(n).startswith(".out.json.")
    assert not is_temp_name("out.json") and not is_temp_name(".hidden")


@pytest.mark.parametrize("root", ["local", "memory"])
def test_two_writers_of_one_output_never_share_a_temp_file(tmp_path, root):
    """Two writers of one file overlap: each writes its own temp, the last rename wins with a
    whole file. With one fixed `.tmp` name the two would write into the same file and the
    second rename would find nothing to rename."""
    url = str(tmp_path / "x" / "data.bin") if root == "local" else "memory://io_test/data.bin"
    a, b = AtomicFile(url), AtomicFile(url)
    assert a.tmp != b.tmp
    a.file.write(b"a" * 1000)
    b.file.write(b"b" * 10)
    b.commit()
    a.file.write(b"a" * 1000)
    a.commit()
    with fsspec.open(url, "rb") as f:
        assert f.read() == b"a" * 2000
    fs, path = fsspec.core.url_to_fs(url)
    assert stale_temps(fs, path) == []
    if root == "memory":
        fs.rm(path)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(str(target), {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(str(target), "w") as f:
            f.write('{"v": 2')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{"v": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_stale_temps_finds_leftovers_of_one_target_only(tmp_path):
    a = AtomicFile(str(tmp_path / "a.parquet"))
    a.file.write(b"x")
    a.file.close()  # the process "dies": no commit, no discard
    other = AtomicFile(str(tmp_path / "b.parquet"))
    fs, _ = fsspec.core.url_to_fs(str(tmp_path))
    assert stale_temps(fs, str(tmp_path / "a.parquet")) == [a.tmp]
    other.discard()
    atomic_write(str(tmp_path / "a.parquet"), b"whole")
    assert (tmp_path / "a.parquet").read_bytes() == b"whole"


def test_resolve_device_on_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device("auto", local_rank=3) == torch.device("cpu")
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match="CUDA is not available"):
                resolve_device(name)
    else:
        n = torch.cuda.device_count()
        assert resolve_device("auto", local_rank=n + 1) == torch.device("cuda", (n + 1) % n)
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(UserError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu please")


def test_no_other_module_renames_temp_files_or_resolves_devices():
    """Acceptance of issue 23.2: atomic writes and the device choice live in io.py only."""
    renames, devices = [], []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "io.py" and path.parent == SRC:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                owner = ast.unparse(node.func.value)
                if (name in ("replace", "rename") and owner in ("os", "Path")) or name == "mv" or \
                        (name in ("replace", "rename") and "tmp" in ast.unparse(node).lower()):
                    renames.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.IfExp) and "cuda.is_available" in ast.unparse(node.test):
                devices.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert renames == []
    assert devices == []
