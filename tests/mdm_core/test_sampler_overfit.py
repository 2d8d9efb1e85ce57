"""A tiny MDM transformer overfit on two caption -> image pairs must reproduce the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trimodal.mdm_core.config import ModelConfig
from trimodal.mdm_core.model import MDMTransformer, modality_logit_bias
from trimodal.mdm_core.sampler import (
    Sampler, image_codes, media_prompt, model_logits_fn, pair_layout, unconditional_tokens, generate,
)
from trimodal.mdm_core.sampling_config import SamplingConfig
from trimodal.packing.vocab import Vocab

VOCAB = Vocab.from_sizes(text_size=16, image_size=16)
CAPTIONS = [np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8])]
IMAGES = [np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]]), np.array([[15, 14, 13], [9, 9, 9], [10, 11, 12]])]


def overfit(steps: int = 200, seed: int = 0) -> MDMTransformer:
    """Train on the two pairs with the absorbing forward process (image and text both masked
    at rate t ~ U(0, 1)), plus 20% rows with the caption dropped so CFG has an unconditional."""
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, max_len=32, vocab_size=VOCAB.size)
    model = MDMTransformer(cfg, modality_logit_bias(VOCAB))
    rows = [pair_layout(VOCAB, "image_text", "image", VOCAB.to_global("image", i.reshape(-1)),
                        VOCAB.to_global("text", c))[0] for c, i in zip(CAPTIONS, IMAGES)]
    clean = torch.from_numpy(np.stack(rows)).repeat(8, 1)
    maskable = torch.from_numpy(np.isin(VOCAB.modality_of(clean.numpy()), [0, 1])) \
        & ~torch.isin(clean, torch.tensor([VOCAB.bos("text"), VOCAB.eos("text"),
                                           VOCAB.bos("image"), VOCAB.eos("image")]))
    text_content = clean < VOCAB.range("text")[1]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    fn_table = torch.from_numpy(VOCAB.modality_of(np.arange(VOCAB.size)))
    pad = torch.zeros_like(clean, dtype=torch.bool)
    for _ in range(steps):
        t = torch.rand(clean.shape[0], 1)
        masked = (torch.rand(clean.shape) < t) & maskable
        x = unconditional_tokens(VOCAB, clean, masked)
        drop = (torch.rand(clean.shape[0], 1) < 0.2) & text_content
        x = unconditional_tokens(VOCAB, x, drop)
        logits = model(x, modality=fn_table[x], pad_mask=pad)
        loss = torch.nn.functional.cross_entropy(logits[masked & ~drop], clean[masked & ~drop])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture
def one_thread():
    """Tiny matmuls are dominated by thread start-up and lose badly to oversubscription on a
    shared machine; one intra-op thread makes this test fast and its time predictable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_overfit_model_reproduces_each_caption_image(one_thread):
    model = overfit()
    fn = model_logits_fn(model, VOCAB)
    prompt = media_prompt(VOCAB, CAPTIONS, "image", 9)
    expected = np.stack(IMAGES)
    for cfg in (SamplingConfig(steps=9, temperature=0.0),
                SamplingConfig(steps=4, temperature=1.0, schedule="cosine"),
                SamplingConfig(steps=3, temperature=0.0, cfg_scale=2.0)):
        out = generate(fn, VOCAB, prompt, cfg)
        np.testing.assert_array_equal(image_codes(VOCAB, out, prompt, (3, 3)), expected, err_msg=str(cfg))

    class Codec:
        def encode(self, texts):
            return [CAPTIONS[int(t)] for t in texts]

        def decode(self, ids):
            return [" ".join(map(str, x)) for x in ids]

    s = Sampler(fn, VOCAB, text=Codec())
    np.testing.assert_array_equal(s.t2i_codes(["1", "0"], (3, 3), SamplingConfig(steps=9, temperature=0)),
                                  expected[::-1])
    # the reverse direction: the same model captions the images it was trained on
    assert s.i2t(IMAGES, 4, SamplingConfig(steps=4, temperature=0)) == ["1 2 3 4", "5 6 7 8"]
