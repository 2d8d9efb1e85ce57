import numpy as np
import pytest
import torch
from PIL import Image

from imgtok_helpers import one_thread, random_images, shape_images, tiny_model
from trimodal.tokenizers.base import Tokenizer
from trimodal.tokenizers.image import ImageTokenizer, preprocess, to_pil

_threads = pytest.fixture(autouse=True, name="_one_thread")(one_thread)


@pytest.mark.parametrize("kind", ["movq", "fsq", "lfq"])
@pytest.mark.parametrize("factor", [4, 8, 16])
def test_encode_decode_shapes_and_id_range(kind, factor):
    torch.manual_seed(0)
    tok = ImageTokenizer(tiny_model(kind, factor, image_size=32))
    x = random_images(3, 32)
    ids = tok.encode(x)
    assert tok.grid(32) == (32 // factor, 32 // factor)
    assert ids.shape == (3, 32 // factor, 32 // factor) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < tok.vocab_size
    y = tok.decode(ids)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= -1 and float(y.max()) <= 1
    # Decoding is a function of the ids alone: a second decode gives the same images.
    assert torch.equal(y, tok.decode(ids.clone()))


@pytest.mark.parametrize("kind", ["movq", "fsq", "lfq"])
def test_ids_to_latent_inverts_quantization(kind):
    torch.manual_seed(0)
    tok = ImageTokenizer(tiny_model(kind)).eval()
    with torch.no_grad():
        q = tok.quantizer(tok.encoder(random_images(2, 16)))
        torch.testing.assert_close(tok.quantizer.ids_to_latent(q.ids), q.z_q)


def test_vocab_sizes_follow_config():
    assert ImageTokenizer(tiny_model("fsq", codebook_size=2**10)).vocab_size == 8 * 5 * 5 * 5
    assert ImageTokenizer(tiny_model("lfq", codebook_size=2**7)).vocab_size == 128
    assert ImageTokenizer(tiny_model("movq", codebook_size=96)).vocab_size == 96


def test_list_api_follows_protocol():
    tok = ImageTokenizer(tiny_model("fsq"))
    assert isinstance(tok, Tokenizer)
    pil = shape_images(2, size=24)  # not the model's size: preprocess resizes to 16
    ids = tok.encode(pil)
    assert len(ids) == 2 and all(a.shape == (4, 4) and a.dtype == np.int32 for a in ids)
    out = tok.decode(ids)
    assert len(out) == 2 and all(isinstance(im, Image.Image) and im.size == (16, 16) for im in out)
    assert tok.decode([]) == [] and tok.encode([]) == []


def test_bad_inputs_are_clear_errors():
    tok = ImageTokenizer(tiny_model("fsq", factor=8))
    with pytest.raises(ValueError, match="multiple of the downsampling factor 8"):
        tok.encode(random_images(1, 12))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        tok.encode(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="ids must lie in"):
        tok.decode(torch.full((1, 2, 2), tok.vocab_size))


@pytest.mark.parametrize("policy", ["center_crop", "resize", "pad"])
def test_preprocess_policies(policy):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    x = preprocess(img, 16, policy)
    assert x.shape == (3, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    if policy == "pad":  # grey bars above and below the (scaled) 2:1 image
        assert torch.allclose(x[:, 0, 8], torch.full((3,), 128 / 127.5 - 1), atol=1e-6)
        assert torch.allclose(x[:, 8, 8], torch.tensor([1.0, -1.0, -1.0]))
    else:
        assert torch.allclose(x, torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 16, 16), atol=1e-2)
    with pytest.raises(ValueError, match="unknown resize policy"):
        preprocess(img, 16, "stretch")


def test_to_pil_roundtrip():
    imgs = shape_images(2, size=16)
    x = torch.stack([preprocess(im, 16) for im in imgs])
    back = to_pil(x)
    assert [np.asarray(b).tolist() for b in back] == [np.asarray(i).tolist() for i in imgs]
