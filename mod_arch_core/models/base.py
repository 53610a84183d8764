"""What every stacked model shares: its configuration and the input contract.

Spec §1-§3. A model is a stack of N independent runs of one configuration; it maps an
input with a leading run axis to ``(output, scores)``:

=======  ==========================  =========================================  ================
setting  x                           output                                     scores
=======  ==========================  =========================================  ================
mlp      (N, B, 2 + R)               (N, B)                                     (N, B, R)
mha      (N, B, L, 5R or 7R)         (N, B, L)                                  (N, B, L, R)
rnn      (N, B, L, d + R)            (N, B, L, d) regression, (N, B, L) class.  (N, B, L, R)
=======  ==========================  =========================================  ================

The last R features of ``x`` are always the one-hot of the rule (the data package puts them
there); context-aware routing reads them from ``x``. ``scores`` is None for Monolithic.
Classification outputs are logits. A single-run model (N = 1) also accepts ``x`` without
the run axis and then returns outputs without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["ModelConfig", "StackedModel"]


@dataclass(frozen=True)
class ModelConfig:
    """The validated build arguments of a model (see ``registry.build_model``)."""

    setting: str  # "mlp" | "mha" | "rnn"
    model: str  # canonical model name, e.g. "modular-op"
    num_rules: int  # R, also the number of modules
    encoder_dim: int  # E (MLP encoder width, MHA token width d, RNN encoder width)
    dim: int  # D (MLP core width, MHA attention width A, RNN monolithic hidden size H)
    task: str  # "regression" | "classification"
    num_runs: int  # N, runs in the stack
    seeds: tuple[int, ...]  # one initialisation seed per run
    search_version: int = 1  # MHA only: 1 (5R input features) or 2 (7R)
    state_dim: int = 32  # RNN only: d, the state dimension of the data
    options: dict[str, Any] = field(default_factory=dict)  # routing options

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments of ``build_model`` that rebuild the model."""
        out: dict[str, Any] = {
            "setting": self.setting,
            "model": self.model,
            "num_rules": self.num_rules,
            "encoder_dim": self.encoder_dim,
            "dim": self.dim,
            "task": self.task,
            "num_runs": self.num_runs,
            "seeds": list(self.seeds),
        }
        if self.setting == "mha":
            out["search_version"] = self.search_version
        if self.setting == "rnn":
            out["state_dim"] = self.state_dim
        out.update(self.options)
        return out


class StackedModel(nn.Module):
    """Base of the per-setting models: configuration attributes and input checks.

    Subclasses set :attr:`setting`, :attr:`axes` and implement :meth:`in_features` and
    :meth:`_forward` (which sees ``x`` with the run axis, already checked).

    Attributes
    ----------
    setting, model_name, task : str
    num_rules, num_runs : int
    config : dict
        Keyword arguments of ``build_model`` that rebuild this model (JSON-serialisable).
    """

    #: Architecture name (spec §1).
    setting: ClassVar[str]
    #: Names of the input axes after the run axis, for error messages.
    axes: ClassVar[tuple[str, ...]]

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self._config = config
        self.model_name = config.model
        self.task = config.task
        self.num_rules = config.num_rules
        self.num_runs = config.num_runs

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments of ``build_model`` that rebuild this model."""
        return self._config.to_dict()

    @property
    def in_features(self) -> int:
        """Size of the input's last axis (features followed by the R-dim rule one-hot)."""
        raise NotImplementedError

    def rule_onehot(self, x: Tensor) -> Tensor:
        """The rule one-hot, the last R input features: (N, ..., F) -> (N, ..., R)."""
        return x[..., -self.num_rules :]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Run every run of the stack on its own input (shapes in the module docstring)."""
        x, squeeze = self._check_input(x)
        output, scores = self._forward(x)
        if squeeze:
            output = output.squeeze(0)
            scores = None if scores is None else scores.squeeze(0)
        return output, scores

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> tuple[Tensor, bool]:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        ndim = len(self.axes) + 1
        squeeze = self.num_runs == 1 and x.ndim == ndim - 1
        if squeeze:
            x = x.unsqueeze(0)
        if x.ndim != ndim or x.shape[0] != self.num_runs or x.shape[-1] != self.in_features:
            expected = ", ".join((f"num_runs={self.num_runs}", *self.axes[:-1]))
            unstacked = ", ".join(self.axes[:-1])
            hint = (
                f" (or ({unstacked}, {self.in_features}) without the run axis)"
                if self.num_runs == 1
                else ""
            )
            raise ValueError(
                f"{self.setting.upper()} input must have shape ({expected}, "
                f"{self.in_features}){hint}; got {tuple(x.shape[1:] if squeeze else x.shape)}"
            )
        dtype = self._parameter_dtype()
        if x.dtype != dtype:
            raise TypeError(f"x must have dtype {dtype} (the model's), got {x.dtype}")
        return x, squeeze

    def _parameter_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def extra_repr(self) -> str:
        return (
            f"setting={self.setting!r}, model={self.model_name!r}, task={self.task!r}, "
            f"num_rules={self.num_rules}, num_runs={self.num_runs}"
        )
