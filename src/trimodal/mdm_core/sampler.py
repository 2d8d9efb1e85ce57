"""Iterative unmasking: generate a target span conditioned on the rest of the sequence.

The sampler runs the reverse of the training forward process. A target span starts as all
MASK (t = 1); step s of S moves time to t = 1 - s/S, and the number of target positions still
masked after the step is round(N * beta(t)) for the *training* masking schedule beta, so the
model sees masking rates in the order it was trained on them. Each step the model predicts
every masked position; a prediction is drawn per position (argmax, or Gumbel-max in float64
with temperature / top-k / top-p), and the step's quota of positions is committed: the most
confident ones ("low_confidence" remasking: the rest stay masked, MaskGIT / LLaDA) or random
ones. Committed tokens never change again, which is what the absorbing forward process allows.

Why float64 Gumbel noise: at low temperature logits/T becomes huge, and bf16/fp32 logits
plus fp32 noise round many candidates to the same value, which silently turns sampling into a
biased argmax (LLaDA found this in practice). Doing the noise and the division in float64
keeps the categorical exact.

Why logits are restricted per position: a target of modality m must only produce m's codes
(audio: each position its own codebook range, frame-major), never BOS/EOS/MASK/PAD/TASK. The
restriction is applied on a column slice of the logits (the modality's range), so the
float64 work is [masked positions x range], not [B x L x V].

Classifier-free guidance runs the conditional input and the input with the condition's
content tokens replaced by their modality's MASK as one batch of 2B, and mixes the two in
float64: un + (w + 1) * (cond - un).

The model is any callable `logits_fn(tokens [B, L] long, pad_mask [B, L] bool, True at PAD)
-> logits [B, L, V]`, so this module never needs a checkpoint (and never imports a codec:
decoding goes through `mdm_core.decoders`).
"""

from __future__ import annotations

import logging
import math
import posixpath
from dataclasses import dataclass
from typing import Callable, Sequence

import fsspec
import numpy as np
import torch

from trimodal.errors import UserError
from trimodal.mdm_core.decoders import AudioDecoder, ImageDecoder, TextCodec
from trimodal.mdm_core.sampling_config import SamplingConfig
from trimodal.mdm_core.schedules import MaskSchedule
from trimodal.packing.vocab import Vocab

