"""MHA rule family: task-conditioned search and retrieval over a sequence (spec §2.2).

Every token i of a length-L sequence has its own rule ``c_i``. Rule r owns a block of
feature columns holding a query ``q_r``, a second query ``q'_r`` and two values
``v_r, v'_r``. Token i searches all *other* tokens with its own rule's queries,

* version 1 (paper Eqs. 9-10): scalar queries, ``s = argmin_{j != i} |q_r[j] - q_r[i]|``;
* version 2: 2-d unit keys, ``s = argmax_{j != i} <q_r[j], q_r[i]>`` (cosine),

and likewise ``s'`` with ``q'``; its label is
``y[i] = alpha[c_i] * v_{c_i}[s] + beta[c_i] * v'_{c_i}[s']``. The coefficients are the
MLP ones for the same data seed (:func:`mod_arch_core.data.mlp.draw_alpha_beta`).
Ties go to the first index, as with numpy's ``argmin`` / ``argmax``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from mod_arch_core.data.mlp import draw_alpha_beta, linear_rule_labels

if TYPE_CHECKING:
    from mod_arch_core.data.tasks import RuleTask

#: Rules are drawn after the features (spec §2.2).
RULES_FIRST = False
#: Training length; evaluation uses {3, 5, 10, 20, 30} (spec §2.2).
DEFAULT_SEQ_LEN: int | None = 10
#: Search excludes the token itself, so a sequence needs a second token.
MIN_SEQ_LEN: int | None = 2
#: Search and labels are computed in float64 (small gathers, so nearly free).
LABEL_DTYPE = torch.float64

#: Feature columns per rule: v1 ``[q, q', v, v']``, v2 ``[q (2), q' (2), v, v']``.
COLUMNS_PER_RULE: dict[int, int] = {1: 4, 2: 6}


def draw_search_features(
    generator: torch.Generator,
    batch_size: int,
    seq_len: int,
    num_rules: int,
    search_version: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw the raw token features of spec §2.2.

    Version 1: ``randn(B, L, 4R)``. Version 2: ``keys = randn(B, L, R, 2, 2)`` with each
    2-vector normalised to unit length, then ``vals = randn(B, L, R, 2)``; rule r's
    columns ``6r..6r+5`` are ``[q (2), q' (2), v, v']``.

    Returns
    -------
    torch.Tensor (B, L, 4R) or (B, L, 6R), float32
    """
    shape = (batch_size, seq_len, num_rules)
    if search_version == 1:
        return torch.randn(*shape, 4, generator=generator, device=device).flatten(2)
    keys = torch.randn(*shape, 2, 2, generator=generator, device=device)
    keys = keys / torch.linalg.vector_norm(keys, dim=-1, keepdim=True)
    vals = torch.randn(*shape, 2, generator=generator, device=device)
    return torch.cat([keys.flatten(3), vals], dim=-1).flatten(2)


def search(
    features: torch.Tensor, rules: torch.Tensor, search_version: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Search and retrieval of every token under its own rule (spec §2.2, Eqs. 9-10).

    Token i gathers only its own rule's columns for all L candidates (``L*L*K`` numbers
    per sequence, not ``R`` times that), then searches over ``j != i``.

    Parameters
    ----------
    features : torch.Tensor (B, L, K*R)
        Raw features, K = 4 (version 1) or 6 (version 2) columns per rule.
    rules : torch.Tensor (B, L) int64
    search_version : {1, 2}

    Returns
    -------
    s, s_prime : torch.Tensor (B, L) int64
        Indices found with ``q`` and with ``q'``.
    v, v_prime : torch.Tensor (B, L), dtype of ``features``
        Retrieved values ``v_{c_i}[s_i]`` and ``v'_{c_i}[s'_i]``.
    """
    batch, length, width = features.shape
    k = COLUMNS_PER_RULE[search_version]
    # (B, R, K, L): candidates j on the last axis, so every reduction is contiguous.
    by_rule = features.view(batch, length, width // k, k).permute(0, 2, 3, 1)
    own = by_rule[torch.arange(batch, device=features.device)[:, None], rules]  # (B, Li, K, Lj)
    # Search in float64: distances / dot products of float32 numbers are then exact
    # (or nearly so), so ties and orderings are those of the real-valued features.
    queries = own[:, :, : k - 2].to(torch.float64)
    self_mask = torch.eye(length, dtype=torch.bool, device=features.device)[:, None, :]
    if search_version == 1:  # queries: (B, Li, [q, q'], Lj)
        own_query = torch.diagonal(queries, dim1=1, dim2=3).transpose(1, 2)  # (B, Li, 2)
        dist = (queries - own_query[..., None]).abs()
        index = dist.masked_fill(self_mask, torch.inf).argmin(dim=-1)  # (B, Li, 2)
    else:
        q = queries.unflatten(2, (2, 2))  # (B, Li, [q, q'], 2 components, Lj)
        own_q = torch.diagonal(q, dim1=1, dim2=4).permute(0, 3, 1, 2)  # (B, Li, 2, 2)
        sim = q[:, :, :, 0] * own_q[..., 0, None] + q[:, :, :, 1] * own_q[..., 1, None]
        index = sim.masked_fill(self_mask, -torch.inf).argmax(dim=-1)  # (B, Li, 2)
    values = own[:, :, k - 2 :].gather(-1, index[..., None]).squeeze(-1)  # (B, Li, 2)
    return index[..., 0], index[..., 1], values[..., 0], values[..., 1]


# ----------------------------------------------------------------------------------------
# Family interface used by :mod:`mod_arch_core.data.tasks`.


def feature_dim(task: RuleTask) -> int:
    """Raw features per token: 4R (version 1) or 6R (version 2)."""
    return COLUMNS_PER_RULE[task.search_version] * task.num_rules


def output_dim(task: RuleTask) -> int:
    """One scalar target per token."""
    return 1


def draw_coefficients(task: RuleTask) -> dict[str, np.ndarray]:
    """``alpha`` and ``beta``, identical to the MLP ones for the same data seed."""
    return draw_alpha_beta(task.data_seed, task.num_rules)


def draw_features(
    task: RuleTask,
    generator: torch.Generator,
    batch_size: int,
    seq_len: int | None,
    device: torch.device,
) -> torch.Tensor:
    """Raw features ``(B, L, 4R | 6R)`` float32 (see :func:`draw_search_features`)."""
    assert seq_len is not None
    return draw_search_features(
        generator, batch_size, seq_len, task.num_rules, task.search_version, device
    )


def latent_targets(
    task: RuleTask,
    features: torch.Tensor,
    rules: torch.Tensor,
    group: torch.Tensor,
    coefficients: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Real-valued labels of N runs from U raw draws.

    The search depends only on the raw draw, so it runs once per draw; only the
    coefficients differ between runs.

    Parameters
    ----------
    features : torch.Tensor (U, B, L, K*R)
    rules : torch.Tensor (U, B, L) int64
    group : torch.Tensor (N,) int64
    coefficients : dict
        ``alpha``, ``beta``: ``(N, R)``.

    Returns
    -------
    torch.Tensor (N, B, L) float64
    """
    draws, batch = features.shape[:2]
    _, _, v, v_prime = search(features.flatten(0, 1), rules.flatten(0, 1), task.search_version)
    v = v.view(draws, batch, -1)[group]
    v_prime = v_prime.view(draws, batch, -1)[group]
    return linear_rule_labels(v, v_prime, rules[group], coefficients["alpha"], coefficients["beta"])
