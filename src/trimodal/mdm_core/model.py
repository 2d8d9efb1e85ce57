"""A bidirectional transformer over the unified vocabulary (the MDM denoiser).

One stack for every modality, no modality-specific heads: the only modality-aware piece is an
optional additive logit bias that stops a position of modality m from predicting another
modality's ids (a MASK_image can only become an image code). It is a gather from a tiny
[4, V] table, so it costs nothing next to the unembedding matmul and it removes probability
mass the model would otherwise waste (and that sampling would have to renormalise away).

Pre-norm blocks: RMSNorm -> attention (RoPE, QK-norm, no causal mask, PAD keys masked) and
RMSNorm -> SwiGLU. No time conditioning: the masked input already tells the model how noisy
it is (as in LLaDA / MD4).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from trimodal.mdm_core.config import ModelConfig
from trimodal.packing.vocab import MODALITIES, Vocab


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32: bf16 mean-of-squares loses too much precision.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_tables(max_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_len, head_dim/2] for rotary position embeddings."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x [B, H, L, D] by position."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d].float(), x[..., d:].float()
    c, s = cos[None, None], sin[None, None]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        # QK-norm keeps attention logits bounded, which is what lets the larger (SDE-scaled)
        # learning rates stay stable.
        self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.mlp_hidden
        self.gate = nn.Linear(cfg.d_model, h, bias=False)
        self.up = nn.Linear(cfg.d_model, h, bias=False)
        self.down = nn.Linear(h, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, attn_mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, attn_mask)
        return x + self.mlp(self.mlp_norm(x))


def modality_logit_bias(vocab: Vocab, allow_bos: bool = True, allow_eos: bool = True) -> torch.Tensor:
    """[4, V] additive bias; row 0 for PAD/TASK positions (no restriction), row 1+m for modality m.

    Modality m may predict its code range plus (when they are maskable) its own BOS/EOS; never
    MASK, PAD, TASK or another modality's ids.
    """
    bias = np.zeros((1 + len(MODALITIES), vocab.size), dtype=np.float32)
    for m_idx, m in enumerate(MODALITIES):
        allowed = np.zeros(vocab.size, dtype=bool)
        lo, hi = vocab.range(m)
        allowed[lo:hi] = True
        if allow_bos:
            allowed[vocab.bos(m)] = True
        if allow_eos:
            allowed[vocab.eos(m)] = True
        bias[1 + m_idx, ~allowed] = -np.inf
    return torch.from_numpy(bias)


class MDMTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, logit_bias: torch.Tensor | None = None):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set (from the vocabulary) before building")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_tables(cfg.max_len, cfg.d_model // cfg.n_heads, cfg.rope_base)
        # Derived tables, not learned state: kept out of the state dict so checkpoints only hold
        # what training changed (the bias is rebuilt from the vocabulary, whose hash is checked).
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if logit_bias is not None:
            if tuple(logit_bias.shape) != (1 + len(MODALITIES), cfg.vocab_size):
                raise ValueError(f"logit_bias must be [4, {cfg.vocab_size}], got {tuple(logit_bias.shape)}")
        self.register_buffer("logit_bias", logit_bias if cfg.restrict_logits else None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("proj.weight", "down.weight")):
                # Residual-branch outputs scaled so the residual stream's variance does not grow
                # with depth (GPT-2 style).
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, std=std)

    def num_params(self, exclude_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embedding:
            n -= self.tok_emb.weight.numel()
        return n

    def forward(self, tokens: torch.Tensor, modality: torch.Tensor | None = None,
                pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, L] -> logits [B, L, V] (float32 when restricted, else the autocast dtype).

        modality [B, L] in {-1, 0, 1, 2} selects the logit restriction; pad_mask [B, L] (True
        at PAD) removes PAD keys from attention.
        """
        B, L = tokens.shape
        if L > self.cfg.max_len:
            raise ValueError(f"sequence length {L} exceeds model.max_len {self.cfg.max_len}")
        attn_mask = None
        if pad_mask is not None and bool(pad_mask.any()):
            keep = ~pad_mask
            # A sequence that is all PAD would have no key to attend to (NaN); let it see all.
            keep = keep | ~keep.any(dim=1, keepdim=True)
            attn_mask = keep[:, None, None, :]
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        x = self.tok_emb(tokens)
        for block in self.blocks:
            x = block(x, cos, sin, attn_mask)
        logits = self.lm_head(self.norm(x))
        if self.logit_bias is not None and modality is not None:
            logits = logits.float() + self.logit_bias[modality + 1]
        return logits

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), nanoGPT/PaLM estimate:
        6 * (block params + unembedding) + 12 * layers * L * d for the attention scores."""
        block_params = sum(p.numel() for p in self.blocks.parameters())
        unembed = self.cfg.d_model * self.cfg.vocab_size
        attn = 12 * self.cfg.n_layers * seq_len * self.cfg.d_model
        return float(6 * (block_params + unembed) + attn)
