"""Forward (masking) process and the ELBO-weighted masked cross-entropy.

Maskable positions: every token that belongs to a modality (its codes and, by default, its BOS
and EOS) — never PAD and never the TASK token, which the sampler always provides. EOS is
maskable by default because in packed text it is the only signal of where a document ends
(the model must learn to generate it); BOS is maskable by default for symmetry, and both are
options (`masking.mask_bos`, `masking.mask_eos`).

Loss normalisation (per sequence, then mean over the batch):

    loss_b = w(t_b) * sum_{i masked in b} CE_i  /  #maskable tokens in b

i.e. an unbiased per-token ELBO (nats per maskable token) of each sequence; sequences count
equally whatever their padding. Per-modality and per-task figures pool over the batch:
sum_b w_b * CE_{b,m} / sum_b #maskable_{b,m}.

Anti-masking (complementary masking): the rows of a batch come in pairs (2i, 2i+1) holding the
same sequence. One draw u ~ U[0,1) per position and one t per pair give the masks
m = (u < beta(t)) and its complement (u >= beta(t)) over the maskable positions, so each pair
supervises every maskable token exactly once. Row 2i is weighted by beta'(t)/beta(t) (the
usual ELBO weight) and row 2i+1, whose masking rate is 1 - beta(t), by beta'(t)/(1 - beta(t)),
which keeps both rows unbiased estimates of the same bound (for the linear schedule this is
the weight of time 1 - t). t is drawn in [eps, 1 - eps] so neither row is empty on purpose.
The batch has the same number of rows as without anti-masking: the reader supplies half as
many unique sequences and the compute per step is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trimodal.mdm_core.schedules import MaskSchedule, sample_t
from trimodal.packing.vocab import MODALITIES, Vocab

LN2 = math.log(2.0)


@dataclass
class TokenTables:
    """Per-id lookup tables derived from the vocabulary, so that masking is a gather on device."""

    modality: torch.Tensor  # [V] long: 0/1/2 or -1 for PAD/TASK
    maskable: torch.Tensor  # [V] bool
    task: torch.Tensor  # [V] long: task index for TASK ids, else -1
    mask_ids: torch.Tensor  # [3] long: MASK id per modality
    pad_id: int
    task_names: tuple[str, ...]

    @classmethod
    def from_vocab(cls, vocab: Vocab, mask_bos: bool = True, mask_eos: bool = True) -> "TokenTables":
        ids = np.arange(vocab.size)
        modality = vocab.modality_of(ids)
        maskable = modality >= 0
        for m in MODALITIES:
            maskable[vocab.mask(m)] = False  # a clean sequence never holds MASK
            if not mask_bos:
                maskable[vocab.bos(m)] = False
            if not mask_eos:
                maskable[vocab.eos(m)] = False
        task = np.full(vocab.size, -1, dtype=np.int64)
        for i, name in enumerate(vocab.spec.tasks):
            task[vocab.task(name)] = i
        return cls(torch.from_numpy(modality), torch.from_numpy(maskable), torch.from_numpy(task),
                   torch.from_numpy(vocab.mask_ids()), vocab.pad, tuple(vocab.spec.tasks))

    def to(self, device: torch.device | str) -> "TokenTables":
        return TokenTables(self.modality.to(device), self.maskable.to(device), self.task.to(device),
                           self.mask_ids.to(device), self.pad_id, self.task_names)


@dataclass
class MaskedBatch:
    inputs: torch.Tensor  # [B, L] tokens with masked positions replaced by MASK_m
    targets: torch.Tensor  # [B, L] clean tokens
    masked: torch.Tensor  # [B, L] bool
    maskable: torch.Tensor  # [B, L] bool
    modality: torch.Tensor  # [B, L] long
    pad: torch.Tensor  # [B, L] bool
    t: torch.Tensor  # [B]
    weight: torch.Tensor  # [B] ELBO weight of each row
    task: torch.Tensor  # [B] long task index or -1


def pair_rows(tokens: torch.Tensor) -> torch.Tensor:
    """[B, L] -> [2B, L] with each row repeated twice in place (rows 2i and 2i+1 equal)."""
    return tokens.repeat_interleave(2, dim=0)


def apply_masks(tokens: torch.Tensor, tables: TokenTables, masked: torch.Tensor,
                t: torch.Tensor, weight: torch.Tensor) -> MaskedBatch:
    """Build a MaskedBatch from explicit masks (also what the tests use with hand-made masks)."""
    modality = tables.modality[tokens]
    maskable = tables.maskable[tokens]
    masked = masked & maskable
    inputs = torch.where(masked, tables.mask_ids[modality.clamp(min=0)], tokens)
    task = tables.task[tokens].max(dim=1).values
    return MaskedBatch(inputs, tokens, masked, maskable, modality, tokens == tables.pad_id,
                       t, weight, task)


def forward_process(tokens: torch.Tensor, tables: TokenTables, schedule: MaskSchedule,
                    t_eps: float, generator: torch.Generator | None = None,
                    anti_masking: bool = False) -> MaskedBatch:
    """Mask a batch of clean sequences [B, L] at random times (see module doc).

    With anti_masking the result has 2B rows: each input row followed by its complement.
    """
    device = tokens.device
    if anti_masking:
        tokens = pair_rows(tokens)
        n = tokens.shape[0] // 2
        t = sample_t(n, t_eps, generator, upper=1.0 - t_eps, device=device)
        u = torch.rand(n, tokens.shape[1], generator=generator, device=device)
        beta = schedule.beta(t)[:, None]
        first = u < beta
        masked = torch.stack([first, ~first], dim=1).reshape(2 * n, -1)
        weight = torch.stack([schedule.weight(t), schedule.complement_weight(t)], dim=1).reshape(-1)
        t = t.repeat_interleave(2)
    else:
        n = tokens.shape[0]
        t = sample_t(n, t_eps, generator, device=device)
        u = torch.rand(n, tokens.shape[1], generator=generator, device=device)
        masked = u < schedule.beta(t)[:, None]
        weight = schedule.weight(t)
    return apply_masks(tokens, tables, masked, t, weight)


def mdm_loss(logits: torch.Tensor, mb: MaskedBatch, tables: TokenTables | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ELBO-weighted CE (module doc) and raw per-modality/per-task sums for logging.

    The stats are [numerator, denominator] tensors so that micro-steps and ranks can be summed
    before dividing (see `summarize`).
    """
    B, L, V = logits.shape
    rows, cols = mb.masked.nonzero(as_tuple=True)
    ce = F.cross_entropy(logits[rows, cols].float(), mb.targets[rows, cols], reduction="none")
    w = mb.weight.to(ce.dtype)
    n_tok = mb.maskable.sum(dim=1).clamp(min=1).to(ce.dtype)
    per_row = torch.zeros(B, dtype=ce.dtype, device=ce.device).index_add_(0, rows, ce)
    loss = (w * per_row / n_tok).mean()

    stats: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        # Vectorised sums (a few kernels, not one per modality/task): [numerator, denominator].
        dt, dev = ce.dtype, ce.device
        n_mod = len(MODALITIES)
        wce = ce.detach() * w[rows]
        mod = mb.modality[rows, cols]
        maskable_mod = mb.modality[mb.maskable]
        elbo_num = torch.zeros(n_mod, dtype=dt, device=dev).index_add_(0, mod, wce)
        ce_num = torch.zeros(n_mod, dtype=dt, device=dev).index_add_(0, mod, ce.detach())
        masked_n = torch.bincount(mod, minlength=n_mod).to(dt)
        maskable_n = torch.bincount(maskable_mod, minlength=n_mod).to(dt)
        stats["elbo"] = torch.stack([(w * per_row.detach() / n_tok).sum(), torch.tensor(float(B), device=dev)])
        for i, m in enumerate(MODALITIES):
            stats[f"elbo/{m}"] = torch.stack([elbo_num[i], maskable_n[i]])
            stats[f"ce/{m}"] = torch.stack([ce_num[i], masked_n[i]])
        if tables is not None:
            # Every task key is always present (zero sums included) so that ranks can
            # all-reduce the same set of tensors; `summarize` drops empty ones.
            n_t = len(tables.task_names) + 1  # slot 0: rows without a TASK token
            task_num = torch.zeros(n_t, dtype=dt, device=dev).index_add_(0, mb.task[rows] + 1, wce)
            task_den = torch.zeros(n_t, dtype=dt, device=dev).index_add_(
                0, mb.task + 1, mb.maskable.sum(dim=1).to(dt))
            for i, name in enumerate(tables.task_names):
                stats[f"elbo/task/{name}"] = torch.stack([task_num[i + 1], task_den[i + 1]])
    return loss, stats


def summarize(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sums -> figures: nats per token for each stat, plus bits per token for ELBO stats."""
    out: dict[str, float] = {}
    for name, pair in stats.items():
        num, den = float(pair[0]), float(pair[1])
        if den <= 0:
            continue
        out[name] = num / den
        if name.startswith("elbo"):
            out["bpt" + name[4:]] = num / den / LN2
    return out


def add_stats(acc: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for k, v in new.items():
        acc[k] = acc[k] + v if k in acc else v.clone()
    return acc
