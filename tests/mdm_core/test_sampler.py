"""Acceptance tests of the sampler against tiny hand-made models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trimodal.config import ConfigError, from_dict
from trimodal.mdm_core.sampler import (
    Sampler, SamplingError, block_ids, caption_prompt, condition_drop_mask, continuation_prompt, draw,
    drop_condition,
    filter_logits, generate, media_prompt, pair_layout, unmask_counts,
)
from trimodal.mdm_core.sampling_config import (
    MODALITY_DEFAULTS, SamplingConfig, default_config, defaults_as_dict,
)
from trimodal.mdm_core.schedules import MaskSchedule
from trimodal.packing.vocab import Vocab

VOCAB = Vocab.from_sizes(text_size=20, image_size=12, audio_codebook_size=8, audio_codebooks=3)


def lookup_model(vocab: Vocab, seed: int = 0):
    """A fixed random 'model': logits[b, l] = W[tokens[b, l]] + P[l] + mean_l W[tokens[b]].

    The mean term makes every position depend on the whole sequence, so masking the condition
    changes the logits (CFG has something to do) and committed tokens change later steps.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(vocab.size, vocab.size, generator=g) * 2.0
    P = torch.randn(64, vocab.size, generator=g)

    def logits_fn(tokens: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        assert tokens.dtype == torch.long and pad_mask.dtype == torch.bool
        assert tokens.shape == pad_mask.shape
        e = W[tokens]
        keep = (~pad_mask).float()[..., None]
        ctx = (e * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1)
        return e + P[: tokens.shape[1]] + 3.0 * ctx

    return logits_fn


def prompts(vocab: Vocab):
    """One prompt per direction, with rows of different lengths (so PAD is exercised)."""
    texts = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8, 9])]
    images = [np.arange(6).reshape(2, 3) % 12, (np.arange(6).reshape(2, 3) * 5) % 12]
    codes = [np.arange(12).reshape(3, 4) % 8, np.ones((3, 4), np.int64)]
    return {
        "t2i": media_prompt(vocab, texts, "image", 6),
        "t2s": media_prompt(vocab, texts, "audio", 12, n_q=3),
        "i2t": caption_prompt(vocab, "image", images, 5),
        "s2t": caption_prompt(vocab, "audio", codes, 5),
        "text": continuation_prompt(vocab, texts, 7),
        "infill": continuation_prompt(vocab, texts, 4, suffixes=[np.array([3, 3]), np.array([1])]),
    }


CONFIGS = [
    SamplingConfig(steps=4, temperature=0.0),
    SamplingConfig(steps=3, temperature=1.0, schedule="cosine", top_k=3),
    SamplingConfig(steps=20, temperature=0.7, schedule="poly", top_p=0.8, remasking="random"),
    SamplingConfig(steps=0, temperature=0.0, block_length=2),
    SamplingConfig(steps=5, temperature=1.0, cfg_scale=2.0),
]


@pytest.mark.parametrize("direction", ["t2i", "t2s", "i2t", "s2t", "text", "infill"])
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_output_is_complete_prompt_kept_and_in_target_ranges(direction, ci):
    cfg = CONFIGS[ci]
    prompt = prompts(VOCAB)[direction]
    if cfg.cfg_scale is not None and not prompt.condition.any():
        with pytest.raises(SamplingError, match="condition"):
            generate(lookup_model(VOCAB), VOCAB, prompt, cfg)
        return
    out = generate(lookup_model(VOCAB), VOCAB, prompt, cfg)
    target = prompt.target
    # no MASK anywhere in the generated span, prompt untouched
    masks = torch.from_numpy(VOCAB.mask_ids())
    assert not torch.isin(out[target], masks).any()
    assert torch.equal(out[~target], prompt.tokens[~target])
    # only ids of the target modality (and of the right audio codebook, frame-major)
    lo, hi = VOCAB.range(prompt.modality)
    assert ((out[target] >= lo) & (out[target] < hi)).all()
    assert ((out[target] >= prompt.lo[target]) & (out[target] < prompt.hi[target])).all()
    if direction == "t2s":
        for b, (s, e) in enumerate(prompt.spans):
            VOCAB.audio_to_local(out[b, s:e].numpy(), 3)  # raises if a codebook is wrong


