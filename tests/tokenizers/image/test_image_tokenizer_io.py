import json
import os

import pytest
import torch

from imgtok_helpers import one_thread, random_images, tiny_model
from trimodal.config import ConfigError
from trimodal.tokenizers.image import ImageTokenizer

_threads = pytest.fixture(autouse=True, name="_one_thread")(one_thread)


@pytest.mark.parametrize("kind", ["movq", "fsq", "lfq"])
def test_save_load_same_ids_and_hash(tmp_path, kind):
    torch.manual_seed(1)
    tok = ImageTokenizer(tiny_model(kind))
    if kind == "movq":  # give the EMA codebook buffers non-initial values before saving
        tok.train()
        tok(random_images(4, 16, seed=3))
    tok.eval()
    x = random_images(4, 16)
    ids = tok.encode(x)
    digest = tok.save(str(tmp_path / "tok"))
    assert digest == tok.hash
    back = ImageTokenizer.load(str(tmp_path / "tok"))
    assert back.hash == digest and back.name == tok.name and back.vocab_size == tok.vocab_size
    assert torch.equal(back.encode(x), ids)
    assert torch.equal(back.decode(ids), tok.decode(ids))
    # Saving again gives the same bytes and hash.
    assert back.save(str(tmp_path / "tok2")) == digest
    assert (tmp_path / "tok" / "model.safetensors").read_bytes() == (tmp_path / "tok2" / "model.safetensors").read_bytes()


def test_hash_tracks_weights_and_architecture_not_name(tmp_path):
    torch.manual_seed(0)
    a = ImageTokenizer(tiny_model("fsq"))
    cfg = tiny_model("fsq")
    cfg.name = "renamed"
    b = ImageTokenizer(cfg)
    b.load_state_dict(a.state_dict())
    assert a.hash == b.hash
    with torch.no_grad():
        next(b.parameters()).add_(1e-3)
    assert a.hash != b.hash


def test_edited_files_are_detected(tmp_path):
    tok = ImageTokenizer(tiny_model("fsq"))
    tok.save(str(tmp_path / "tok"))
    meta = json.loads((tmp_path / "tok" / "config.json").read_text())
    meta["config"]["quantizer"]["levels"] = [5, 5, 5]
    (tmp_path / "tok" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="does not match the content"):
        ImageTokenizer.load(str(tmp_path / "tok"))
    with pytest.raises(FileNotFoundError, match="no such image tokenizer"):
        ImageTokenizer.load(str(tmp_path / "missing"))


def test_upstream_state_dict_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_model("movq")
    tok = ImageTokenizer(cfg).eval()
    x = random_images(2, 16)
    # Lightning-style file: {"state_dict": {"model.<name>": tensor}, ...}
    sd = {f"model.{k}": v for k, v in tok.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "up.ckpt")
    back = ImageTokenizer.from_state_dict_file(str(tmp_path / "up.ckpt"), cfg)
    assert torch.equal(back.encode(x), tok.encode(x)) and back.hash == tok.hash
    torch.save(tok.state_dict(), tmp_path / "plain.pt")
    assert ImageTokenizer.from_state_dict_file(str(tmp_path / "plain.pt"), cfg).hash == tok.hash
    with pytest.raises(ConfigError, match="do not fit this architecture"):
        ImageTokenizer.from_state_dict_file(str(tmp_path / "plain.pt"), tiny_model("movq", codebook_size=32))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": _Evil(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(ConfigError, match="weights_only"):
        ImageTokenizer.from_state_dict_file(str(tmp_path / "evil.ckpt"), tiny_model("fsq"))
    with pytest.raises(ConfigError, match="weights_only"):
        ImageTokenizer.load(str(tmp_path / "evil.ckpt"))
    assert not marker.exists()


def test_load_maps_to_cpu(tmp_path):
    tok = ImageTokenizer(tiny_model("lfq"))
    tok.save(str(tmp_path / "tok"))
    back = ImageTokenizer.load(str(tmp_path / "tok"), map_location="cpu")
    assert back.device.type == "cpu" and not back.training
