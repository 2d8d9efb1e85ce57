import pytest
import torch

from trimodal.mdm_core.config import ModelConfig
from trimodal.mdm_core.loss import TokenTables
from trimodal.mdm_core.model import MDMTransformer, modality_logit_bias


def _model(vocab, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, max_len=32, vocab_size=vocab.size, **kw)
    return MDMTransformer(cfg, modality_logit_bias(vocab)).eval()


def test_pad_keys_do_not_change_other_positions(vocab):
    model = _model(vocab)
    tables = TokenTables.from_vocab(vocab)
    x = torch.tensor([[vocab.task("text"), vocab.bos("text"), 3, 4, vocab.mask("text"), 6, vocab.eos("text")]])
    padded = torch.cat([x, torch.full((1, 5), vocab.pad)], dim=1)
    with torch.no_grad():
        short = model(x, tables.modality[x], x == vocab.pad)
        long = model(padded, tables.modality[padded], padded == vocab.pad)
        unmasked = model(padded, tables.modality[padded], None)
    torch.testing.assert_close(long[:, :7], short, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(unmasked[:, :7], short, atol=1e-4)  # the mask is what does it


def test_attention_is_bidirectional(vocab):
    model = _model(vocab)
    a = torch.tensor([[1, 2, 3, 4, 5]])
    b = a.clone()
    b[0, 4] = 9
    with torch.no_grad():
        assert not torch.allclose(model(a)[0, 0], model(b)[0, 0])


def test_restricted_logits_put_no_mass_outside_the_modality(vocab):
    model = _model(vocab)
    tables = TokenTables.from_vocab(vocab)
    x = torch.tensor([[vocab.task("image_text"), vocab.bos("image"), vocab.mask("image"),
                       vocab.eos("image"), vocab.bos("text"), vocab.mask("text"), vocab.eos("text")]])
    with torch.no_grad():
        p = model(x, tables.modality[x], None).softmax(-1)[0]
    lo, hi = vocab.range("image")
    assert float(p[2, lo:hi].sum() + p[2, vocab.bos("image")] + p[2, vocab.eos("image")]) == pytest.approx(1.0, abs=1e-5)
    tlo, thi = vocab.range("text")
    assert float(p[5, tlo:thi].sum() + p[5, vocab.bos("text")] + p[5, vocab.eos("text")]) == pytest.approx(1.0, abs=1e-5)


def test_tied_weights_share_one_tensor(vocab):
    model = _model(vocab, tie_weights=True)
    assert model.lm_head.weight is model.tok_emb.weight
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 33, dtype=torch.long))