def test_target_span_positions_follow_the_pair_layout():
    p = prompts(VOCAB)["t2i"]
    row = p.tokens[0].tolist()
    assert row[0] == VOCAB.task("image_text") and row[1] == VOCAB.bos("image")
    assert row[2:8] == [VOCAB.mask("image")] * 6
    assert row[8:10] == [VOCAB.eos("image"), VOCAB.bos("text")]
    assert row[10:13] == [1, 2, 3] and row[13] == VOCAB.eos("text")
    assert p.spans[0] == (2, 8)
    assert p.pad_mask[0, 14:].all() and not p.pad_mask[1].any()
    assert p.condition[0].nonzero().flatten().tolist() == [10, 11, 12]


def test_prompts_match_the_packers_layout():
    from trimodal.packing.layout import pair_tokens

    text = np.array([4, 5, 6, 7, 8, 9])
    for media, n, g in (("image", 6, VOCAB.to_global("image", np.arange(6))),
                        ("audio", 12, VOCAB.audio_to_global(np.arange(12).reshape(3, 4) % 8))):
        packed, spans, _ = pair_tokens(VOCAB, f"{media}_text", media, g, text, 40, "drop", "k")
        mine, m_span, t_span = pair_layout(VOCAB, f"{media}_text", media, g, VOCAB.to_global("text", text))
        np.testing.assert_array_equal(packed[: mine.size], mine)
        assert (packed[mine.size:] == VOCAB.pad).all()
        assert spans == [(media, m_span[0] - 1, m_span[1] + 1), ("text", t_span[0] - 1, t_span[1] + 1)]
        # the sampling prompt is that sequence with the target replaced by MASK
        prompt = media_prompt(VOCAB, [text], media, n, n_q=3, pad_to=40)
        expect = packed.astype(np.int64).copy()
        expect[m_span[0]:m_span[1]] = VOCAB.mask(media)
        np.testing.assert_array_equal(prompt.tokens[0].numpy(), expect)
    # text: BOS_text ids EOS_text, no TASK token, as the packer writes documents
    p = continuation_prompt(VOCAB, [np.array([1, 2])], 3)
    assert p.tokens[0].tolist() == [VOCAB.bos("text"), 1, 2] + [VOCAB.mask("text")] * 3 + [VOCAB.eos("text")]


def test_deterministic_with_seed():
    prompt = prompts(VOCAB)["t2i"]
    fn = lookup_model(VOCAB)
    cfg = SamplingConfig(steps=3, temperature=1.0, seed=7)
    a = generate(fn, VOCAB, prompt, cfg)
    b = generate(fn, VOCAB, prompt, cfg)
    assert torch.equal(a, b)
    others = [generate(fn, VOCAB, prompt, cfg.replace(seed=s)) for s in range(8, 12)]
    assert any(not torch.equal(a, o) for o in others)


def test_cfg_zero_equals_conditional_and_guidance_changes_the_sample():
    prompt = prompts(VOCAB)["t2s"]
    fn = lookup_model(VOCAB, seed=3)
    base = SamplingConfig(steps=4, temperature=1.0, seed=1)
    cond = generate(fn, VOCAB, prompt, base)
    calls = []

    def counting(tokens, pad):
        calls.append(tokens.shape[0])
        return fn(tokens, pad)

    w0 = generate(counting, VOCAB, prompt, base.replace(cfg_scale=0.0))
    assert set(calls) == {2 * prompt.tokens.shape[0]}  # one batched forward of 2B per step
    assert torch.equal(w0, cond)
    strong = generate(fn, VOCAB, prompt, base.replace(cfg_scale=5.0))
    assert not torch.equal(strong, cond)


