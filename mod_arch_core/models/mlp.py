"""MLP setting: task-conditioned linear map (spec §3.2).

Input per example ``[x1, x2, onehot(c)]`` (spec §2.1). Shared by every model:

* ``enc_digit``: MLP 1 -> E -> E, the same weights applied to x1 and to x2;
* ``enc_op``: MLP R -> E -> E on the rule one-hot;
* ``z = [enc_digit(x1), enc_digit(x2), enc_op(onehot)]`` of width 3E;
* ``decoder``: MLP D -> E -> 1 (a value, or a logit for classification).

The core between them is a MLP 3E -> D -> D (Monolithic) or R modules
``GroupLinear(R, 3E, D/R) -> ReLU -> GroupLinear(R, D/R, D [+1])`` mixed by a routing
(Modular, Modular-op, GT-Modular). The paper's Modular is the reference's ``--joint``
variant: each module emits D + 1 outputs, the last one its score logit. Modular-op scores
with ``Linear(E, R)`` on ``enc_op(onehot)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mod_arch_core.models.base import ModelConfig, StackedModel
from mod_arch_core.models.layers import GroupMLP, StackedLinear, StackedMLP
from mod_arch_core.models.routing import build_routing

__all__ = ["MLPModel", "MLPModular", "MLPMonolithic", "mlp_module_width"]


def mlp_module_width(num_rules: int, dim: int) -> int:
    """Hidden width ``D // R`` of each MLP module (spec §3.2); D must be a multiple of R."""
    if dim % num_rules:
        raise ValueError(
            f"dim must be a multiple of num_rules={num_rules} for the MLP modular models "
            f"(each module has dim // num_rules hidden units); got dim={dim}"
        )
    return dim // num_rules


class MLPModel(StackedModel):
    """Shared encoders and decoder of the MLP setting (spec §3.2); build with ``build_model``.

    Forward: x (N, B, 2 + R) -> output (N, B), scores (N, B, R) or None.
    """

    setting = "mlp"
    axes = ("batch", "features")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        n, r, e, d = config.num_runs, config.num_rules, config.encoder_dim, config.dim
        self.enc_digit = StackedMLP(n, 1, e, e)
        self.enc_op = StackedMLP(n, r, e, e)
        self._build_core(config)
        self.decoder = StackedMLP(n, d, e, 1)

    @property
    def in_features(self) -> int:
        return 2 + self.num_rules

    def _build_core(self, config: ModelConfig) -> None:
        raise NotImplementedError

    def _core(self, z: Tensor, onehot: Tensor, rule: Tensor) -> tuple[Tensor, Tensor | None]:
        """z (N, B, 3E), onehot (N, B, R), rule = enc_op(onehot) (N, B, E) -> (N, B, D), p."""
        raise NotImplementedError

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        onehot = self.rule_onehot(x)
        digits = self.enc_digit(x[..., :2].unsqueeze(-1)).flatten(-2)  # (N, B, 2E)
        rule = self.enc_op(onehot)  # (N, B, E)
        hidden, scores = self._core(torch.cat([digits, rule], dim=-1), onehot, rule)
        return self.decoder(hidden).squeeze(-1), scores


class MLPMonolithic(MLPModel):
    """Monolithic MLP: ``y = f(x, c)`` with core MLP 3E -> D -> D (spec §3.2, Table 1)."""

    def _build_core(self, config: ModelConfig) -> None:
        e, d = config.encoder_dim, config.dim
        self.core = StackedMLP(config.num_runs, 3 * e, d, d)

    def _core(self, z: Tensor, onehot: Tensor, rule: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.core(z), None


class MLPModular(MLPModel):
    """R MLP modules mixed by a routing: ``y = sum_m p_m y_m`` (spec §3.2, Table 1).

    The routing is the model name's (``modular``, ``modular-op``, ``gt-modular``; see
    :mod:`~mod_arch_core.models.routing`). Self-scored routings get one extra output per
    module, its score logit.
    """

    def _build_core(self, config: ModelConfig) -> None:
        n, r, e, d = config.num_runs, config.num_rules, config.encoder_dim, config.dim
        width = mlp_module_width(r, d)
        self.routing = build_routing(
            config.model, context_scorer=lambda: StackedLinear(n, e, r), **config.options
        )
        out = d + 1 if self.routing.self_scored else d
        self.core = GroupMLP(n, r, 3 * e, width, out, shared_input=True)

    def _core(self, z: Tensor, onehot: Tensor, rule: Tensor) -> tuple[Tensor, Tensor | None]:
        # Module m: relu(z W1_m + b1_m) W2_m + b2_m, whose last channel is its score logit when
        # self-scored; the output is sum_m p_m module_m, the weighted sum of Table 1.
        self_scored = self.routing.self_scored
        hidden = self.core.hidden(z)  # (N, B, R, D/R)
        logits = self.core.score_channel(hidden) if self_scored else None
        probs = self.routing(onehot, module_logits=logits, context=rule)
        return self.core.mix(hidden, probs, score_channel=self_scored), probs
