import json

import pytest

from imgtok_helpers import one_thread, shape_images, tiny_train
from trimodal.cli import main
from trimodal.config import save
from trimodal.tokenizers.image import ImageTokenizer

_threads = pytest.fixture(autouse=True, name="_one_thread")(one_thread)


def test_cli_train_then_resume(tmp_path, capsys):
    data = tmp_path / "imgs"
    data.mkdir()
    for i, im in enumerate(shape_images(10, size=16)):
        im.save(data / f"{i}.png")
    cfg = tiny_train("fsq", steps=3)
    save(cfg, tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    args = ["tokenizer", "image", "train", "--config", str(tmp_path / "cfg.yaml"), "--data", str(data),
            "--out", str(out), "--threads", "1"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["step"] == 3 and first["hash"] == ImageTokenizer.load(str(out / "tokenizer")).hash
    assert main(args + ["--resume", "--steps", "5"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["step"] == 5 and second["hash"] != first["hash"]
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # one row at step 3, one at 5


def test_cli_errors_are_messages(tmp_path, capsys):
    assert main(["tokenizer", "image", "train"]) == 1
    assert "--preset" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("model: {quantizer: {kind: rvq}}\n")
    assert main(["tokenizer", "image", "train", "--config", str(tmp_path / "bad.yaml")]) == 1
    assert "quantizer.kind must be one of" in capsys.readouterr().err
    assert main(["tokenizer", "image", "train", "--preset", "fsq", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "image folder not found" in capsys.readouterr().err