def test_unconditional_pass_masks_only_the_condition_content():
    prompt = prompts(VOCAB)["i2t"]
    seen = []

    def spy(tokens, pad):
        seen.append(tokens.clone())
        return lookup_model(VOCAB)(tokens, pad)

    generate(spy, VOCAB, prompt, SamplingConfig(steps=1, temperature=0.0, cfg_scale=1.0))
    B = prompt.tokens.shape[0]
    cond, uncond = seen[0][:B], seen[0][B:]
    assert torch.equal(cond, prompt.tokens)
    assert (uncond[prompt.condition] == VOCAB.mask("image")).all()
    assert torch.equal(uncond[~prompt.condition], cond[~prompt.condition])


def test_semi_autoregressive_blocks_unmask_left_to_right():
    prompt = continuation_prompt(VOCAB, [np.array([1, 2])], 12)
    mask = VOCAB.mask("text")
    history = []
    cfg = SamplingConfig(steps=6, temperature=1.0, block_length=4, remasking="random")
    out = generate(lookup_model(VOCAB), VOCAB, prompt, cfg,
                   on_step=lambda s, x: history.append((x[0] != mask).clone()))
    s, e = prompt.spans[0]
    assert len(history) == 6  # 2 steps per block
    for done in history:
        span = done[s:e].tolist()
        # once a position is still masked, no later block may have anything committed
        first_open_block = next((i // 4 for i, d in enumerate(span) if not d), 99)
        assert not any(span[(first_open_block + 1) * 4:])
    assert (out[0, s:e] != mask).all()


def test_block_ids_rank_target_positions():
    target = torch.tensor([[False, True, True, True, False, True, True]])
    assert block_ids(target, 2).tolist() == [[-1, 0, 0, 1, -1, 1, 2]]
    assert block_ids(target, 0).tolist() == [[-1, 0, 0, 0, -1, 0, 0]]


@pytest.mark.parametrize("kind", ["linear", "cosine", "poly"])
@pytest.mark.parametrize("steps", [1, 3, 16, 40])
def test_unmask_counts_follow_the_schedule_and_sum_to_n(kind, steps):
    n = torch.tensor([0, 1, 7, 30])
    sched = MaskSchedule(kind, 3.0)
    counts = unmask_counts(n, steps, sched)
    assert counts.shape == (steps, 4)
    assert (counts >= 0).all() and torch.equal(counts.sum(0), n)
    remaining = n - counts.cumsum(0)
    t = 1 - torch.arange(1, steps + 1, dtype=torch.float64) / steps
    expected = torch.round(30 * sched.beta(t)).long()
    assert torch.equal(remaining[:, 3], expected)


def test_draw_is_greedy_at_zero_and_matches_softmax_when_sampling():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    choice, prob = draw(logits.repeat(5, 1), SamplingConfig(temperature=0.0), g)
    assert choice.tolist() == [0] * 5
    assert torch.allclose(prob, torch.softmax(logits, -1)[0, 0].expand(5))
    choice, _ = draw(logits.repeat(40000, 1), SamplingConfig(temperature=1.0), g)
    freq = torch.bincount(choice, minlength=4).double() / 40000
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.01)
    # tiny temperature with huge logits: float64 noise keeps it an exact argmax, no NaN
    big = torch.tensor([[1000.0, 999.0, -5.0]], dtype=torch.float64).repeat(100, 1)
    c, p = draw(big, SamplingConfig(temperature=1e-4), g)
    assert c.tolist() == [0] * 100 and torch.isfinite(p).all()


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64))
    assert torch.isinf(filter_logits(logits, 2, 1.0)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, 0, 0.75)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, 0, 0.85)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, 0, 0.1)).tolist() == [[False, True, True, True]]


