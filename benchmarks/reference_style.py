"""One model per process step, in the style of the reference implementation (spec §3, §4, §8).

The baseline (a) of ``bench_training.py``: what one of the paper's 20,000 training processes
does at every step, written from the specification (this is not the reference's code):

* one ordinary ``nn.Module`` built from ``nn.Linear`` and a ``GroupLinear`` of ``(R, din, dout)``
  weights applied with ``torch.bmm`` over the module axis, the paper's Modular model of each
  setting (spec §3.2-3.4), with PyTorch's default initialisation;
* one ``torch.optim.Adam`` (lr 1e-4), gradient-norm clipping 1.0 for the RNN (spec §4);
* a fresh batch of 256 drawn at every step with a numpy ``RandomState`` seeded with the model
  seed (the reference seeds numpy's global one, the same generator) and handed to torch with
  ``torch.from_numpy`` (spec §2: x1, x2 then the rule for the MLP; features then rules for
  the MHA; rules then inputs and the switching linear recursion for the RNN).

:func:`copy_engine_weights` loads one run of a stacked model of :mod:`mod_arch_core` into these
models, so a test can check that both compute the same function (same architecture).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mod_arch_core.models import mha_intermediate_dim, rnn_modular_hidden

__all__ = [
    "GroupLinear",
    "MHAModular",
    "MLPModular",
    "RNNModular",
    "ReferenceRun",
    "copy_engine_weights",
    "make_reference_run",
]


def mlp(din: int, hidden: int, dout: int, bias: bool = True) -> nn.Sequential:
    """Linear -> ReLU -> Linear (spec §3.1)."""
    return nn.Sequential(
        nn.Linear(din, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, dout, bias=bias)
    )


class GroupLinear(nn.Module):
    """R linear maps, module r on ``x[:, r]``: weight (R, din, dout), bias (1, R, dout) (§3.1)."""

    def __init__(self, num_modules: int, din: int, dout: int, bias: bool = True) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(din)
        self.weight = nn.Parameter(torch.empty(num_modules, din, dout).uniform_(-bound, bound))
        # Allocated (and counted) even without bias, as in the reference (spec §9.6).
        self.bias = nn.Parameter(torch.empty(1, num_modules, dout).uniform_(-bound, bound))
        self.use_bias = bias

    def forward(self, x: Tensor) -> Tensor:
        """(B, R, din) -> (B, R, dout)."""
        out = torch.bmm(x.permute(1, 0, 2), self.weight).permute(1, 0, 2)
        return out + self.bias if self.use_bias else out


class MLPModular(nn.Module):
    """Paper "Modular", MLP setting (spec §3.2, the reference's ``--joint``)."""

    def __init__(self, num_rules: int, encoder_dim: int, dim: int) -> None:
        super().__init__()
        r, e, d = num_rules, encoder_dim, dim
        self.num_rules, self.dim = r, d
        self.enc_digit = mlp(1, e, e)
        self.enc_op = mlp(r, e, e)
        self.first = GroupLinear(r, 3 * e, d // r)
        self.second = GroupLinear(r, d // r, d + 1)
        self.decoder = mlp(d, e, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 2 + R) -> output (B,), scores (B, R)."""
        z = torch.cat(
            [self.enc_digit(x[:, :1]), self.enc_digit(x[:, 1:2]), self.enc_op(x[:, 2:])], dim=-1
        )
        z = z.unsqueeze(1).repeat(1, self.num_rules, 1)  # tiled for every module
        out = self.second(torch.relu(self.first(z)))  # (B, R, D + 1)
        probs = torch.softmax(out[..., -1], dim=-1)
        mixed = (out[..., :-1] * probs.unsqueeze(-1)).sum(dim=1)
        return self.decoder(mixed).squeeze(-1), probs


class MHAModular(nn.Module):
    """Paper "Modular", attention setting (spec §3.3): R modules of 2 heads, self-scored."""

    def __init__(self, num_rules: int, dim: int, att_dim: int, in_dim: int) -> None:
        super().__init__()
        r, d = num_rules, dim
        self.num_rules, self.heads, self.head_dim = r, 2 * r, att_dim // (2 * r)
        hd = self.head_dim
        self.encoder = mlp(in_dim, d, d)
        self.query = nn.Linear(d, 2 * r * hd)
        self.key = nn.Linear(d, 2 * r * hd)
        self.value = nn.Linear(d, 2 * r * hd)
        self.in_ = nn.Linear(d, r * hd)
        width = mha_intermediate_dim(r, d, att_dim)
        self.out_first = GroupLinear(r, 3 * hd, width)
        self.out_second = GroupLinear(r, width, d + 1)
        self.decoder = mlp(d, d, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, in_dim) -> output (B, L), scores (B, L, R)."""
        b, length, _ = x.shape
        r, h, hd = self.num_rules, self.heads, self.head_dim
        t = self.encoder(x)
        q, k, v = (
            f(t).view(b, length, h, hd).transpose(1, 2) for f in (self.query, self.key, self.value)
        )
        logits = torch.matmul(q, k.transpose(-1, -2)) * hd**-0.5  # (B, H, L, L)
        mask = torch.eye(length, dtype=torch.bool, device=x.device)
        att = torch.softmax(logits.masked_fill(mask, float("-inf")), dim=-1)
        heads = torch.matmul(att, v).transpose(1, 2).reshape(b, length, r, 2 * hd)
        own = self.in_(t).view(b, length, r, hd)
        modules_in = torch.cat([heads, own], dim=-1).reshape(b * length, r, 3 * hd)
        out = self.out_second(torch.relu(self.out_first(modules_in)))  # (B L, R, d + 1)
        probs = torch.softmax(out[..., -1], dim=-1)
        mixed = (out[..., :-1] * probs.unsqueeze(-1)).sum(dim=1)
        return self.decoder(mixed).view(b, length), probs.view(b, length, r)


class RNNModular(nn.Module):
    """Paper "Modular", recurrent setting (spec §3.4): R self-scored LSTM modules.

    Gate order (i, f, o, g) as in the reference's modular cell (errata 21 of the book).
    """

    def __init__(self, num_rules: int, encoder_dim: int, dim: int, state_dim: int) -> None:
        super().__init__()
        r, e = num_rules, encoder_dim
        self.num_rules = r
        self.hidden = h = rnn_modular_hidden(r, e, dim)
        self.encoder = mlp(state_dim + r, e, e)
        self.i2h = nn.Linear(e, 4 * r * h, bias=False)
        self.h2h = nn.Linear(h, 4 * r * h, bias=False)
        self.scorer = GroupLinear(r, 8 * h, 1, bias=False)
        self.decoder = mlp(h, h, state_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, d + R) -> output (B, L, d), scores (B, L, R)."""
        b, length, _ = x.shape
        r, hs = self.num_rules, self.hidden
        inputs = self.encoder(x)
        h = c = x.new_zeros(b, hs)
        states, scores = [], []
        for t in range(length):
            i2h = self.i2h(inputs[:, t]).view(b, r, 4 * hs)
            h2h = self.h2h(h).view(b, r, 4 * hs)
            logits = self.scorer(torch.relu(torch.cat([i2h, h2h], dim=-1))).squeeze(-1)
            probs = torch.softmax(logits, dim=-1)  # (B, R)
            pre = i2h + h2h
            gates = torch.sigmoid(pre[..., : 3 * hs])
            i, f, o = gates[..., :hs], gates[..., hs : 2 * hs], gates[..., 2 * hs :]
            g = torch.tanh(pre[..., 3 * hs :])
            c_modules = f * c.unsqueeze(1) + i * g
            h_modules = o * torch.tanh(c_modules)
            h = (h_modules * probs.unsqueeze(-1)).sum(dim=1)
            c = (c_modules * probs.unsqueeze(-1)).sum(dim=1)
            states.append(h)
            scores.append(probs)
        return self.decoder(torch.stack(states, dim=1)), torch.stack(scores, dim=1)


# Data: a numpy RandomState (the reference's global one), a fresh batch every step (spec §2) ----------------------------


def _onehot(rules: np.ndarray, num_rules: int) -> np.ndarray:
    return np.eye(num_rules)[rules]


def mlp_batch(
    rng: np.random.RandomState, n: int, alpha: np.ndarray, beta: np.ndarray
) -> tuple[Tensor, Tensor]:
    """Spec §2.1: x1, x2 ~ N(0, 1), then c; y = alpha[c] x1 + beta[c] x2."""
    r = len(alpha)
    x1, x2 = rng.randn(n, 1), rng.randn(n, 1)
    c = rng.choice(r, size=n)
    y = alpha[c] * x1[:, 0] + beta[c] * x2[:, 0]
    x = np.concatenate([x1, x2, _onehot(c, r)], axis=-1)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def mha_batch(
    rng: np.random.RandomState, n: int, length: int, alpha: np.ndarray, beta: np.ndarray
) -> tuple[Tensor, Tensor]:
    """Spec §2.2, search version 1: nearest scalar query among the other tokens, per rule."""
    r = len(alpha)
    feats = rng.randn(n, length, 4 * r)
    c = rng.choice(r, size=n * length).reshape(n, length)
    eye = np.eye(length, dtype=bool)
    per_rule = np.empty((n, length, r))
    for rule in range(r):
        retrieved = []
        for offset in (0, 1):
            q = feats[:, :, 4 * rule + offset]
            dist = np.abs(q[:, :, None] - q[:, None, :])
            dist[:, eye] = np.inf
            index = dist.argmin(axis=-1)
            retrieved.append(np.take_along_axis(feats[:, :, 4 * rule + 2 + offset], index, 1))
        per_rule[:, :, rule] = alpha[rule] * retrieved[0] + beta[rule] * retrieved[1]
    y = np.take_along_axis(per_rule, c[..., None], -1)[..., 0]
    x = np.concatenate([feats, _onehot(c, r)], axis=-1)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def rnn_batch(
    rng: np.random.RandomState, n: int, length: int, A: np.ndarray, B: np.ndarray
) -> tuple[Tensor, Tensor]:
    """Spec §2.3: rules, then inputs; s_t = x_t B[c_t] + s_{t-1} A[c_t, 0]."""
    r, d = B.shape[0], B.shape[-1]
    c = rng.choice(r, size=n * length).reshape(n, length)
    x = rng.randn(n, length, d)
    s = np.zeros((n, d))
    states = []
    for t in range(length):
        s = np.einsum("nd,nde->ne", x[:, t], B[c[:, t]]) + np.einsum("nd,nde->ne", s, A[c[:, t], 0])
        states.append(s)
    inputs = np.concatenate([x, _onehot(c, r)], axis=-1)
    return torch.from_numpy(inputs).float(), torch.from_numpy(np.stack(states, 1)).float()


# One process's training step -------------------------------------------------------------------


@dataclass
class ReferenceRun:
    """A model, its Adam and its data source: ``step()`` is one training step of one run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batch: Callable[[], tuple[Tensor, Tensor]]
    clip: float | None

    def step(self) -> float:
        """Draw a batch, L1 loss (spec §4), backward, clip (RNN), Adam step; returns the loss."""
        x, y = self.batch()
        output, _ = self.model(x)
        loss = nn.functional.l1_loss(output, y)
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return float(loss.detach())


def make_reference_run(
    setting: str,
    num_rules: int,
    encoder_dim: int,
    dim: int,
    *,
    batch_size: int = 256,
    seq_len: int = 10,
    state_dim: int = 32,
    data_seed: int = 0,
    seed: int = 0,
) -> ReferenceRun:
    """The regression Modular model of ``setting`` with its optimizer and data (spec §2-4)."""
    torch.manual_seed(seed)
    stream = np.random.RandomState(seed)  # the data stream follows the model seed (spec §1)
    rng = np.random.RandomState(data_seed)  # the task's coefficients
    if setting == "mlp":
        alpha, beta = rng.randn(num_rules), rng.randn(num_rules)
        model = MLPModular(num_rules, encoder_dim, dim)
        batch = lambda: mlp_batch(stream, batch_size, alpha, beta)  # noqa: E731
        clip = None
    elif setting == "mha":
        alpha, beta = rng.randn(num_rules), rng.randn(num_rules)
        model = MHAModular(num_rules, encoder_dim, dim, 5 * num_rules)
        batch = lambda: mha_batch(stream, batch_size, seq_len, alpha, beta)  # noqa: E731
        clip = None
    elif setting == "rnn":
        A = rng.randn(num_rules, 1, state_dim, state_dim) / np.sqrt(state_dim)
        B = rng.randn(num_rules, state_dim, state_dim) / np.sqrt(state_dim)
        model = RNNModular(num_rules, encoder_dim, dim, state_dim)
        batch = lambda: rnn_batch(stream, batch_size, seq_len, A, B)  # noqa: E731
        clip = 1.0
    else:
        raise ValueError(f"setting must be one of mlp, mha, rnn; got {setting!r}")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    return ReferenceRun(model, optimizer, batch, clip)


# Cross-check with the engine ---------------------------------------------------------------------


def _copy_mlp(target: nn.Sequential, source: nn.Module, run: int) -> None:
    for linear, stacked in ((target[0], source.first), (target[2], source.second)):
        linear.weight.copy_(stacked.weight[run].T)
        if linear.bias is not None:
            linear.bias.copy_(stacked.bias[run])


def _copy_group(target: GroupLinear, source: nn.Module, run: int) -> None:
    target.weight.copy_(source.weight[run])
    if source.bias is not None:
        target.bias.copy_(source.bias[run].unsqueeze(0))


def _gate_order(weight: Tensor, num_modules: int, hidden: int) -> Tensor:
    """Columns (R, 4h) in the engine's (i, f, g, o) order -> the reference's (i, f, o, g)."""
    blocks = weight.reshape(*weight.shape[:-1], num_modules, 4, hidden)
    return blocks[..., [0, 1, 3, 2], :].reshape(weight.shape)


@torch.no_grad()
def copy_engine_weights(target: nn.Module, engine: nn.Module, run: int = 0) -> nn.Module:
    """Load run ``run`` of a stacked ``mod_arch_core`` Modular model into ``target``."""
    if isinstance(target, MLPModular):
        _copy_mlp(target.enc_digit, engine.enc_digit, run)
        _copy_mlp(target.enc_op, engine.enc_op, run)
        _copy_group(target.first, engine.core.first, run)
        _copy_group(target.second, engine.core.second, run)
        _copy_mlp(target.decoder, engine.decoder, run)
    elif isinstance(target, MHAModular):
        _copy_mlp(target.encoder, engine.encoder, run)
        width = target.heads * target.head_dim
        weight, bias = engine.qkv.weight[run], engine.qkv.bias[run]
        for index, linear in enumerate((target.query, target.key, target.value)):
            linear.weight.copy_(weight[:, index * width : (index + 1) * width].T)
            linear.bias.copy_(bias[index * width : (index + 1) * width])
        target.in_.weight.copy_(engine.in_proj.weight[run].T)
        target.in_.bias.copy_(engine.in_proj.bias[run])
        _copy_group(target.out_first, engine.out_proj.first, run)
        _copy_group(target.out_second, engine.out_proj.second, run)
        _copy_mlp(target.decoder, engine.decoder, run)
    elif isinstance(target, RNNModular):
        r, h = target.num_rules, target.hidden
        _copy_mlp(target.encoder, engine.encoder, run)
        target.i2h.weight.copy_(_gate_order(engine.cell.i2h.weight[run], r, h).T)
        target.h2h.weight.copy_(_gate_order(engine.cell.h2h.weight[run], r, h).T)
        scorer = engine.cell.scorer.weight[run, :, :, 0]  # (R, 8h): [i2h half, h2h half]
        halves = _gate_order(scorer.reshape(r, 2, 4 * h), 1, h)
        target.scorer.weight.copy_(halves.reshape(r, 8 * h, 1))
        _copy_mlp(target.decoder, engine.decoder, run)
    else:
        raise TypeError(f"no weight mapping for {type(target).__name__}")
    return target
