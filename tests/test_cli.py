"""The CLI's one error path: `trimodal <stage>: error: <message>`, no traceback, non-zero exit;
`--debug` shows the traceback instead."""

from __future__ import annotations

from pathlib import Path

import pytest

import trimodal.cli
from trimodal.cli import main
from trimodal.config import ConfigError
from trimodal.errors import UserError
from trimodal.mdm_core.checkpoint import CheckpointError
from trimodal.mdm_core.sampler import SamplingError
from trimodal.packing.vocab import VocabError
from trimodal.shards.manifest import ShardError
from trimodal.corpora.text import CorpusError


def test_the_project_errors_are_one_family():
    for cls in (ConfigError, VocabError, ShardError, CheckpointError, SamplingError, CorpusError):
        assert issubclass(cls, UserError), cls


@pytest.mark.parametrize("argv, stage, needle, code", [
    (["vocab", "--text-tokenizer", "{tmp}/none.model", "--out", "{tmp}/v.json"], "trimodal vocab", "none.model", 2),
    (["shards", "inspect", "{tmp}/no_set"], "trimodal shards inspect", "no manifest.json", 1),
    (["tokenize", "text", "--corpus", "{tmp}", "--text-tokenizer", "{tmp}", "--out", "{tmp}/o"],
     "trimodal tokenize text", "text tokenizer", 2),
    (["train", "--config", "{tmp}/missing.yaml"], "trimodal train", "missing.yaml", 2),
    (["sample", "text", "--checkpoint", "{tmp}/run", "--text-tokenizer", "x", "--prompt", "a", "--device", "tpu:x"],
     "trimodal sample", "device", 2),
    (["tokenizer", "image", "train"], "trimodal tokenizer image train", "--preset", 1),
])
def test_user_errors_are_one_line_without_traceback(tmp_path: Path, capsys, argv, stage, needle, code):
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code
    assert len(err) == 1 and err[0].startswith(f"{stage}: error: ") and needle in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_debug_shows_the_traceback(tmp_path: Path):
    argv = ["vocab", "--text-tokenizer", str(tmp_path / "none.model"), "--out", str(tmp_path / "v.json")]
    with pytest.raises(UserError, match="none.model"):
        main(argv + ["--debug"])
    with pytest.raises(UserError):
        main(["--debug"] + argv)


def test_a_bug_is_not_dressed_up_as_a_user_error(monkeypatch):
    from trimodal.commands import demo

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(demo, "run", broken)
    with pytest.raises(KeyError):
        main(["demo", "--tiny", "--out", "unused"])


def test_cli_is_a_thin_layer():
    source = Path(trimodal.cli.__file__).read_text()
    assert len(source.splitlines()) < 400
    assert "_not_built" not in source
