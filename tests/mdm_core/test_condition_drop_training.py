"""Condition drop (CFG training) as the trainer applies it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trimodal.config import ConfigError
from trimodal.mdm_core.config import MaskingConfig
from trimodal.mdm_core.data import InMemoryBatches
from trimodal.mdm_core.loss import TokenTables, forward_process
from trimodal.mdm_core.schedules import MaskSchedule
from trimodal.mdm_core.trainer import drop_conditions, train

from .train_helpers import tiny_config, tiny_tokens, tiny_vocab


def _text_content(tokens: torch.Tensor, vocab) -> torch.Tensor:
    """Caption positions of pair rows (between BOS_text and EOS_text)."""
    out = torch.zeros_like(tokens, dtype=torch.bool)
    for i, row in enumerate(tokens.tolist()):
        if row[0] != vocab.task("image_text"):
            continue
        b, e = row.index(vocab.bos("text")), row.index(vocab.eos("text"))
        out[i, b + 1:e] = True
    return out


@pytest.mark.parametrize("anti", [False, True])
def test_dropped_captions_are_hidden_and_not_scored(anti):
    vocab = tiny_vocab()
    tokens = torch.from_numpy(tiny_tokens(16, seed=1))
    caption = _text_content(tokens, vocab)
    assert caption.any() and (~caption.any(1)).any()  # both pair and text-only rows
    tables = TokenTables.from_vocab(vocab)
    schedule = MaskSchedule.from_config(MaskingConfig())
    gen = torch.Generator().manual_seed(0)
    mb = forward_process(tokens, tables, schedule, 1e-3, gen, anti)
    before_inputs, before_masked = mb.inputs.clone(), mb.masked.clone()
    masking = MaskingConfig(cond_drop=1.0, anti_masking=anti)
    mb = drop_conditions(mb, tokens, masking, vocab, gen)
    if anti:
        caption = caption.repeat_interleave(2, dim=0)
    assert (mb.inputs[caption] == vocab.mask("text")).all()
    assert not (mb.masked & caption).any()
    # Everything else is as the forward process left it.
    torch.testing.assert_close(mb.inputs[~caption], before_inputs[~caption])
    assert torch.equal(mb.masked[~caption], before_masked[~caption])


def test_zero_drop_changes_nothing():
    vocab = tiny_vocab()
    tokens = torch.from_numpy(tiny_tokens(8))
    tables = TokenTables.from_vocab(vocab)
    mb = forward_process(tokens, tables, MaskSchedule.from_config(MaskingConfig()), 1e-3,
                         torch.Generator().manual_seed(0))
    inputs = mb.inputs.clone()
    out = drop_conditions(mb, tokens, MaskingConfig(), vocab, torch.Generator().manual_seed(0))
    assert torch.equal(out.inputs, inputs)


def test_trainer_with_condition_drop_runs_and_differs_from_without(tmp_path):
    vocab, tokens = tiny_vocab(), tiny_tokens()
    plain = train(tiny_config(str(tmp_path / "a"), max_steps=3), vocab, InMemoryBatches(tokens, 4))
    dropped = train(tiny_config(str(tmp_path / "b"), max_steps=3, **{"masking.cond_drop": 0.5}),
                    vocab, InMemoryBatches(tokens, 4))
    assert np.isfinite(dropped.losses).all()
    assert plain.losses != dropped.losses


def test_config_validation():
    with pytest.raises(ConfigError, match="cond_drop"):
        MaskingConfig(cond_drop=1.5)
    with pytest.raises(ConfigError, match="cond_drop_segment"):
        MaskingConfig(cond_drop_segment="image")
