"""Aggregation: combine the modules' outputs with the routing probabilities.

Spec §3.1 "Scores" and paper Table 1 (``y = sum_m p_m y_m``); the survey's representation
aggregation (survey-map §A4).

When the modules' outputs come out of one :class:`~mod_arch_core.models.layers.GroupLinear`
(the last layer of the MLP and attention modules), :func:`mixed_group_linear` computes the
same weighted sum without materialising the R outputs: by linearity,
``sum_m p_m (a_m W_m + b_m) = [p_1 a_1, ..., p_R a_R] @ [W_1; ...; W_R] + p @ b``, one matrix
product of the probability-weighted hidden activations. At N = 25 stacked runs the R outputs
(``(N, B, R, D)``, 26 MB for the MLP at R = 8, D = 128) and their backward pass were the largest
single cost of a training step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mixed_group_linear", "weighted_sum"]


def weighted_sum(values: Tensor, probs: Tensor) -> Tensor:
    """``sum_m p_m * values_m`` over the module axis (spec §3.1; Table 1 "Modular").

    Parameters
    ----------
    values : Tensor, shape (..., R, D)
        Every module's output.
    probs : Tensor, shape (..., R)
        Routing probabilities.

    Returns
    -------
    Tensor, shape (..., D)
    """
    if values.shape[:-1] != probs.shape:
        raise ValueError(
            f"values (..., R, D) and probs (..., R) disagree: {tuple(values.shape)} vs "
            f"{tuple(probs.shape)}"
        )
    return (values * probs.unsqueeze(-1)).sum(dim=-2)


def mixed_group_linear(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, probs: Tensor
) -> Tensor:
    """``weighted_sum(group_linear(hidden, weight, bias), probs)`` in one product (Table 1).

    Module m's output is ``hidden_m @ weight_m + bias_m``; the weighted sum over m equals
    ``[p_1 hidden_1, ..., p_R hidden_R] @ [weight_1; ...; weight_R] + probs @ bias`` (the same
    number up to floating-point rounding), computed without the (N, ..., R, dout) outputs.

    Parameters
    ----------
    hidden : Tensor, shape (N, ..., R, din)
        Every module's input to its last linear map.
    weight : Tensor, shape (N, R, din, dout)
    bias : Tensor of shape (N, R, dout), or None
    probs : Tensor, shape (N, ..., R)
        Routing probabilities (or any combination weights).

    Returns
    -------
    Tensor, shape (N, ..., dout)
    """
    n, r, din, dout = weight.shape
    if hidden.shape[:-1] != probs.shape or hidden.shape[-1] != din or hidden.shape[0] != n:
        raise ValueError(
            f"hidden (N, ..., R, din={din}) and probs (N, ..., R) disagree: "
            f"{tuple(hidden.shape)} vs {tuple(probs.shape)}"
        )
    lead = probs.shape[1:-1]
    weighted = hidden * probs.unsqueeze(-1)  # (N, ..., R, din)
    if bias is not None:
        # The bias term p @ b rides along as one more input row per module: [p_m a_m, p_m].
        weighted = torch.cat([weighted, probs.unsqueeze(-1)], dim=-1)
        weight = torch.cat([weight, bias.unsqueeze(-2)], dim=-2)  # (N, R, din + 1, dout)
    rows = weighted.shape[-1] * r
    out = torch.bmm(weighted.reshape(n, -1, rows), weight.reshape(n, rows, dout))
    return out.view(n, *lead, dout)