def test_drop_condition_masks_text_of_pair_rows_only():
    pair, _, (t0, t1) = pair_layout(VOCAB, "image_text", "image",
                                    VOCAB.to_global("image", np.arange(4)), np.array([1, 2, 3]))
    text_row = np.concatenate([[VOCAB.task("text"), VOCAB.bos("text")], [5, 6, 7, 8, 9],
                               [VOCAB.eos("text")], [VOCAB.pad] * 6])
    pad = np.full(text_row.size - pair.size, VOCAB.pad)
    assert pad.size > 0
    batch = torch.from_numpy(np.stack([np.concatenate([pair, pad]), text_row]))
    g = torch.Generator().manual_seed(0)
    out, dropped = drop_condition(batch, 1.0, VOCAB, g)
    assert (out[0, t0:t1] == VOCAB.mask("text")).all()
    assert dropped[0].nonzero().flatten().tolist() == list(range(t0, t1))
    assert torch.equal(out[0, :t0], batch[0, :t0]) and torch.equal(out[0, t1:], batch[0, t1:])
    assert torch.equal(out[1], batch[1]) and not dropped[1].any()
    out, dropped = drop_condition(batch, 1.0, VOCAB, g, condition="media")
    assert (out[0, 2:6] == VOCAB.mask("image")).all() and dropped[0].sum() == 4
    out, dropped = drop_condition(batch, 0.0, VOCAB, g)
    assert torch.equal(out, batch) and not dropped.any()
    mask = condition_drop_mask(batch, 1.0, VOCAB, torch.Generator().manual_seed(3), "either")
    out, dropped = drop_condition(batch, 1.0, VOCAB, torch.Generator().manual_seed(3), "either")
    assert torch.equal(mask, dropped) and dropped[0].any() and not dropped[1].any()
    many = batch[:1].repeat(2000, 1)
    _, dropped = drop_condition(many, 0.25, VOCAB, g)
    assert 0.2 < dropped.any(1).float().mean().item() < 0.3


def test_sampler_directions_hand_codes_to_decoders():
    class Codec:
        def encode(self, texts):
            return [np.array([ord(c) % 20 for c in t]) for t in texts]

        def decode(self, ids):
            return ["".join(chr(97 + int(i)) for i in x) for x in ids]

    class Img:
        def decode(self, ids):
            assert isinstance(ids, list) and np.stack(ids).shape == (2, 2, 3)
            assert min(i.min() for i in ids) >= 0 and max(i.max() for i in ids) < 12
            return [f"image{i}" for i in range(len(ids))]

    class Aud:
        sample_rate = 100

        def decode(self, codes, lengths=None):
            assert isinstance(codes, list) and np.stack(codes).shape == (2, 3, 5)
            assert max(c.max() for c in codes) < 8
            return [np.zeros(50, np.float32)] * len(codes)

    s = Sampler(lookup_model(VOCAB), VOCAB, text=Codec(), image=Img(), audio=Aud())
    cfg = SamplingConfig(steps=3, temperature=1.0)
    assert s.t2i(["ab", "cde"], (2, 3), cfg) == ["image0", "image1"]
    assert len(s.t2s(["ab", "cde"], 3, 5, cfg)) == 2
    caps = s.i2t([np.zeros((2, 3), np.int64)] * 2, 4, cfg)
    assert len(caps) == 2 and all(len(c) == 4 for c in caps)
    assert all(len(c) == 6 for c in s.s2t([np.zeros((3, 5), np.int64)], 6, cfg))
    assert all(len(c) == 3 for c in s.text(["hello"], 3, cfg))
    with pytest.raises(SamplingError, match="image decoder"):
        Sampler(lookup_model(VOCAB), VOCAB, text=Codec()).t2i(["a"], (2, 3), cfg)


def test_config_defaults_roundtrip_and_validation():
    data = defaults_as_dict()
    assert set(data) == set(MODALITY_DEFAULTS)
    for m, d in data.items():
        assert from_dict(SamplingConfig, d) == default_config(m)
    assert default_config("text").steps == 0 and default_config("text").block_length == 32
    assert default_config("image", {"cfg_scale": None}).cfg_scale is None
    assert default_config("audio").replace(temperature=None, steps=8).steps == 8
    for bad in ({"temperature": -1}, {"top_p": 0}, {"schedule": "cubic"}, {"remasking": "x"},
                {"cfg_scale": -1.0}, {"steps": -2}):
        with pytest.raises(ConfigError):
            from_dict(SamplingConfig, bad)
    with pytest.raises(ConfigError):
        default_config("smell")
