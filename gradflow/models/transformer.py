"""A causal (GPT-style) transformer: token + position embeddings, `depth` blocks, final norm, linear head.

Each block has two residual sublayers, multi-head causal self-attention and an MLP, with the norm
placed as `ln` says:
    pre  (GPT-2, LLaMA):             x <- x + alpha * f(norm(x)),  a final norm before the head
    post (Vaswani et al. 2017):      x <- norm(x + alpha * f(x)),  no final norm (the last block ends in one)
    none:                            x <- x + alpha * f(x)
Probe points, in forward order from the input (layer 0) to the head:
    tok_emb, pos_emb, then per block i: b{i}.attn.qkv, b{i}.attn.out, b{i}.attn.resid,
    b{i}.mlp.in, b{i}.mlp.out, b{i}.resid, and finally head.
`*.resid` are states without a weight (as h_t in the recurrent family): the residual stream after
the attention sublayer and after the whole block, where the probes read the back-propagated signal.
Token ids (batch, T) go through an embedding table; real-valued sequences (batch, T, d_in) through a
linear input projection in the same place. A per-position output (batch, T, n_out) serves sequence
and language-modelling tasks; otherwise the last position's output (batch, n_out) classifies.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradflow import activations
from gradflow.models import ProbePoint


class State(nn.Identity):
    """Marks a residual-stream state: its forward output is the stream at that point."""


def make_norm(kind: str, ln: str, d_model: int, eps: float) -> nn.Module:
    if ln == "none":
        return nn.Identity()
    return nn.RMSNorm(d_model, eps=eps) if kind == "rmsnorm" else nn.LayerNorm(d_model, eps=eps)


def _scale(alpha: float | str) -> float | nn.Parameter:
    """A fixed residual branch scale, or a learnable one starting at 0 (SkipInit, De & Smith 2020)."""
    return nn.Parameter(torch.zeros(())) if alpha == "learnable" else alpha


class Attention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)  # query, key, value for all heads, fused
        self.out = nn.Linear(d_model, d_model)  # writes into the residual stream
        self.drop = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.drop(self.out(y))


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int, activation: str, dropout: float):
        super().__init__()
        self.fc_in = nn.Linear(d_model, ratio * d_model)
        self.act = activations.get(activation).module()
        self.fc_out = nn.Linear(ratio * d_model, d_model)  # writes into the residual stream
        self.drop = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.drop(self.fc_out(self.act(self.fc_in(x))))


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, mlp_ratio: int, activation: str, ln: str, norm_kind: str,
                 alpha: float | str, dropout: float, eps: float):
        super().__init__()
        self.post = ln == "post"
        self.norm1 = make_norm(norm_kind, ln, d_model, eps)
        self.attn = Attention(d_model, heads, dropout)
        self.attn_resid = State()
        self.norm2 = make_norm(norm_kind, ln, d_model, eps)
        self.mlp = MLP(d_model, mlp_ratio, activation, dropout)
        self.resid = State()
        self.alpha_attn, self.alpha_mlp = _scale(alpha), _scale(alpha)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        if self.post:
            x = self.attn_resid(self.norm1(x + self.alpha_attn * self.attn(x)))
            return self.resid(self.norm2(x + self.alpha_mlp * self.mlp(x)))
        x = self.attn_resid(x + self.alpha_attn * self.attn(self.norm1(x)))
        return self.resid(x + self.alpha_mlp * self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    def __init__(self, T: int, n_out: int, depth: int, d_model: int, heads: int, mlp_ratio: int = 4,
                 activation: str = "gelu", ln: str = "pre", norm_kind: str = "layernorm", alpha: float | str = 1.0,
                 dropout: float = 0.0, eps: float = 1e-5, vocab: int = 0, d_in: int = 1, per_step: bool = True):
        """vocab > 0: inputs are token ids in [0, vocab); vocab = 0: real vectors of d_in features per position.
        per_step: an output at every position; otherwise only at the last one."""
        super().__init__()
        self.per_step = per_step
        self.tok_emb = nn.Embedding(vocab, d_model) if vocab else nn.Linear(d_in, d_model)
        self.pos_emb = nn.Embedding(T, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio, activation, ln, norm_kind, alpha, dropout, eps)
                                    for _ in range(depth))
        self.norm_f = make_norm(norm_kind, "none" if ln == "post" else ln, d_model, eps)
        self.head = nn.Linear(d_model, n_out)
        self.probe_points = [ProbePoint("tok_emb", self.tok_emb, None), ProbePoint("pos_emb", self.pos_emb, None)]
        for i, b in enumerate(self.blocks):
            self.probe_points += [ProbePoint(f"b{i}.attn.qkv", b.attn.qkv, None),
                                  ProbePoint(f"b{i}.attn.out", b.attn.out, None),
                                  ProbePoint(f"b{i}.attn.resid", b.attn_resid, None),
                                  ProbePoint(f"b{i}.mlp.in", b.mlp.fc_in, b.mlp.act),
                                  ProbePoint(f"b{i}.mlp.out", b.mlp.fc_out, None),
                                  ProbePoint(f"b{i}.resid", b.resid, None)]
        self.probe_points.append(ProbePoint("head", self.head, None))
        # the projections writing into the residual stream: init=gpt2 scales them by 1/sqrt(their number = 2 depth)
        self.residual_outputs = [m for b in self.blocks for m in (b.attn.out, b.mlp.fc_out)]

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes, per_step=False, vocab=0):
        from gradflow.models.mlp import branch_scale

        m = cfg.model
        if vocab:  # (T,) token ids
            T, d_in = input_shape[0], 1
        elif len(input_shape) == 1:  # (T,) real values: T positions of one feature
            T, d_in = input_shape[0], 1
        elif len(input_shape) == 2:  # (T, d_in)
            T, d_in = input_shape
        else:  # (C, *spatial): every pixel a position, its channels the features
            T, d_in = int(torch.tensor(input_shape[1:]).prod()), input_shape[0]
        return cls(T, n_classes, m.depth, m.d_model, m.heads, m.mlp_ratio, m.activation, m.ln, m.norm_kind,
                   branch_scale(m.alpha, m.depth), m.dropout, cfg.norm.eps, vocab, d_in, per_step)

    def forward(self, x):  # (B, T) ids | (B, T) or (B, T, d_in) or (B, C, *spatial) reals -> (B, T, n_out) or (B, n_out)
        if x.is_floating_point():
            x = x.unsqueeze(-1) if x.dim() == 2 else x.flatten(2).transpose(1, 2) if x.dim() > 3 else x
        B, T = x.shape[:2]
        pos = torch.arange(T, device=x.device).expand(B, T)  # per example, so pos_emb's signal is per example too
        h = self.drop(self.tok_emb(x) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            h = block(h)
        h = self.norm_f(h)
        return self.head(h if self.per_step else h[:, -1])  # (B, T, n_out) or (B, n_out)
