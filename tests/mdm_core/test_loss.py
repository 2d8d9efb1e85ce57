import math

import numpy as np
import pytest
import torch

from trimodal.mdm_core.loss import TokenTables, apply_masks, forward_process, mdm_loss, summarize
from trimodal.mdm_core.model import modality_logit_bias
from trimodal.mdm_core.schedules import MaskSchedule, lr_factor
from trimodal.mdm_core.config import OptimConfig


def _hand_weight(kind: str, t: float, k: float) -> float:
    if kind == "linear":
        return 1.0 / t
    if kind == "poly":
        return k / t
    return (math.pi / 2) * math.cos(math.pi * t / 2) / math.sin(math.pi * t / 2)


def _example(vocab):
    text = [3, 7, 1, 9, 4]
    row0 = [vocab.task("text"), vocab.bos("text"), *text, vocab.eos("text"), vocab.pad, vocab.pad]
    img = [vocab.image_offset + 2, vocab.image_offset + 5]
    row1 = [vocab.task("image_text"), vocab.bos("image"), *img, vocab.eos("image"),
            vocab.bos("text"), 5, 6, vocab.eos("text"), vocab.pad]
    tokens = torch.tensor([row0, row1])
    masked = torch.zeros_like(tokens, dtype=torch.bool)
    masked[0, [2, 4, 6, 8]] = True  # 8 is PAD: must be ignored
    masked[1, [0, 2, 3, 7]] = True  # 0 is TASK: must be ignored
    return tokens, masked


@pytest.mark.parametrize("kind,k", [("linear", 1.0), ("cosine", 1.0), ("poly", 2.0), ("poly", 3.0)])
def test_loss_matches_hand_computation(vocab, kind, k):
    sched = MaskSchedule(kind, k)
    tables = TokenTables.from_vocab(vocab)
    tokens, masked = _example(vocab)
    t = torch.tensor([0.3, 0.8])
    mb = apply_masks(tokens, tables, masked, t, sched.weight(t))
    logits = torch.randn(2, tokens.shape[1], vocab.size, generator=torch.Generator().manual_seed(1))
    loss, stats = mdm_loss(logits, mb, tables)

    # By hand: per row, w(t) * sum of CE over masked maskable positions / #maskable.
    logp = torch.log_softmax(logits.double(), dim=-1).numpy()
    expected = []
    for b, (pos, n_maskable) in enumerate([([2, 4, 6], 7), ([2, 3, 7], 8)]):
        ce = sum(-logp[b, i, int(tokens[b, i])] for i in pos)
        expected.append(_hand_weight(kind, float(t[b]), k) * ce / n_maskable)
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)
    # Masked inputs hold their modality's MASK; unmasked and PAD/TASK positions are unchanged.
    assert int(mb.inputs[0, 2]) == vocab.mask("text") and int(mb.inputs[1, 2]) == vocab.mask("image")
    assert int(mb.inputs[0, 8]) == vocab.pad and int(mb.inputs[1, 0]) == vocab.task("image_text")
    figures = summarize(stats)
    assert figures["bpt"] == pytest.approx(figures["elbo"] / math.log(2))
    assert set(figures) >= {"elbo/text", "elbo/image", "ce/text", "elbo/task/text", "elbo/task/image_text"}


@pytest.mark.parametrize("kind,k", [("linear", 1.0), ("cosine", 1.0), ("poly", 2.5)])
def test_schedule_endpoints_and_weight_is_log_derivative(kind, k):
    s = MaskSchedule(kind, k)
    assert float(s.beta(torch.tensor(0.0))) == pytest.approx(0.0, abs=1e-7)
    assert float(s.beta(torch.tensor(1.0))) == pytest.approx(1.0, abs=1e-6)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (torch.log(s.beta(t + h)) - torch.log(s.beta(t - h))) / (2 * h)
    assert torch.allclose(s.weight(t), numeric, rtol=1e-5)
    assert torch.all(s.beta(t[1:]) > s.beta(t[:-1]))


def test_anti_masking_pairs_cover_each_maskable_token_once(vocab):
    tables = TokenTables.from_vocab(vocab)
    tokens, _ = _example(vocab)
    tokens = tokens.repeat(3, 1)
    mb = forward_process(tokens, tables, MaskSchedule("poly", 2.0), 1e-3,
                         torch.Generator().manual_seed(0), anti_masking=True)
    assert mb.inputs.shape[0] == 2 * tokens.shape[0]
    a, b = mb.masked[0::2], mb.masked[1::2]
    assert torch.equal(mb.targets[0::2], tokens) and torch.equal(mb.targets[1::2], tokens)
    assert not (a & b).any()
    assert torch.equal(a | b, mb.maskable[0::2])
    assert not (mb.masked & mb.pad).any()
    # Both weights positive and finite; the second row's is beta'/(1-beta).
    assert torch.isfinite(mb.weight).all() and (mb.weight > 0).all()


def test_complement_weight_linear_equals_weight_at_one_minus_t():
    s = MaskSchedule("linear")
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(s.complement_weight(t), s.weight(1 - t))


def test_anti_masked_estimate_is_unbiased(vocab):
    """Both rows of a pair estimate the same bound: compare their means over many draws of t."""
    s = MaskSchedule("poly", 2.0)
    # With f(lambda) = lambda * const (a loss proportional to the masked count), the bound is the
    # same for any sampling of lambda; check E[w * rate] for both rows equals 1.
    t = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.998 + 0.001
    first = (s.weight(t) * s.beta(t)).mean()
    second = (s.complement_weight(t) * (1 - s.beta(t))).mean()
    assert float(first) == pytest.approx(float(second), rel=2e-2)


def test_bos_eos_maskability_is_configurable(vocab):
    tables = TokenTables.from_vocab(vocab, mask_bos=False, mask_eos=True)
    assert not bool(tables.maskable[vocab.bos("text")]) and bool(tables.maskable[vocab.eos("text")])
    assert not bool(tables.maskable[vocab.pad]) and not bool(tables.maskable[vocab.task("text")])


def test_logit_bias_restricts_each_modality(vocab):
    bias = modality_logit_bias(vocab)
    lo, hi = vocab.range("image")
    img = bias[2]
    assert torch.all(img[lo:hi] == 0) and img[vocab.eos("image")] == 0
    assert torch.isinf(img[:lo]).all() and torch.isinf(img[vocab.mask("image")])
    assert torch.all(bias[0] == 0)


def test_lr_schedules():
    cos = OptimConfig(warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cos, 100) == pytest.approx(0.1)
    assert lr_factor(9, cos, 100) == pytest.approx(1.0)
    assert lr_factor(100, cos, 100) == pytest.approx(0.1)
    wsd = OptimConfig(warmup_steps=10, lr_schedule="wsd", decay_frac=0.2, min_lr_ratio=0.0)
    assert lr_factor(50, wsd, 100) == 1.0 and lr_factor(90, wsd, 100) == pytest.approx(0.5)
