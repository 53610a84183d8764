"""Aggregation: combine the modules' outputs with the routing probabilities.

Spec §3.1 "Scores" and paper Table 1 (``y = sum_m p_m y_m``); the survey's representation
aggregation (survey-map §A4).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["weighted_sum"]


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
