"""RNN rule family: a switching linear dynamical system (spec §2.3, paper Eqs. 14-15).

Coefficients per data seed (``rng = np.random.RandomState(data_seed)``, in this order):
``A = rng.randn(R, order, d, d) / sqrt(order*d)``, ``B = rng.randn(R, d, d) / sqrt(d)``
and, for classification only, ``w = rng.randn(d, 1)``; so A and B are the same for both
tasks. Per step, in row-vector convention with ``s_{-1} = 0``,

    s_t = x_t @ B[c_t] + s_{t-1} @ A[c_t, 0],

with the rules drawn before ``x ~ N(0, I_d)``. Regression targets are the full state
``s_t`` (d numbers); classification targets are ``1[s_t @ w >= 0]``. Only the paper's
Markov order 1 is implemented.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from mod_arch_core.data.tasks import RuleTask

#: Rules are drawn before the inputs (spec §2.3).
RULES_FIRST = True
#: Training length; evaluation uses {3, 5, 10, 20, 30} (spec §2.3).
DEFAULT_SEQ_LEN: int | None = 10
MIN_SEQ_LEN: int | None = 1
#: The recursion runs in float64 and its states are rounded to float32 once, like the
#: other families' labels. In float32 the rounding of each step's matrix product depends
#: on the BLAS kernel, which depends on the batch shape and on the CPU, so a run's labels
#: differed between a stacked and an alone draw; in float64 those differences (~1e-16)
#: almost never survive the final rounding (at most one float32 ulp when they do).
LABEL_DTYPE = torch.float64


def draw_dynamics(
    data_seed: int, num_rules: int, state_dim: int, order: int, classification: bool
) -> dict[str, np.ndarray]:
    """The switching-LDS coefficients of spec §2.3.

    Returns
    -------
    dict
        ``A`` ``(R, order, d, d)``, ``B`` ``(R, d, d)`` and, for classification only,
        ``w`` ``(d, 1)``; float64, drawn in that order from ``RandomState(data_seed)``.
    """
    rng = np.random.RandomState(data_seed)
    d = state_dim
    coefficients = {
        "A": rng.randn(num_rules, order, d, d) / np.sqrt(order * d),
        "B": rng.randn(num_rules, d, d) / np.sqrt(d),
    }
    if classification:
        coefficients["w"] = rng.randn(d, 1)
    return coefficients


def run_dynamics(
    x: torch.Tensor, rules: torch.Tensor, A: torch.Tensor, B: torch.Tensor
) -> torch.Tensor:
    """States of the order-1 switching LDS, ``s_t = x_t B[c_t] + s_{t-1} A[c_t, 0]`` (§2.3).

    Each step applies all R maps in one matrix product and keeps the one of the step's
    rule: a dense ``(B, d) @ (d, R*d)`` product is much faster than gathering a ``d x d``
    matrix per sequence and step, for the R <= 32, d = 32 of the paper.

    Parameters
    ----------
    x : torch.Tensor (N, B, L, d)
        Inputs of N runs.
    rules : torch.Tensor (N, B, L) int64
    A : torch.Tensor (N, R, 1, d, d)
        State maps of each run (order 1).
    B : torch.Tensor (N, R, d, d)
        Input maps of each run.

    Returns
    -------
    torch.Tensor (N, B, L, d), dtype of ``A``
        The states ``s_t``.
    """
    runs, batch, length, d = x.shape
    num_rules = B.shape[1]
    all_b = B.permute(0, 2, 1, 3).reshape(runs, d, num_rules * d)  # column block r = B[r]
    all_a = A[:, :, 0].permute(0, 2, 1, 3).reshape(runs, d, num_rules * d)
    drive = torch.bmm(x.to(B.dtype).reshape(runs, batch * length, d), all_b)
    drive = _pick_rule(drive.view(runs, batch, length, num_rules, d), rules)  # (N, B, L, d)
    states = [drive[:, :, 0]]
    for t in range(1, length):
        carried = torch.bmm(states[-1], all_a).view(runs, batch, num_rules, d)
        states.append(drive[:, :, t] + _pick_rule(carried, rules[:, :, t]))
    return torch.stack(states, dim=2)


def _pick_rule(per_rule: torch.Tensor, rules: torch.Tensor) -> torch.Tensor:
    """Select ``per_rule[..., rules[...], :]``: ``(*S, R, d)``, ``(*S,)`` -> ``(*S, d)``."""
    num_rules, d = per_rule.shape[-2:]
    rows = torch.arange(rules.numel(), device=rules.device) * num_rules + rules.reshape(-1)
    return per_rule.reshape(-1, d).index_select(0, rows).view(*rules.shape, d)


# ----------------------------------------------------------------------------------------
# Family interface used by :mod:`mod_arch_core.data.tasks`.


def feature_dim(task: RuleTask) -> int:
    """Raw features per step: ``x_t`` (d)."""
    assert task.state_dim is not None
    return task.state_dim


def output_dim(task: RuleTask) -> int:
    """The full state (d) for regression, one logit for classification (spec §2.3)."""
    assert task.state_dim is not None
    return 1 if task.is_classification else task.state_dim


def draw_coefficients(task: RuleTask) -> dict[str, np.ndarray]:
    """``A``, ``B`` and (classification) ``w`` for ``task`` (see :func:`draw_dynamics`)."""
    assert task.state_dim is not None and task.order is not None
    return draw_dynamics(
        task.data_seed, task.num_rules, task.state_dim, task.order, task.is_classification
    )


def draw_features(
    task: RuleTask,
    generator: torch.Generator,
    batch_size: int,
    seq_len: int | None,
    device: torch.device,
) -> torch.Tensor:
    """Inputs ``x ~ N(0, I_d)``: ``(B, L, d)`` float32."""
    assert seq_len is not None and task.state_dim is not None
    return torch.randn(batch_size, seq_len, task.state_dim, generator=generator, device=device)


def latent_targets(
    task: RuleTask,
    features: torch.Tensor,
    rules: torch.Tensor,
    group: torch.Tensor,
    coefficients: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Real-valued targets of N runs from U raw draws.

    Parameters
    ----------
    features : torch.Tensor (U, B, L, d)
    rules : torch.Tensor (U, B, L) int64
    group : torch.Tensor (N,) int64
    coefficients : dict
        ``A`` ``(N, R, 1, d, d)``, ``B`` ``(N, R, d, d)``, ``w`` ``(N, d, 1)`` (classification).

    Returns
    -------
    torch.Tensor, dtype :data:`LABEL_DTYPE`
        States ``(N, B, L, d)`` (regression) or ``s_t @ w`` ``(N, B, L)`` (classification).
    """
    states = run_dynamics(features[group], rules[group], coefficients["A"], coefficients["B"])
    if not task.is_classification:
        return states
    return (states @ coefficients["w"][:, None]).squeeze(-1)
