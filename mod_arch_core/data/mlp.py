"""MLP rule family: a task-conditioned linear map of two scalars (spec §2.1).

Coefficients per data seed: ``alpha = rng.randn(R)`` then ``beta = rng.randn(R)`` with
``rng = np.random.RandomState(data_seed)``. Per example: ``x1, x2 ~ N(0, 1)`` (scalars,
drawn in that order, then the rule ``c``) and ``y = alpha[c] * x1 + beta[c] * x2``
(the paper's Eq. 5; classification thresholds ``y`` at 0, see :mod:`.tasks`).
The MHA family (spec §2.2) draws the same ``alpha``/``beta``, through
:func:`draw_alpha_beta`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from mod_arch_core.data.tasks import RuleTask

#: Rules are drawn after the features (spec §2.1: x1, x2, then c).
RULES_FIRST = False
#: Examples are single vectors, not sequences.
DEFAULT_SEQ_LEN: int | None = None
MIN_SEQ_LEN: int | None = None
#: Labels are computed in float64 (elementwise, so free): exact on the float32 inputs.
LABEL_DTYPE = torch.float64


def draw_alpha_beta(data_seed: int, num_rules: int) -> dict[str, np.ndarray]:
    """The MLP / MHA rule coefficients of spec §2.1-2.2 (reference values in §2.5).

    Returns
    -------
    dict
        ``alpha`` and ``beta``, each ``(R,)`` float64, drawn in that order from
        ``np.random.RandomState(data_seed)``.
    """
    rng = np.random.RandomState(data_seed)
    alpha = rng.randn(num_rules)
    beta = rng.randn(num_rules)
    return {"alpha": alpha, "beta": beta}


def linear_rule_labels(
    x1: torch.Tensor,
    x2: torch.Tensor,
    rules: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
) -> torch.Tensor:
    """Real-valued label ``y = alpha[c] * x1 + beta[c] * x2`` per run (spec §2.1, Eq. 5).

    Parameters
    ----------
    x1, x2 : torch.Tensor (N, *S)
        The two operands of every example (MHA passes the retrieved values here).
    rules : torch.Tensor (N, *S) int64
    alpha, beta : torch.Tensor (N, R)
        Coefficients of each run.

    Returns
    -------
    torch.Tensor (N, *S), dtype of ``alpha``
    """
    flat = rules.reshape(rules.shape[0], -1)
    a = alpha.gather(1, flat).view(rules.shape)
    b = beta.gather(1, flat).view(rules.shape)
    return a * x1.to(alpha.dtype) + b * x2.to(beta.dtype)


# ----------------------------------------------------------------------------------------
# Family interface used by :mod:`mod_arch_core.data.tasks`.


def feature_dim(task: RuleTask) -> int:
    """Raw features per example: ``[x1, x2]``."""
    return 2


def output_dim(task: RuleTask) -> int:
    """One scalar target per example."""
    return 1


def draw_coefficients(task: RuleTask) -> dict[str, np.ndarray]:
    """``alpha`` and ``beta`` for ``task.data_seed`` (see :func:`draw_alpha_beta`)."""
    return draw_alpha_beta(task.data_seed, task.num_rules)


def draw_features(
    task: RuleTask,
    generator: torch.Generator,
    batch_size: int,
    seq_len: int | None,
    device: torch.device,
) -> torch.Tensor:
    """Draw ``x1`` then ``x2``, each ``N(0, 1)`` (spec §2.1); returns ``(B, 2)`` float32."""
    x1 = torch.randn(batch_size, generator=generator, device=device)
    x2 = torch.randn(batch_size, generator=generator, device=device)
    return torch.stack([x1, x2], dim=-1)


def latent_targets(
    task: RuleTask,
    features: torch.Tensor,
    rules: torch.Tensor,
    group: torch.Tensor,
    coefficients: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Real-valued labels of N runs from U raw draws.

    Parameters
    ----------
    features : torch.Tensor (U, B, 2)
    rules : torch.Tensor (U, B) int64
    group : torch.Tensor (N,) int64
        Which raw draw each run uses.
    coefficients : dict
        ``alpha``, ``beta``: ``(N, R)``.

    Returns
    -------
    torch.Tensor (N, B) float64
    """
    x = features[group]
    return linear_rule_labels(
        x[..., 0], x[..., 1], rules[group], coefficients["alpha"], coefficients["beta"]
    )
