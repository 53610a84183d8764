"""RNN setting: switching linear dynamical system (spec §3.4).

Per step: encoder MLP (d + R) -> E -> E, a recurrent cell run from ``h_0 = c_0 = 0``, and a
decoder MLP h -> h -> out applied to the hidden state at every step (out = d for regression,
1 for classification).

* Monolithic: ``nn.LSTMCell(E, H)`` with biases.
* Modular models: R LSTM modules without biases sharing the previous state
  (:class:`~mod_arch_core.models.layers.GroupLSTMCell`) with the parameter-matching hidden
  size h (:func:`rnn_modular_hidden`); both h and c are mixed by the routing's p. Modular
  scores each module from its own gate pre-activations; Modular-op with an MLP R -> h -> R
  without biases on ``onehot(c_t)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mod_arch_core.models.aggregation import weighted_sum
from mod_arch_core.models.base import ModelConfig, StackedModel
from mod_arch_core.models.kernels import fused_mix, use_fused
from mod_arch_core.models.layers import GroupLSTMCell, StackedLSTMCell, StackedMLP
from mod_arch_core.models.routing import build_routing

__all__ = ["RNNModel", "RNNModular", "RNNMonolithic", "rnn_modular_hidden"]


def rnn_modular_hidden(num_rules: int, encoder_dim: int, hidden_dim: int) -> int:
    """Hidden size h of each LSTM module, matching the monolithic LSTM's count (spec §3.4).

    ``h = int((sqrt((4RE+1)^2 + 4(4R+1)(5H^2 + H(4E+1))) - (4RE+1)) / (2(4R+1)))``, the
    positive root of ``(4R+1) h^2 + (4RE+1) h = 5H^2 + H(4E+1)``, evaluated in floating point
    as in the reference.

    >>> rnn_modular_hidden(4, 32, 128)
    62
    """
    r, e, big_h = num_rules, encoder_dim, hidden_dim
    linear = 4 * r * e + 1
    root = math.sqrt(linear**2 + 4 * (4 * r + 1) * (5 * big_h**2 + big_h * (4 * e + 1)))
    hidden = int((root - linear) / (2 * (4 * r + 1)))
    if hidden < 1:
        raise ValueError(
            f"the RNN modular hidden size h is {hidden} for num_rules={r}, encoder_dim={e}, "
            f"dim={big_h}; increase dim"
        )
    return hidden


class RNNModel(StackedModel):
    """Shared encoder and decoder of the RNN setting (spec §3.4); build with ``build_model``.

    Forward: x (N, B, L, d + R) -> output (N, B, L, d) for regression or (N, B, L) for
    classification, scores (N, B, L, R) or None.
    """

    setting = "rnn"
    axes = ("batch", "length", "features")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        n, e = config.num_runs, config.encoder_dim
        self.state_dim = config.state_dim
        self.out_dim = config.state_dim if config.task == "regression" else 1
        self.encoder = StackedMLP(n, self.in_features, e, e)
        self.hidden_size = self._build_core(config)
        self.decoder = StackedMLP(n, self.hidden_size, self.hidden_size, self.out_dim)

    @property
    def in_features(self) -> int:
        return self.state_dim + self.num_rules

    def _build_core(self, config: ModelConfig) -> int:
        """Build the cell; return its hidden size."""
        raise NotImplementedError

    def _recur(self, inputs: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor | None]:
        """inputs (N, B, L, E), onehot (N, B, L, R) -> states (N, B, L, h), p or None."""
        raise NotImplementedError

    def _zeros(self, inputs: Tensor) -> Tensor:
        """The initial state (N, B, h), zeros."""
        n, b = inputs.shape[:2]
        return inputs.new_zeros(n, b, self.hidden_size)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        states, scores = self._recur(self.encoder(x), self.rule_onehot(x))
        out = self.decoder(states)
        return (out.squeeze(-1) if self.task == "classification" else out), scores


class RNNMonolithic(RNNModel):
    """Monolithic LSTM: ``LSTMCell(E, H)`` with biases (spec §3.4, Table 1)."""

    def _build_core(self, config: ModelConfig) -> int:
        self.cell = StackedLSTMCell(config.num_runs, config.encoder_dim, config.dim)
        return config.dim

    def _recur(self, inputs: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor | None]:
        cell, fused = self.cell, use_fused(inputs)
        states = []
        h = c = None
        for t in range(inputs.shape[2]):
            h, c = cell.step_from_input(inputs[:, :, t], h, c, fused=fused)  # (N, B, H) each
            states.append(h)
        return torch.stack(states, dim=2), None


class RNNModular(RNNModel):
    """R LSTM modules mixed by a routing at every step (spec §3.4, Table 1).

    ``h_t = sum_m p_m h_m`` and ``c_t = sum_m p_m c_m``. A routing that does not read the
    modules' logits is a function of the rule alone, so it is evaluated for all steps at once.
    """

    def _build_core(self, config: ModelConfig) -> int:
        n, r = config.num_runs, config.num_rules
        hidden = rnn_modular_hidden(r, config.encoder_dim, config.dim)
        self.routing = build_routing(
            config.model,
            context_scorer=lambda: StackedMLP(n, r, hidden, r, bias=False),
            **config.options,
        )
        self.cell = GroupLSTMCell(
            n, r, config.encoder_dim, hidden, self_scored=self.routing.self_scored
        )
        return hidden

    def _recur(self, inputs: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor | None]:
        cell, fused = self.cell, use_fused(inputs)
        # Scores from the rule alone do not depend on the state: all steps at once.
        context_probs = None if self.routing.self_scored else self.routing(onehot)
        score_maps = cell.score_maps(fused=fused) if self.routing.self_scored else None
        h = c = None
        states, scores = [], []
        for t in range(inputs.shape[2]):
            h_modules, c_modules, logits = cell.step_from_input(
                inputs[:, :, t], h, c, score_maps, fused=fused
            )
            if context_probs is None:
                probs = self.routing(onehot[:, :, t], module_logits=logits)
            else:
                probs = context_probs[:, :, t]
            if fused:
                h, c = fused_mix(h_modules, c_modules, probs)
            else:
                h, c = weighted_sum(h_modules, probs), weighted_sum(c_modules, probs)
            states.append(h)
            scores.append(probs)
        return torch.stack(states, dim=2), torch.stack(scores, dim=2)