log = logging.getLogger(__name__)

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Which TASK token a model saw for each generation direction (pairs are stored media first,
#: text second whatever the direction; the direction is implied by what is masked). Packed
#: text sequences carry no TASK token (packing.packer), hence "" for text.
TRAINED_TASK: dict[str, str] = {
    "text": "", "t2i": "image_text", "i2t": "image_text",
    "t2s": "audio_text", "s2t": "audio_text",
}


class SamplingError(UserError, ValueError):
    """A prompt or request cannot be sampled; the message says why."""


# --- prompts --------------------------------------------------------------------------------
@dataclass
class Prompt:
    """A batch of sequences with the positions to generate.

    tokens: [B, L] long, target positions hold MASK of the target modality.
    target: [B, L] bool, positions to generate.
    lo, hi: [B, L] long, allowed global id range per position (used at target positions).
    condition: [B, L] bool, positions replaced by MASK of their modality for the
        unconditional (CFG) pass: the condition segment's content tokens.
    pad_mask: [B, L] bool, True at PAD.
    spans: per row, the (start, end) of the target's content (no BOS/EOS).
    """

    tokens: torch.Tensor
    target: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    condition: torch.Tensor
    pad_mask: torch.Tensor
    modality: str
    spans: list[tuple[int, int]]

    def to(self, device: torch.device | str) -> "Prompt":
        device = torch.device(device)

        def move(t: torch.Tensor) -> torch.Tensor:
            # Pinned host memory lets the copy to a GPU run asynchronously.
            if device.type == "cuda" and t.device.type == "cpu":
                t = t.pin_memory()
            return t.to(device, non_blocking=True)

        return Prompt(move(self.tokens), move(self.target), move(self.lo), move(self.hi),
                      move(self.condition), move(self.pad_mask), self.modality, list(self.spans))


@dataclass
class _Row:
    tokens: np.ndarray
    target: tuple[int, int]
    condition: tuple[int, int] | None
    lo: np.ndarray
    hi: np.ndarray


def pair_layout(vocab: Vocab, task: str, media: str, media_ids: np.ndarray,
                text_ids: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The training layout of a pair from *global* ids (`packing.layout.pair_tokens` without
    the padding): [TASK] [BOS_m] media [EOS_m] [BOS_text] text [EOS_text].
    Returns the tokens and the (start, end) of the media and text contents."""
    media_ids = np.asarray(media_ids, dtype=np.int64).reshape(-1)
    text_ids = np.asarray(text_ids, dtype=np.int64).reshape(-1)
    parts = [[vocab.task(task), vocab.bos(media)], media_ids, [vocab.eos(media), vocab.bos("text")],
             text_ids, [vocab.eos("text")]]
    tokens = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    m0 = 2
    t0 = m0 + media_ids.size + 2
    return tokens, (m0, m0 + media_ids.size), (t0, t0 + text_ids.size)


def text_layout(vocab: Vocab, text_ids: np.ndarray, task: str | None = None) -> tuple[np.ndarray, int]:
    """A text document from global ids: [BOS_text] text [EOS_text], as the packer writes it
    (optionally after a TASK token). Returns the tokens and where the text starts."""
    head = ([vocab.task(task)] if task else []) + [vocab.bos("text")]
    tokens = np.concatenate([np.asarray(head, dtype=np.int64), np.asarray(text_ids, dtype=np.int64).reshape(-1),
                             np.asarray([vocab.eos("text")], dtype=np.int64)])
    return tokens, len(head)


def _range_rows(vocab: Vocab, modality: str, n: int, n_q: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Allowed [lo, hi) per target position: the modality's range, or for separate audio
    codebooks, codebook (j mod n_q) of a frame-major layout."""
    if modality == "audio" and not vocab.spec.audio_shared:
        q = np.arange(n) % n_q
        K = vocab.spec.audio_codebook_size
        lo = vocab.audio_offset + q * K
        return lo.astype(np.int64), (lo + K).astype(np.int64)
    lo, hi = vocab.range(modality)
    return np.full(n, lo, np.int64), np.full(n, hi, np.int64)


def _stack(vocab: Vocab, rows: list[_Row], modality: str, pad_to: int | None) -> Prompt:
    """Right-pad rows with PAD to one length (the training layout pads the same way)."""
    if not rows:
        raise SamplingError("empty prompt batch")
    L = max(r.tokens.size for r in rows)
    if pad_to is not None:
        if pad_to < L:
            raise SamplingError(f"prompt needs {L} positions but pad_to is {pad_to}")
        L = pad_to
    B = len(rows)
    tokens = np.full((B, L), vocab.pad, np.int64)
    target = np.zeros((B, L), bool)
    cond = np.zeros((B, L), bool)
    lo = np.zeros((B, L), np.int64)
    hi = np.zeros((B, L), np.int64)
    for b, r in enumerate(rows):
        n = r.tokens.size
        tokens[b, :n] = r.tokens
        s, e = r.target
        target[b, s:e] = True
        tokens[b, s:e] = vocab.mask(modality)
        lo[b, s:e], hi[b, s:e] = r.lo, r.hi
        if r.condition is not None:
            cond[b, r.condition[0]:r.condition[1]] = True
    return Prompt(torch.from_numpy(tokens), torch.from_numpy(target), torch.from_numpy(lo),
                  torch.from_numpy(hi), torch.from_numpy(cond), torch.from_numpy(tokens == vocab.pad),
                  modality, [r.target for r in rows])


def media_prompt(vocab: Vocab, texts: Sequence[np.ndarray], media: str, n_positions: int,
                 n_q: int = 1, task: str | None = None, pad_to: int | None = None) -> Prompt:
    """Text -> media (t2i, t2s): the media segment is the target, the text the condition.

    `texts` are local text ids; `n_positions` is h*w for images, frames*n_q for audio."""
    if media not in ("image", "audio"):
        raise SamplingError(f"media must be image or audio, got {media!r}")
    if media == "audio" and (n_q <= 0 or n_positions % n_q):
        raise SamplingError(f"{n_positions} audio positions do not split into {n_q} codebooks")
    task = task or f"{media}_text"
    rows = []
    for i, t in enumerate(texts):
        text = vocab.to_global("text", np.asarray(t), where=f"prompt {i}")
        toks, m_span, t_span = pair_layout(vocab, task, media, np.zeros(n_positions, np.int64), text)
        lo, hi = _range_rows(vocab, media, n_positions, n_q)
        rows.append(_Row(toks, m_span, t_span, lo, hi))
    return _stack(vocab, rows, media, pad_to)


def caption_prompt(vocab: Vocab, media: str, media_ids: Sequence[np.ndarray], length: int,
                   task: str | None = None, pad_to: int | None = None) -> Prompt:
    """Media -> text (i2t, s2t): the text segment (`length` positions) is the target.

    `media_ids` are local ids: images [h, w] (or flat), audio codes [n_q, frames]."""
    if length <= 0:
        raise SamplingError(f"text length must be > 0, got {length}")
    task = task or f"{media}_text"
    rows = []
    for i, m in enumerate(media_ids):
        where = f"prompt {i}"
        if media == "audio":
            g = vocab.audio_to_global(np.asarray(m), where=where)
        elif media == "image":
            g = vocab.to_global("image", np.asarray(m).reshape(-1), where=where)
        else:
            raise SamplingError(f"media must be image or audio, got {media!r}")
        toks, m_span, t_span = pair_layout(vocab, task, media, g, np.zeros(length, np.int64))
        lo, hi = _range_rows(vocab, "text", length)
        rows.append(_Row(toks, t_span, m_span, lo, hi))
    return _stack(vocab, rows, "text", pad_to)


def continuation_prompt(vocab: Vocab, prefixes: Sequence[np.ndarray], length: int,
                        suffixes: Sequence[np.ndarray] | None = None, task: str | None = None,
                        pad_to: int | None = None) -> Prompt:
    """Text continuation (prefix + `length` new ids) or infilling (prefix + new + suffix).

    Local text ids in; there is no condition to drop, so CFG does not apply."""
    if length <= 0:
        raise SamplingError(f"text length must be > 0, got {length}")
    suffixes = suffixes if suffixes is not None else [np.zeros(0, np.int64)] * len(prefixes)
    if len(suffixes) != len(prefixes):
        raise SamplingError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
    rows = []
    for i, (p, s) in enumerate(zip(prefixes, suffixes)):
        p = vocab.to_global("text", np.asarray(p).reshape(-1), where=f"prompt {i}")
        s = vocab.to_global("text", np.asarray(s).reshape(-1), where=f"suffix {i}")
        toks, start = text_layout(vocab, np.concatenate([p, np.zeros(length, np.int64), s]), task)
        t0 = start + p.size
        lo, hi = _range_rows(vocab, "text", length)
        rows.append(_Row(toks, (t0, t0 + length), None, lo, hi))
    return _stack(vocab, rows, "text", pad_to)


def unconditional_tokens(vocab: Vocab, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """`tokens` with the condition positions replaced by MASK of each position's modality."""
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab.size):
        raise SamplingError(f"token id out of vocabulary range [0, {vocab.size})")
    # A gather from a [V] table on the tokens' device: no host round trip in a training step.
    modality = modality_table(vocab).to(tokens.device)[tokens]
    if bool((condition & (modality < 0)).any()):
        raise SamplingError("a condition position holds PAD or a TASK token, which has no MASK")
    masks = torch.from_numpy(vocab.mask_ids()).to(tokens.device)
    return torch.where(condition, masks[modality.clamp(min=0)], tokens)


# --- the sampling step ----------------------------------------------------------------------
def unmask_counts(n: torch.Tensor, steps: int, schedule: MaskSchedule) -> torch.Tensor:
    """[steps, B] positions to commit per step so that round(n * beta(1 - s/steps)) stay
    masked after step s; every column sums to n (the last step reaches beta(0) = 0)."""
    t = 1.0 - torch.arange(0, steps + 1, dtype=torch.float64) / steps
    beta = schedule.beta(t).clamp(0.0, 1.0)
    beta[0], beta[-1] = 1.0, 0.0
    remaining = torch.round(n.to(torch.float64)[None, :].cpu() * beta[:, None]).long()
    # A schedule is monotone, but guard against rounding making a count negative.
    remaining = torch.cummin(remaining, dim=0).values
    return (remaining[:-1] - remaining[1:]).to(n.device)


def gumbel_noise(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise in float64 (see module docstring for why float64)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    return -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-16)))


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set everything outside the top-k / nucleus to -inf (rows of a [M, V] tensor)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop an id when the mass *before* it already reaches top_p (the first always stays).
        drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def draw(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 logits [M, R] -> (choice [M], its probability [M]) under the filtered,
    tempered distribution (greedy when temperature is 0)."""
    logits = filter_logits(logits, cfg.top_k, cfg.top_p)
    if cfg.temperature == 0:
        choice = logits.argmax(dim=-1)
        probs = torch.softmax(logits, dim=-1)
    else:
        scaled = logits / cfg.temperature
        choice = (scaled + gumbel_noise(scaled.shape, generator, scaled.device)).argmax(dim=-1)
        probs = torch.softmax(scaled, dim=-1)
    return choice, probs.gather(-1, choice[:, None]).squeeze(-1)


def block_ids(target: torch.Tensor, block_length: int) -> torch.Tensor:
    """[B, L] block index of each target position (-1 elsewhere): the k-th target position
    of a row (left to right) is in block k // block_length."""
    rank = torch.cumsum(target.long(), dim=1) - 1
    if block_length <= 0:
        return torch.where(target, torch.zeros_like(rank), torch.full_like(rank, -1))
    return torch.where(target, rank // block_length, torch.full_like(rank, -1))


def _forward(logits_fn: LogitsFn, x: torch.Tensor, pad: torch.Tensor, uncond: torch.Tensor | None,
             cfg: SamplingConfig) -> torch.Tensor:
    device_type = x.device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=cfg.bf16):
        if uncond is None:
            return logits_fn(x, pad)
        # One forward of 2B; the caller reads rows b (conditional) and B + b (unconditional).
        return logits_fn(torch.cat([x, uncond]), torch.cat([pad, pad]))


@torch.inference_mode()
def generate(logits_fn: LogitsFn, vocab: Vocab, prompt: Prompt, cfg: SamplingConfig,
             generator: torch.Generator | None = None, progress: bool = False,
             on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Unmask `prompt.target` and return the completed tokens [B, L] (a new tensor).

    Only target positions change; each gets an id in its allowed range. `on_step(step, x)`
    (optional) sees the sequence after every step (tests, visualisations).
    """
    x = prompt.tokens.clone()
    device = x.device
    target, pad = prompt.target, prompt.pad_mask
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    if bool((target & pad).any()):
        raise SamplingError("a target position is PAD")
    span_lo = int(prompt.lo[target].min()) if bool(target.any()) else 0
    span_hi = int(prompt.hi[target].max()) if bool(target.any()) else 0
    schedule = MaskSchedule(cfg.schedule, cfg.schedule_exponent)
    uncond_template = None
    if cfg.cfg_scale is not None:
        if not bool(prompt.condition.any()):
            raise SamplingError("classifier-free guidance needs a condition segment; this prompt has none")
        uncond_template = unconditional_tokens(vocab, x, prompt.condition)

    blocks = block_ids(target, cfg.block_length)
    n_blocks = int(blocks.max()) + 1 if bool(target.any()) else 0
    total = int(target.sum(dim=1).max()) if n_blocks else 0
    steps = cfg.steps or total
    steps_per_block = max(1, math.ceil(steps / max(n_blocks, 1)))
    still = target.clone()
    done = 0
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_blocks * steps_per_block, desc="sampling", disable=not progress, leave=False)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        bar = None
    for b in range(n_blocks):
        in_block = blocks == b
        counts = unmask_counts(in_block.sum(dim=1), steps_per_block, schedule)
        for s in range(steps_per_block):
            k = counts[s]
            if bar is not None:
                bar.update(1)
            if int(k.sum()) == 0:
                continue
            uncond = None if uncond_template is None else torch.where(prompt.condition, uncond_template, x)
            logits = _forward(logits_fn, x, pad, uncond, cfg)
            cand = still & in_block
            rows, cols = cand.nonzero(as_tuple=True)
            sel = logits[rows, cols, span_lo:span_hi].to(torch.float64)
            if uncond is not None:
                B = x.shape[0]
                un = logits[rows + B, cols, span_lo:span_hi].to(torch.float64)
                sel = un + (cfg.cfg_scale + 1.0) * (sel - un)
            ids = torch.arange(span_lo, span_hi, device=device)
            allowed = (ids[None, :] >= prompt.lo[rows, cols, None]) & (ids[None, :] < prompt.hi[rows, cols, None])
            sel = sel.masked_fill(~allowed, -math.inf)
            choice, prob = draw(sel, cfg, generator)
            if cfg.remasking == "low_confidence":
                conf = prob
            else:
                conf = torch.rand(prob.shape, generator=generator, device=device, dtype=torch.float64)
            score = torch.full(x.shape, -math.inf, dtype=torch.float64, device=device)
            score[rows, cols] = conf
            order = torch.argsort(score, dim=1, descending=True, stable=True)
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(x.shape[1], device=device).expand_as(order))
            commit = cand & (rank < k[:, None])
            proposal = x.clone()
            proposal[rows, cols] = choice + span_lo
            x = torch.where(commit, proposal, x)
            still &= ~commit
            done += 1
            if on_step is not None:
                on_step(done, x)
    if bar is not None:
        bar.close()
    if bool(still.any()):  # cannot happen: the counts of every block sum to its size
        raise SamplingError("internal: target positions left masked")
    log.debug("sampled %d target positions in %d forward passes", int(target.sum()), done)
    return x


# --- condition drop for CFG training ------------------------------------------------------
def condition_drop_mask(tokens: torch.Tensor, p: float, vocab: Vocab, generator: torch.Generator | None = None,
                        condition: str = "text") -> torch.Tensor:
    """[B, L] bool: the condition content of pair rows, chosen with probability p per row.

    What classifier-free guidance needs at training time: the model must also learn
    p(media | no text) so the sampler's unconditional pass means something. Rows are
    recognised from their *clean* tokens (a pair starts with its TASK token, then [BOS_m] media
    [EOS_m] [BOS_text] text [EOS_text]); text-only rows are never chosen. `condition` is the
    segment dropped: "text" (for t2i / t2s guidance), "media" (i2t / s2t), or "either" (each
    chosen row picks one of the two at random).

    Trainer code path (compute the mask on the clean batch: noising may hide BOS/EOS)::

        dropped = condition_drop_mask(tokens, p, vocab, gen)
        mb = forward_process(tokens, tables, schedule, t_eps, gen, anti_masking)
        if anti_masking:
            dropped = pair_rows(dropped)
        mb.inputs = unconditional_tokens(vocab, mb.inputs, dropped)
        mb.masked &= ~dropped     # no loss on a condition the model was not shown
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"condition drop: p must be in [0, 1], got {p}")
    if condition not in ("text", "media", "either"):
        raise ValueError(f"condition drop: condition must be text, media or either, got {condition!r}")
    B, L = tokens.shape
    device = tokens.device
    if p == 0.0 or B == 0:
        return torch.zeros_like(tokens, dtype=torch.bool)
    pair_tasks = [vocab.task(t) for t in ("image_text", "audio_text", "t2i", "i2t", "t2s", "s2t")
                  if t in vocab.spec.tasks]
    is_pair = torch.isin(tokens[:, 0], torch.tensor(pair_tasks, device=device))
    chosen = torch.rand(B, generator=generator, device=device) < p
    pick_text = torch.rand(B, generator=generator, device=device) < 0.5
    pos = torch.arange(L, device=device)[None, :]

    def first(ids: list[int]) -> torch.Tensor:
        hit = torch.isin(tokens, torch.tensor(ids, device=device))
        return torch.where(hit.any(1), hit.int().argmax(1), torch.full((B,), -1, device=device))

    bos_t, eos_t = first([vocab.bos("text")]), first([vocab.eos("text")])
    bos_m = first([vocab.bos("image"), vocab.bos("audio")])
    eos_m = first([vocab.eos("image"), vocab.eos("audio")])
    text_span = (pos > bos_t[:, None]) & (pos < eos_t[:, None])
    media_span = (pos > bos_m[:, None]) & (pos < eos_m[:, None])
    valid = is_pair & chosen & (bos_t >= 0) & (eos_t > bos_t) & (bos_m >= 0) & (eos_m > bos_m)
    if condition == "text":
        span = text_span
    elif condition == "media":
        span = media_span
    else:
        span = torch.where(pick_text[:, None], text_span, media_span)
    return span & valid[:, None]


def drop_condition(tokens: torch.Tensor, p: float, vocab: Vocab, generator: torch.Generator | None = None,
                   condition: str = "text") -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the condition segment of pair rows by MASK with probability p per row.

    Returns (new tokens, dropped [B, L] bool); see `condition_drop_mask` for the rules and for
    how the trainer should combine it with the forward process."""
    dropped = condition_drop_mask(tokens, p, vocab, generator, condition)
    return unconditional_tokens(vocab, tokens, dropped), dropped


# --- decoding back to local ids -------------------------------------------------------------
def target_ids(vocab: Vocab, tokens: torch.Tensor, prompt: Prompt) -> list[np.ndarray]:
    """The generated span of each row as *global* ids (numpy)."""
    arr = tokens.cpu().numpy()
    return [arr[b, s:e].copy() for b, (s, e) in enumerate(prompt.spans)]


def image_codes(vocab: Vocab, tokens: torch.Tensor, prompt: Prompt, grid: tuple[int, int]) -> np.ndarray:
    """Generated image spans -> local codes [B, h, w] (row-major, as the image tokenizer writes)."""
    h, w = grid
    return np.stack([vocab.to_local("image", g).reshape(h, w) for g in target_ids(vocab, tokens, prompt)])


def audio_codes(vocab: Vocab, tokens: torch.Tensor, prompt: Prompt, n_q: int) -> np.ndarray:
    """Generated audio spans (frame-major) -> local codes [B, n_q, frames]."""
    return np.stack([vocab.audio_to_local(g, n_q) for g in target_ids(vocab, tokens, prompt)])


def text_codes(vocab: Vocab, tokens: torch.Tensor, prompt: Prompt) -> list[np.ndarray]:
    return [vocab.to_local("text", g) for g in target_ids(vocab, tokens, prompt)]



# --- models and the task-level API ----------------------------------------------------------
def modality_table(vocab: Vocab) -> torch.Tensor:
    """[V] modality index of every id (-1 for PAD/TASK): the model's `modality` argument,
    computed on-device by a gather instead of a numpy round trip per step."""
    return torch.from_numpy(vocab.modality_of(np.arange(vocab.size)))


def model_logits_fn(model: torch.nn.Module, vocab: Vocab) -> LogitsFn:
    """Adapt `mdm_core.model.MDMTransformer` (forward(tokens, modality, pad_mask)) to a LogitsFn."""
    device = next(model.parameters()).device
    table = modality_table(vocab).to(device)

    def logits_fn(tokens: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        return model(tokens, modality=table[tokens], pad_mask=pad_mask)

    return logits_fn


def load_model(checkpoint: str, vocab: Vocab | None = None,
               device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Vocab]:
    """A trained model in eval mode and its vocabulary, from a run folder (its `latest`
    checkpoint) or one `step_*` folder. The vocabulary defaults to the run's `vocab.json`;
    a vocabulary whose hash differs from the checkpoint's is refused."""
    from trimodal.config import from_dict  # noqa: PLC0415
    from trimodal.mdm_core import checkpoint as ckpt  # noqa: PLC0415
    from trimodal.mdm_core.config import TrainConfig  # noqa: PLC0415
    from trimodal.mdm_core.trainer import build_model  # noqa: PLC0415

    checkpoint = checkpoint.rstrip("/")
    ckpt_dir = ckpt.latest_checkpoint(checkpoint) or checkpoint
    state, config, vocab_hash = ckpt.load_model_weights(ckpt_dir, map_location="cpu")
    if vocab is None:
        candidates = [posixpath.join(checkpoint, "vocab.json"), posixpath.join(posixpath.dirname(ckpt_dir), "vocab.json")]
        for path in candidates:
            fs, local = fsspec.core.url_to_fs(path)
            if fs.exists(local):
                vocab = Vocab.load(path)
                break
        else:
            raise SamplingError(f"{checkpoint}: no vocab.json next to the checkpoint; pass the vocabulary")
    vocab.check_hash(vocab_hash, ckpt_dir)
    cfg = from_dict(TrainConfig, config, where=f"{ckpt_dir} config")
    model = build_model(cfg, vocab)
    model.load_state_dict(state)
    log.info("loaded %s (%.2fM non-embedding params, vocab %s)", ckpt_dir, model.num_params() / 1e6, vocab.hash)
    return model.to(device).eval(), vocab


class Sampler:
    """Generation directions on top of `generate`: strings and codes in, strings/codes/media out.

    Codecs are optional and only needed by the directions that use them (the text codec for
    anything with text, the image/audio decoder for t2i/t2s media output). `tasks` maps a
    direction to the TASK token put in front of the prompt; the default is the data task the
    model was trained on (`TRAINED_TASK`), since a model trained on pairs has never seen the
    t2i/i2t/t2s/s2t tokens.
    """

    def __init__(self, logits_fn: LogitsFn, vocab: Vocab, *, text: TextCodec | None = None,
                 image: ImageDecoder | None = None, audio: AudioDecoder | None = None,
                 device: torch.device | str = "cpu", tasks: dict[str, str] | None = None,
                 pad_to: int | None = None):
        self.logits_fn = logits_fn
        self.vocab = vocab
        self.text_codec, self.image_decoder, self.audio_decoder = text, image, audio
        self.device = torch.device(device)
        self.tasks = {**TRAINED_TASK, **(tasks or {})}
        self.pad_to = pad_to

    def _need(self, what: str, obj):
        if obj is None:
            raise SamplingError(f"this direction needs a {what}, but none was given to the Sampler")
        return obj

    def _encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._need("text codec", self.text_codec).encode(list(texts))

    def _run(self, prompt: Prompt, cfg: SamplingConfig, progress: bool) -> torch.Tensor:
        return generate(self.logits_fn, self.vocab, prompt.to(self.device), cfg, progress=progress)

    # text
    def text_ids(self, prefixes: Sequence[np.ndarray], length: int, cfg: SamplingConfig,
                 suffixes: Sequence[np.ndarray] | None = None, progress: bool = False) -> list[np.ndarray]:
        task = self.tasks["text"]
        prompt = continuation_prompt(self.vocab, prefixes, length, suffixes, task or None, self.pad_to)
        return text_codes(self.vocab, self._run(prompt, cfg, progress), prompt)

    def text(self, prompts: Sequence[str], length: int, cfg: SamplingConfig,
             suffixes: Sequence[str] | None = None, progress: bool = False) -> list[str]:
        """Continue each prompt by `length` ids (or fill `length` ids between prompt and suffix)."""
        suf = self._encode(suffixes) if suffixes is not None else None
        new = self.text_ids(self._encode(prompts), length, cfg, suf, progress)
        return self.text_codec.decode(new)

    # text -> media
    def t2i_codes(self, captions: Sequence[str], grid: tuple[int, int], cfg: SamplingConfig,
                  progress: bool = False) -> np.ndarray:
        prompt = media_prompt(self.vocab, self._encode(captions), "image", grid[0] * grid[1],
                              task=self.tasks["t2i"], pad_to=self.pad_to)
        return image_codes(self.vocab, self._run(prompt, cfg, progress), prompt, grid)

    def t2i(self, captions: Sequence[str], grid: tuple[int, int], cfg: SamplingConfig,
            progress: bool = False) -> list:
        decoder = self._need("image decoder", self.image_decoder)
        return decoder.decode(list(self.t2i_codes(captions, grid, cfg, progress)))

    def t2s_codes(self, texts: Sequence[str], n_q: int, frames: int, cfg: SamplingConfig,
                  progress: bool = False) -> np.ndarray:
        prompt = media_prompt(self.vocab, self._encode(texts), "audio", n_q * frames, n_q=n_q,
                              task=self.tasks["t2s"], pad_to=self.pad_to)
        return audio_codes(self.vocab, self._run(prompt, cfg, progress), prompt, n_q)

    def t2s(self, texts: Sequence[str], n_q: int, frames: int, cfg: SamplingConfig,
            progress: bool = False) -> list[np.ndarray]:
        decoder = self._need("audio decoder", self.audio_decoder)
        return decoder.decode(list(self.t2s_codes(texts, n_q, frames, cfg, progress)))

    # media -> text
    def i2t(self, images: Sequence[np.ndarray], length: int, cfg: SamplingConfig,
            progress: bool = False) -> list[str]:
        """Caption local image codes [h, w] with `length` text ids."""
        prompt = caption_prompt(self.vocab, "image", images, length, self.tasks["i2t"], self.pad_to)
        ids = text_codes(self.vocab, self._run(prompt, cfg, progress), prompt)
        return self._need("text codec", self.text_codec).decode(ids)

    def s2t(self, codes: Sequence[np.ndarray], length: int, cfg: SamplingConfig,
            progress: bool = False) -> list[str]:
        """Transcribe local audio codes [n_q, frames] with `length` text ids."""
        prompt = caption_prompt(self.vocab, "audio", codes, length, self.tasks["s2t"], self.pad_to)
        ids = text_codes(self.vocab, self._run(prompt, cfg, progress), prompt)
        return self._need("text codec", self.text_codec).decode(ids)
