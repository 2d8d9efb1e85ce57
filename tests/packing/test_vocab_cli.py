import pytest

from trimodal.cli import main
from trimodal.packing.vocab import Vocab
from trimodal.tokenizers.text import TextTokenizer


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    texts = [f"the {c} {s} is on the {p}" for c in ("red", "blue", "green") for s in ("circle", "square")
             for p in ("left", "right", "top")] * 20
    tok = TextTokenizer.train(texts, vocab_size=300)
    path = tmp_path_factory.mktemp("tok") / "text.model"
    tok.save(str(path))
    return path, tok


def test_vocab_cli_builds_text_only_vocab(tmp_path, text_model):
    path, tok = text_model
    out = tmp_path / "vocab.json"
    assert main(["vocab", "--text-tokenizer", str(path), "--out", str(out)]) == 0
    vocab = Vocab.load(str(out))
    assert vocab.spec.text_size == tok.vocab_size
    assert vocab.spec.image_size == 0 and vocab.spec.audio_codebooks == 0
    assert vocab.spec.tokenizers == {"text": tok.hash}


def test_vocab_cli_missing_tokenizer_is_a_clear_error(tmp_path, capsys):
    assert main(["vocab", "--text-tokenizer", str(tmp_path / "nope.model"), "--out", str(tmp_path / "v.json")]) == 2
    assert "nope.model" in capsys.readouterr().err
