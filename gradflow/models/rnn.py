"""Recurrent networks where depth is time: vanilla RNN, LSTM, GRU, unrolled step by step.

The cell runs in an explicit loop over time (not the fused kernel) so that every hidden state
h_t is a tensor of its own: a marker module after each step gives the probes h_t and, through
one ordinary backward pass, the total derivative dL/dh_t for every t (no backward per step).
Probe points: the time steps t = 0..T-1 (layer t; "vanishing over time" is a profile with time
on the x axis), then the linear head.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gradflow.models import ProbePoint


class Step(nn.Identity):
    """Marks h_t: its forward output is the hidden state after time step t."""


class Recurrent(nn.Module):
    def __init__(self, kind: str, d_in: int, hidden: int, T: int, n_out: int, activation: str = "tanh",
                 per_step: bool = False):
        super().__init__()
        self.kind, self.hidden, self.per_step = kind, hidden, per_step
        if kind == "rnn":
            self.cell = nn.RNNCell(d_in, hidden, nonlinearity=activation)
        elif kind == "lstm":
            self.cell = nn.LSTMCell(d_in, hidden)
        else:
            self.cell = nn.GRUCell(d_in, hidden)
        self.steps = nn.ModuleList(Step() for _ in range(T))
        self.head = nn.Linear(hidden, n_out)
        self.probe_points = [ProbePoint(f"t{t}", step, step) for t, step in enumerate(self.steps)]
        self.probe_points.append(ProbePoint("head", self.head, None))

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes, per_step=False):
        T, d_in = (input_shape[0], 1) if len(input_shape) == 1 else input_shape  # (L,) is L steps of scalars
        m = cfg.model
        return cls(m.name, d_in, m.hidden, T, n_classes, m.activation if m.name == "rnn" else "tanh", per_step)

    @torch.no_grad()
    def post_init(self, cfg) -> None:
        """Input weights by the `init` scheme (per gate; init=keep leaves torch's), recurrent weights by
        `model.recurrent_init` x `model.gain`; biases 0 except the LSTM forget gate (`model.forget_bias`) and,
        under init=meanfield, the input bias b_ih ~ N(0, init.sb2), as a feed-forward layer's (b_hh stays 0:
        the two add, and the pre-activation's bias variance is sb2, the mean-field theory's)."""
        from gradflow.models.init import init_layer

        m = cfg.model
        for block in self.cell.weight_ih.split(self.hidden, dim=0) if cfg.init.name != "keep" else ():
            init_layer(block, None, cfg.init, m.activation if self.kind == "rnn" else "tanh")  # (hidden, d_in) per gate
        w_hh = self.cell.weight_hh  # (gates * hidden, hidden): one square block per gate
        for block in w_hh.split(self.hidden, dim=0):
            if m.recurrent_init == "orthogonal":
                nn.init.orthogonal_(block, gain=m.gain)
            elif m.recurrent_init == "identity":  # IRNN (Le et al. 2015)
                block.copy_(m.gain * torch.eye(self.hidden))
            else:
                block.normal_(0.0, m.gain / math.sqrt(self.hidden))
        self.cell.bias_ih.zero_()
        if cfg.init.name == "meanfield":
            self.cell.bias_ih.normal_(0.0, math.sqrt(cfg.init.sb2))
        self.cell.bias_hh.zero_()
        if self.kind == "lstm":  # gates are ordered (input, forget, cell, output)
            self.cell.bias_ih[self.hidden : 2 * self.hidden] = m.forget_bias

    def forward(self, x):  # (batch, T, d_in) or (batch, T) -> (batch, n_out) or (batch, T, n_out)
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden) if self.kind == "lstm" else None
        outputs = []
        for t, step in enumerate(self.steps):
            if self.kind == "lstm":
                h, c = self.cell(x[:, t], (h, c))
            else:
                h = self.cell(x[:, t], h)
            h = step(h)
            if self.per_step:
                outputs.append(h)
        if self.per_step:
            return self.head(torch.stack(outputs, dim=1))  # (batch, T, n_out)
        return self.head(h)
