"""The study's metrics: performance, activation matrix P, collapse, specialisation, ranking.

Everything here is plain numpy / scipy / pandas on arrays and tables; models and data
live elsewhere and call these functions. Sections follow the spec:

* performance (spec §5.1): :func:`regression_loss`, :func:`classification_error`,
  :func:`performance`, :func:`higher_is_better`;
* activation-probability matrix P (spec §5.2): :class:`ActivationAccumulator`,
  :func:`activation_matrix`, :func:`normalise`;
* collapse (spec §5.3, paper Eqs. 16-17): :func:`collapse_avg`, :func:`collapse_worst`;
* specialisation (spec §5.4, paper Eqs. 18-20): :func:`alignment`, :func:`mutual_information`,
  :func:`inverse_mutual_information`, and the Adaptation building blocks
  :func:`dirichlet_draws`, :func:`adaptation_score`, :func:`adaptation_from_marginals`,
  :func:`adaptation_static`;
* the Random baseline (spec §5.5): :func:`random_baseline`;
* the ranking statistic of the pie charts (spec §5.6, §9.1): :func:`setting_winners`,
  :func:`rank_models`.

Every P metric first renormalises P to sum to 1 (spec §5.2) and accepts one matrix
``(R, R)`` (returning a ``float``) or a stack ``(..., R, R)`` (returning an array ``(...)``).

References: Mittal, Bengio, Lajoie, "Is a Modular Architecture Enough?", NeurIPS 2022
(arXiv 2206.02713), §4 and Eqs. 16-20; Kuhn (1955) for the assignment behind Alignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from mod_arch_core.validation import check_int, check_num_rules, check_task

__all__ = [
    "DEFAULT_SETTING_KEYS",
    "EPS",
    "METRIC_NAMES",
    "NO_WINNER",
    "PAPER_RANK_ORDER",
    "PROBABILITY_ATOL",
    "SUB_RANK_ORDER",
    "ActivationAccumulator",
    "activation_matrix",
    "adaptation_from_marginals",
    "adaptation_score",
    "adaptation_static",
    "alignment",
    "all_metrics",
    "classification_error",
    "collapse_avg",
    "collapse_worst",
    "dirichlet_draws",
    "higher_is_better",
    "inverse_mutual_information",
    "mutual_information",
    "normalise",
    "performance",
    "random_baseline",
    "rank_models",
    "regression_loss",
    "setting_winners",
]

#: The reference code's epsilon inside the mutual information (spec §5.4).
EPS: float = 1e-8
#: Keys of :func:`all_metrics`, in the column order of the paper's Fig. 5.
METRIC_NAMES: tuple[str, ...] = (
    "collapse_avg",
    "collapse_worst",
    "alignment",
    "inverse_mutual_info",
    "mutual_info",
)
#: Iteration order of the paper's ranking; strict comparison gives ties to the earlier model.
PAPER_RANK_ORDER: tuple[str, ...] = ("gt-modular", "modular-op", "monolithic", "modular")
#: The "sub" ranking: Modular vs Monolithic, Monolithic first, so it wins exact ties.
SUB_RANK_ORDER: tuple[str, ...] = ("monolithic", "modular")
#: Columns that identify a setting (spec §5.6) when present in the results table; the
#: model seed ``seed`` is deliberately absent (it is averaged over).
DEFAULT_SETTING_KEYS: tuple[str, ...] = (
    "setting",
    "task",
    "search_version",
    "num_rules",
    "encoder_dim",
    "dim",
    "data_seed",
    "checkpoint",
)
#: Label of settings in which no model has a finite score.
NO_WINNER: str = "no_winner"


# --------------------------------------------------------------------------------------
# Array conversion
# --------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or nested sequence) as a numpy array.

    Torch tensors are detached and moved to the CPU; floating tensors become float64 so
    that dtypes numpy lacks (bfloat16) still convert.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.double()
        return x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}") from err


def _as_float(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 array; non-numeric input raises a ``TypeError`` naming ``name``."""
    arr = _to_numpy(x, name)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _scalar_or_array(value: np.ndarray) -> float | np.ndarray:
    """A 0-d result as a Python ``float``, anything else unchanged."""
    return float(value) if np.ndim(value) == 0 else value


#: Tolerance on "sums to 1" for score vectors and distributions: float32 softmax outputs over
#: R <= 32 modules sum to 1 within about 1e-6, so 1e-3 only catches vectors that are not
#: probability distributions at all (e.g. unnormalised logits or counts).
PROBABILITY_ATOL = 1e-3


def _check_probabilities(a: np.ndarray, name: str, *, allow_nan: bool = False) -> None:
    """Refuse ``a (..., R)`` unless every row is a probability vector (within PROBABILITY_ATOL).

    Entries must be finite (NaN too, unless ``allow_nan``: a diverged run's rows are NaN and are
    passed through), in ``[0, 1]``, and each row must sum to 1.
    """
    finite = np.isfinite(a)
    if not finite.all():
        bad = a[~finite]
        if not allow_nan or np.isinf(bad).any():
            what = "inf" if np.isinf(bad).any() else "NaN"
            allowed = (
                "NaN (a diverged run) is the only non-finite value allowed"
                if allow_nan
                else ("every entry must be finite")
            )
            raise ValueError(f"{name} must hold probabilities; it contains {what} ({allowed})")
    values = a[finite]
    if values.size and values.min() < -PROBABILITY_ATOL:
        raise ValueError(
            f"{name} must hold probabilities in [0, 1] (non-negative); its smallest entry is "
            f"{values.min():.6g}"
        )
    if values.size and values.max() > 1 + PROBABILITY_ATOL:
        raise ValueError(
            f"{name} must hold probabilities in [0, 1]; its largest entry is {values.max():.6g}"
        )
    rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    rows = rows[np.isfinite(rows).all(axis=-1)]
    sums = rows.sum(axis=-1)
    off = np.abs(sums - 1.0) > PROBABILITY_ATOL
    if off.any():
        raise ValueError(
            f"{name} must be probability vectors along its last axis (each summing to 1 within "
            f"{PROBABILITY_ATOL}); found a row summing to {sums[off][0]:.6g}"
        )


# --------------------------------------------------------------------------------------
# Performance (spec §5.1)
# --------------------------------------------------------------------------------------


def _check_pair(pred: Any, target: Any, names: tuple[str, str], per_run: bool):
    """Convert a prediction/target pair, checking equal shapes and the run axis."""
    a = _as_float(pred, names[0])
    b = _to_numpy(target, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}"
        )
    if a.size == 0:
        raise ValueError(f"{names[0]} is empty (shape {a.shape}); nothing to evaluate")
    if per_run and a.ndim < 1:
        raise ValueError(f"per_run=True needs a leading run axis, got a 0-d {names[0]}")
    return a, b


def _mean(values: np.ndarray, per_run: bool) -> float | np.ndarray:
    """Mean over every element, or over every axis but the first when ``per_run``."""
    if per_run:
        return values.reshape(values.shape[0], -1).mean(axis=1)
    return float(values.mean())


def regression_loss(pred: Any, target: Any, *, per_run: bool = False) -> float | np.ndarray:
    """L1 loss: mean absolute error over every output element (spec §5.1, §4).

    Parameters
    ----------
    pred, target : array or tensor, shape ``(...)`` or ``(N, ...)``
        Same shape; tokens, steps and state dimensions all count as elements.
    per_run : bool
        If True, axis 0 indexes independent runs and the mean is over all other axes.

    Returns
    -------
    float, or ndarray ``(N,)`` when ``per_run``; range ``[0, inf)``, lower is better.
    """
    a, b = _check_pair(pred, target, ("pred", "target"), per_run)
    b = _as_float(b, "target")
    return _mean(np.abs(a - b), per_run)


def classification_error(logits: Any, target: Any, *, per_run: bool = False) -> float | np.ndarray:
    """Error in percent, ``100 - accuracy`` with accuracy = mean(1[logit >= 0] == label).

    Implements spec §5.1 (the plot scripts' "Error"): the reference stores accuracy in %
    and the figures show 100 minus it. A NaN logit counts as predicting 0, as the
    reference's ``logit >= 0`` comparison does.

    Parameters
    ----------
    logits : array or tensor, shape ``(...)`` or ``(N, ...)``
        Pre-sigmoid outputs.
    target : array or tensor, same shape
        Labels in {0, 1} (bool or numbers).
    per_run : bool
        If True, axis 0 indexes runs and the error is computed per run.

    Returns
    -------
    float, or ndarray ``(N,)`` when ``per_run``; range ``[0, 100]``, lower is better.
    """
    a, b = _check_pair(logits, target, ("logits", "target"), per_run)
    labels = b.astype(np.float64) if b.dtype != bool else b
    if b.dtype != bool and not np.isin(labels, (0.0, 1.0)).all():
        bad = np.unique(labels[~np.isin(labels, (0.0, 1.0))])[:5]
        raise ValueError(f"target must hold labels in {{0, 1}}, got values such as {bad}")
    correct = (a >= 0) == (labels == 1)
    return 100.0 - 100.0 * _mean(correct.astype(np.float64), per_run)


def performance(pred: Any, target: Any, task: str, *, per_run: bool = False) -> float | np.ndarray:
    """Headline performance for ``task`` (spec §5.1): L1 loss or error in %.

    Dispatches to :func:`regression_loss` or :func:`classification_error`; both are
    lower-is-better (see :func:`higher_is_better`). Shapes as there.
    """
    task = check_task(task)
    if task == "regression":
        return regression_loss(pred, target, per_run=per_run)
    return classification_error(pred, target, per_run=per_run)


def higher_is_better(task: str) -> bool:
    """Direction of the stored performance for ``task``: always False (spec §5.1, §9.1).

    Regression stores the L1 loss and classification the error ``100 - accuracy``, so a
    lower value is better for both; this is the corrected direction of the ranking.
    """
    check_task(task)
    return False


# --------------------------------------------------------------------------------------
# Activation-probability matrix P (spec §5.2)
# --------------------------------------------------------------------------------------


class ActivationAccumulator:
    """Streaming estimate of P[r, m] = (1/R) E[p_m | c = r] (spec §5.2).

    Feed batches with :meth:`update`, then read :meth:`matrix`. Sums are kept in
    float64, so 10^7 tokens cost nothing in precision. Scores must be probability vectors
    over the modules: entries in [0, 1], each row summing to 1 within
    :data:`PROBABILITY_ATOL`; negative, infinite or unnormalised scores raise ``ValueError``.
    NaN is the one exception: a diverged run's scores are NaN and are summed as they are, so
    its P holds NaN (which every P metric then refuses) while the other runs of a stack are
    unaffected.

    Parameters
    ----------
    num_rules : int
        R, the number of rules and of modules (>= 2).
    num_runs : int or None
        None: one run; ``update(scores (..., R), rules (...))`` and ``matrix() -> (R, R)``.
        N: N stacked runs; ``update(scores (N, ..., R), rules (N, ...) or (...))`` (rules
        shared by all runs may omit the run axis) and ``matrix() -> (N, R, R)``.

    Notes
    -----
    The Adaptation metric (spec §5.4) composes with the same class: for Dirichlet draw k
    (:func:`dirichlet_draws`), sample 10 batches with rule probabilities ``draws[k]``,
    feed them to a fresh accumulator, and take ``q_k = acc.mean_scores()`` (the mean
    module activation over all tokens, defined even if some rule never occurs). Stack the
    ``q_k`` on axis -2 and call :func:`adaptation_from_marginals`.
    """

    def __init__(self, num_rules: int, *, num_runs: int | None = None) -> None:
        self.num_rules = check_num_rules(num_rules)
        self.num_runs = None if num_runs is None else check_int(num_runs, "num_runs", minimum=1)
        lead = () if self.num_runs is None else (self.num_runs,)
        self._sums = np.zeros((*lead, self.num_rules, self.num_rules))
        self._counts = np.zeros((*lead, self.num_rules), dtype=np.int64)

    def update(self, scores: Any, rules: Any) -> None:
        """Add a batch: ``scores (..., R)`` (or ``(N, ..., R)``) and integer ``rules (...)``."""
        r = self.num_rules
        s = _as_float(scores, "scores")
        c = _to_numpy(rules, "rules")
        stacked = self.num_runs is not None
        if s.ndim < 1 + stacked or s.shape[-1] != r:
            want = "(N, ..., R)" if stacked else "(..., R)"
            raise ValueError(f"scores must have shape {want} with R = {r}, got {s.shape}")
        if stacked and s.shape[0] != self.num_runs:
            raise ValueError(
                f"scores must have num_runs = {self.num_runs} on axis 0, got {s.shape}"
            )
        allowed = [s.shape[:-1]] + ([s.shape[1:-1]] if stacked else [])
        if c.shape not in allowed:
            raise ValueError(
                f"rules must have shape {' or '.join(map(str, allowed))} to match scores "
                f"{s.shape}, got {c.shape}"
            )
        if not np.issubdtype(c.dtype, np.integer):
            raise TypeError(f"rules must be an integer array, got dtype {c.dtype}")
        _check_probabilities(s, "scores", allow_nan=True)
        if c.size and (c.min() < 0 or c.max() >= r):
            raise ValueError(
                f"rules must lie in [0, {r - 1}], got values in [{c.min()}, {c.max()}]"
            )
        c = np.broadcast_to(c, s.shape[:-1])
        n_runs = self.num_runs or 1
        s = s.reshape(n_runs, -1, r)
        # One flat bin per (run, rule): bin = run * R + rule. Loop over modules only.
        bins = (c.reshape(n_runs, -1) + r * np.arange(n_runs)[:, None]).ravel()
        counts = np.bincount(bins, minlength=n_runs * r)
        sums = np.stack(
            [np.bincount(bins, weights=s[..., m].ravel(), minlength=n_runs * r) for m in range(r)],
            axis=-1,
        )
        self._counts += counts.reshape(self._counts.shape)
        self._sums += sums.reshape(self._sums.shape)

    @property
    def counts(self) -> np.ndarray:
        """Number of examples seen per rule: ``(R,)`` or ``(N, R)``."""
        return self._counts.copy()

    def matrix(self) -> np.ndarray:
        """P, shape ``(R, R)`` or ``(N, R, R)``; rows are rules, each row sums to 1/R.

        Raises ``ValueError`` if some rule never occurred (its row cannot be estimated).
        """
        missing = np.argwhere(self._counts == 0)
        if missing.size:
            where = ", ".join(
                f"rule {m[-1]}" + (f" (run {m[0]})" if self.num_runs is not None else "")
                for m in missing[:5]
            )
            raise ValueError(
                f"cannot estimate P: {len(missing)} rule row(s) never occurred ({where}); "
                "feed more data or check the rule sampler"
            )
        return self._sums / self._counts[..., None] / self.num_rules

    def mean_scores(self) -> np.ndarray:
        """Mean score vector over every example seen, q: ``(R,)`` or ``(N, R)`` (spec §5.4)."""
        total = self._counts.sum(axis=-1)
        if np.any(total == 0):
            raise ValueError("cannot compute mean scores: no examples have been added")
        return self._sums.sum(axis=-2) / total[..., None]


def activation_matrix(
    scores: Any, rules: Any, num_rules: int, *, num_runs: int | None = None
) -> np.ndarray:
    """P[r, m] = (1/R) E[p_m | c = r] from one batch of scores (spec §5.2).

    Parameters
    ----------
    scores : array or tensor, shape ``(..., R)``, or ``(N, ..., R)`` with ``num_runs=N``
        Module activation vectors (softmax over modules) per example, token or step.
    rules : integer array or tensor, shape ``scores.shape[:-1]`` (or without the run axis)
        Ground-truth rule of each example.
    num_rules : int
        R.
    num_runs : int or None
        See :class:`ActivationAccumulator`.

    Returns
    -------
    ndarray ``(R, R)`` or ``(N, R, R)``: rows = rules, columns = modules, entries in
    ``[0, 1/R]``, each row summing to ``1/R`` when scores sum to 1.
    """
    acc = ActivationAccumulator(num_rules, num_runs=num_runs)
    acc.update(scores, rules)
    return acc.matrix()


def normalise(P: Any) -> np.ndarray:
    """P / sum(P) per matrix, after validation (spec §5.2: every metric renormalises first).

    Parameters
    ----------
    P : array or tensor, shape ``(R, R)`` or a stack ``(..., R, R)``, with R >= 2
        Finite, non-negative, not all zero.

    Returns
    -------
    ndarray of the same shape (float64), each matrix summing to 1.
    """
    p = _as_float(P, "P")
    if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"P must be a square matrix (R, R) or a stack (..., R, R), got {p.shape}")
    if p.shape[-1] < 2:
        raise ValueError(f"P must have R >= 2 rules/modules, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("P must be finite; it contains NaN or inf")
    if (p < 0).any():
        raise ValueError(f"P must be non-negative; its smallest entry is {p.min()}")
    total = p.sum(axis=(-2, -1), keepdims=True)
    if (total == 0).any():
        index = tuple(int(i) for i in np.argwhere(total == 0)[0][:-2])
        where = "" if p.ndim == 2 else f" (at stack index {index})"
        raise ValueError(f"P must not be all zeros{where}")
    return p / total


def _module_marginal(P: np.ndarray) -> np.ndarray:
    """p(m) = sum_r P[r, m] of a normalised P: ``(..., R)``."""
    return P.sum(axis=-2)


def collapse_avg(P: Any) -> float | np.ndarray:
    """Collapse-Avg, C_A = R/(R-1) sum_m max(0, 1/R - p(m)) (paper Eq. 16, spec §5.3).

    Parameters
    ----------
    P : array ``(R, R)`` or ``(..., R, R)``; renormalised first (:func:`normalise`).

    Returns
    -------
    float or ndarray ``(...)`` in ``[0, 1]``: 0 when every module is used equally, 1 when
    one module takes everything.
    """
    p = normalise(P)
    r = p.shape[-1]
    deficit = np.maximum(0.0, 1.0 / r - _module_marginal(p)).sum(axis=-1)
    return _scalar_or_array(r / (r - 1) * deficit)


def collapse_worst(P: Any) -> float | np.ndarray:
    """Collapse-Worst, C_W = 1 - R min_m p(m) (paper Eq. 17, spec §5.3).

    Parameters
    ----------
    P : array ``(R, R)`` or ``(..., R, R)``; renormalised first.

    Returns
    -------
    float or ndarray ``(...)`` in ``[0, 1]``: 1 as soon as one module is never used.
    Equal to :func:`collapse_avg` when R = 2.
    """
    p = normalise(P)
    r = p.shape[-1]
    return _scalar_or_array(1.0 - r * _module_marginal(p).min(axis=-1))


def _alignment_one(q: np.ndarray) -> float:
    """Alignment of one Q = R P ``(R, R)``: best permutation, then sum |Pi - Q| / (2R)."""
    r = q.shape[0]
    rows, cols = linear_sum_assignment(1.0 - q)
    perm = np.zeros_like(q)
    perm[rows, cols] = 1.0
    return float(np.abs(perm - q).sum() / (2 * r))


def alignment(P: Any) -> float | np.ndarray:
    """Alignment (paper Eq. 18, spec §5.4): distance of Q = R P to its best permutation.

    Solves the assignment on cost ``1 - Q`` (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``), builds the permutation matrix Pi and returns
    ``sum_{r,m} |Pi - Q| / (2R)``. When every entry of Q is <= 1 (any P whose rows sum
    to 1/R), this equals ``1 - max_pi sum_r P[r, pi(r)]``.

    Parameters
    ----------
    P : array ``(R, R)`` or ``(..., R, R)``; renormalised first.

    Returns
    -------
    float or ndarray ``(...)`` in ``[0, 1]``: 0 iff P is a scaled permutation matrix,
    ``(R-1)/R`` for uniform or fully collapsed P.
    """
    p = normalise(P)
    r = p.shape[-1]
    flat = (r * p).reshape(-1, r, r)
    values = np.array([_alignment_one(q) for q in flat]).reshape(p.shape[:-2])
    return _scalar_or_array(values)


def mutual_information(P: Any) -> float | np.ndarray:
    """Mutual information between rule and module, with the reference's EPS (spec §5.4).

    ``MI = sum_{r,m} P log(P / (p(m) p(r) + EPS) + EPS)``, natural log, EPS = 1e-8,
    on the renormalised P. The EPS makes an identity P give ``log R - O(R^2 EPS)``.

    Parameters
    ----------
    P : array ``(R, R)`` or ``(..., R, R)``.

    Returns
    -------
    float or ndarray ``(...)`` in ``[0, log R]`` up to EPS-sized slack (nats).
    """
    p = normalise(P)
    outer = p.sum(axis=-1, keepdims=True) * p.sum(axis=-2, keepdims=True)
    return _scalar_or_array((p * np.log(p / (outer + EPS) + EPS)).sum(axis=(-2, -1)))


def inverse_mutual_information(P: Any) -> float | np.ndarray:
    """Inverse MI = (log R - MI) / log R = 1 - MI / log R (paper Eq. 19, spec §5.4).

    Parameters
    ----------
    P : array ``(R, R)`` or ``(..., R, R)``.

    Returns
    -------
    float or ndarray ``(...)`` in ``[0, 1]`` up to EPS slack: about 5e-8 (R = 2) to
    3e-6 (R = 32) for a permutation, ``1 + O(R^2 EPS)`` for uniform P.
    """
    p = normalise(P)
    log_r = np.log(p.shape[-1])
    return _scalar_or_array((log_r - np.asarray(mutual_information(p))) / log_r)


def all_metrics(P: Any) -> dict[str, float | np.ndarray]:
    """Every P metric (spec §5.3-§5.4) of one matrix ``(R, R)`` or a stack ``(..., R, R)``.

    Returns
    -------
    dict with keys :data:`METRIC_NAMES` (``collapse_avg``, ``collapse_worst``,
    ``alignment``, ``inverse_mutual_info``, ``mutual_info``), each a float or an array
    ``(...)``. Adaptation needs the model and is not a function of P.
    """
    p = normalise(P)
    return {
        "collapse_avg": collapse_avg(p),
        "collapse_worst": collapse_worst(p),
        "alignment": alignment(p),
        "inverse_mutual_info": inverse_mutual_information(p),
        "mutual_info": mutual_information(p),
    }


# --------------------------------------------------------------------------------------
# Adaptation (spec §5.4, paper Eq. 20)
# --------------------------------------------------------------------------------------


def dirichlet_draws(num_rules: int, num_draws: int = 100) -> np.ndarray:
    """The rule distributions of the Adaptation metric (spec §5.4).

    Draw k is ``np.random.RandomState(k).dirichlet(np.ones(R))`` for k = 0..num_draws-1,
    exactly as the reference seeds them.

    Returns
    -------
    ndarray ``(num_draws, R)``; each row is a probability vector.
    """
    r = check_num_rules(num_rules)
    k = check_int(num_draws, "num_draws", minimum=1)
    return np.stack([np.random.RandomState(seed).dirichlet(np.ones(r)) for seed in range(k)])


def adaptation_score(p: Any, q: Any) -> float | np.ndarray:
    """Per-draw Adaptation score ``1/2 sum_i |sort(p)_i - sort(q)_i|`` (paper Eq. 20, spec §5.4).

    The ½ is the reference code's (the paper's Eq. 20 omits it). Sorting makes the score
    blind to which module serves which rule: it compares usage profiles only.

    Parameters
    ----------
    p, q : arrays ``(..., R)``, broadcastable against each other
        Rule distribution and mean module activation: probability vectors along the last axis
        (finite, non-negative, each summing to 1 within :data:`PROBABILITY_ATOL`); anything
        else raises ``ValueError`` naming ``p`` or ``q``.

    Returns
    -------
    float or ndarray (broadcast leading shape) in ``[0, 1]`` for probability vectors.
    """
    a = _as_float(p, "p")
    b = _as_float(q, "q")
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"p and q must share their last axis (R), got {a.shape} and {b.shape}")
    _check_probabilities(a, "p")
    _check_probabilities(b, "q")
    diff = np.abs(np.sort(a, axis=-1) - np.sort(b, axis=-1))
    return _scalar_or_array(0.5 * diff.sum(axis=-1))


def adaptation_from_marginals(draws: Any, q_per_draw: Any) -> float | np.ndarray:
    """Adaptation: mean over draws of :func:`adaptation_score` (paper Eq. 20, spec §5.4).

    Parameters
    ----------
    draws : array ``(K, R)``
        The rule distributions (:func:`dirichlet_draws`).
    q_per_draw : array ``(K, R)`` or ``(..., K, R)``
        Mean module activation measured under each draw (see
        :meth:`ActivationAccumulator.mean_scores`); leading axes (e.g. runs) are kept.

    Returns
    -------
    float or ndarray ``(...)`` in ``[0, 1]``; lower means the model's module usage
    follows the rule distribution.
    """
    d = _as_float(draws, "draws")
    q = _as_float(q_per_draw, "q_per_draw")
    if d.ndim != 2:
        raise ValueError(f"draws must have shape (K, R), got {d.shape}")
    if q.ndim < 2 or q.shape[-2:] != d.shape:
        raise ValueError(
            f"q_per_draw must have shape (..., {d.shape[0]}, {d.shape[1]}), got {q.shape}"
        )
    _check_probabilities(d, "draws")
    _check_probabilities(q, "q_per_draw")
    return _scalar_or_array(np.asarray(adaptation_score(d, q)).mean(axis=-1))


def adaptation_static(q: Any, num_rules: int, num_draws: int = 100) -> float | np.ndarray:
    """Adaptation of a fixed module marginal q against every Dirichlet draw (spec §5.4-§5.5).

    This is how the reference scores the Random baseline (q = uniform = 1/R each).

    Parameters
    ----------
    q : array ``(R,)`` or ``(..., R)``, or None for the uniform marginal.
    num_rules : int
        R.
    num_draws : int
        Number of Dirichlet draws (100 in the paper).

    Returns
    -------
    float or ndarray ``(...)`` in ``[0, 1]``; for uniform q: 0.25666, 0.30071, 0.33501,
    0.35401, 0.36499 for R = 2, 4, 8, 16, 32.
    """
    r = check_num_rules(num_rules)
    draws = dirichlet_draws(r, num_draws)
    qa = np.full(r, 1.0 / r) if q is None else _as_float(q, "q")
    if qa.ndim < 1 or qa.shape[-1] != r:
        raise ValueError(f"q must have shape (..., {r}) for num_rules = {r}, got {qa.shape}")
    _check_probabilities(qa, "q")
    return _scalar_or_array(np.asarray(adaptation_score(draws, qa[..., None, :])).mean(axis=-1))


# --------------------------------------------------------------------------------------
# Random baseline (spec §5.5)
# --------------------------------------------------------------------------------------


def random_baseline(num_rules: int, num_draws: int = 100) -> dict[str, float]:
    """Every metric of the Random baseline: uniform P = 1/R^2 (spec §5.5, §7).

    Returns
    -------
    dict with the keys of :func:`all_metrics` plus ``adaptation`` (static, uniform q):
    C_A = C_W = 0, Alignment = (R-1)/R, Inverse MI = 1 + O(R^2 EPS), and Adaptation
    0.25666, 0.30071, 0.33501, 0.35401, 0.36499 for R = 2..32.
    """
    r = check_num_rules(num_rules)
    values = {k: float(v) for k, v in all_metrics(np.full((r, r), 1.0 / r**2)).items()}
    values["adaptation"] = float(adaptation_static(None, r, num_draws))
    return values


# --------------------------------------------------------------------------------------
# Ranking statistic (spec §5.6, §9.1)
# --------------------------------------------------------------------------------------


def _model_key(name: Any) -> str:
    """Model name compared loosely: lower case, ``_`` -> ``-`` (GT_Modular -> gt-modular)."""
    return str(name).strip().lower().replace("_", "-")


def _check_models(models: Sequence[str]) -> tuple[str, ...]:
    if isinstance(models, str) or len(models) < 1:
        raise ValueError(f"models must be a non-empty sequence of model names, got {models!r}")
    keys = tuple(_model_key(m) for m in models)
    if len(set(keys)) != len(keys):
        raise ValueError(f"models must not repeat a model, got {list(models)}")
    return keys


def _setting_keys(df: pd.DataFrame, setting_keys: Sequence[str] | None) -> list[str]:
    if setting_keys is None:
        return [k for k in DEFAULT_SETTING_KEYS if k in df.columns]
    keys = [setting_keys] if isinstance(setting_keys, str) else list(setting_keys)
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ValueError(
            f"setting_keys {missing} are not columns of the results table; "
            f"columns: {list(df.columns)}"
        )
    return keys


def setting_winners(
    df: pd.DataFrame,
    *,
    metric: str = "perf",
    models: Sequence[str] = PAPER_RANK_ORDER,
    setting_keys: Sequence[str] | None = None,
    checkpoint: str | None = "last",
    as_released: bool = False,
) -> pd.DataFrame:
    """The winning model of every setting (spec §5.6), before counting.

    A setting is one combination of ``setting_keys``; each model is scored by the mean
    of ``metric`` over its rows (the model seeds). The mean propagates NaN, as the
    reference's plain sum does, so a model with a diverged seed cannot win.

    Parameters
    ----------
    df : DataFrame, one row per run
        Needs ``model`` and ``metric`` columns, plus the key columns.
    metric : str
        Lower-is-better column to rank on (``perf`` or ``perf_ood``: loss or error).
    models : sequence of str
        Contestants in iteration order. The comparison is strict, so an exact tie goes to
        the model listed first: :data:`PAPER_RANK_ORDER` for the 4-model pie,
        :data:`SUB_RANK_ORDER` for the Modular-vs-Monolithic pie.
    setting_keys : sequence of str or None
        Columns that define a setting. None: those of :data:`DEFAULT_SETTING_KEYS` present
        in ``df`` (setting, task, search_version, num_rules, encoder_dim, dim, data_seed,
        checkpoint). Missing values (search_version of non-MHA rows) form their own group.
    checkpoint : str or None
        If ``df`` has a ``checkpoint`` column, keep only these rows ("last", as the
        paper's pies); None keeps all, each checkpoint then counting as its own setting.
    as_released : bool
        Reproduce the released code's bug (spec §9.1): for RNN classification it ranks
        accuracy with ``<``, i.e. the model with the *highest* error wins. Needs
        ``setting`` and ``task`` among the keys.

    Returns
    -------
    DataFrame, one row per setting: the key columns, one column per model (its mean
    metric, NaN if absent) and ``winner`` (a model name or :data:`NO_WINNER` when no
    model has a finite score; non-finite scores never win).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    order = _check_models(models)
    for col in ("model", metric):
        if col not in df.columns:
            raise ValueError(f"results table needs a {col!r} column; columns: {list(df.columns)}")
    if not pd.api.types.is_numeric_dtype(df[metric]):
        raise TypeError(f"metric column {metric!r} must be numeric, got dtype {df[metric].dtype}")
    keys = _setting_keys(df, setting_keys)
    if as_released and not {"setting", "task"} <= set(keys):
        raise ValueError(f"as_released=True needs 'setting' and 'task' in setting_keys, got {keys}")
    if checkpoint is not None and "checkpoint" in df.columns:
        df = df[df["checkpoint"].astype(str) == checkpoint]
        if df.empty:
            raise ValueError(f"no rows with checkpoint == {checkpoint!r}")
    table = df.assign(model=df["model"].map(_model_key))
    present = set(table["model"])
    absent = [m for m in order if m not in present]
    if absent:
        raise ValueError(f"models {absent} do not occur in the table; present: {sorted(present)}")
    table = table[table["model"].isin(order)]
    if not keys:  # the whole table is one setting
        table = table.assign(_setting=0)
        keys = ["_setting"]

    grouped = table.assign(_nan=table[metric].isna()).groupby([*keys, "model"], dropna=False)
    means = grouped[metric].mean().where(~grouped["_nan"].any())
    wide = means.unstack("model").reindex(columns=list(order))
    values = wide.to_numpy(dtype=np.float64)
    score = values.copy()
    if as_released:
        setting = wide.index.get_level_values("setting").map(_model_key)
        task = wide.index.get_level_values("task").map(_model_key)
        flip = np.asarray((setting == "rnn") & (task == "classification"))
        score[flip] = -score[flip]  # highest error = lowest accuracy "wins"
    finite = np.isfinite(score)
    score[~finite] = np.inf
    best = np.argmin(score, axis=1)  # first minimum: ties go to the earlier model
    winner = np.where(finite.any(axis=1), np.array(order, dtype=object)[best], NO_WINNER)

    out = wide.reset_index()
    out.columns.name = None
    out["winner"] = winner
    return out.drop(columns=["_setting"], errors="ignore")


def rank_models(
    df: pd.DataFrame,
    *,
    metric: str = "perf",
    models: Sequence[str] = PAPER_RANK_ORDER,
    setting_keys: Sequence[str] | None = None,
    checkpoint: str | None = "last",
    as_released: bool = False,
) -> pd.DataFrame:
    """Ranking statistic of the paper's pie charts (Fig. 3; spec §5.6, §9.1).

    Counts, over all settings, how often each model has the lowest mean ``metric``.
    Arguments as in :func:`setting_winners`: ``models=SUB_RANK_ORDER`` gives the "sub"
    (Modular vs Monolithic) ranking, ``as_released=True`` the released RNN
    classification bug, ``metric="perf_ood"`` the OoD ranking.

    Returns
    -------
    DataFrame indexed by ``model`` (the given order, then :data:`NO_WINNER`), columns
    ``wins`` (int) and ``share`` (wins / number of settings, in [0, 1]). The number of
    settings counted is ``wins.sum()``, also stored in ``.attrs["num_settings"]``.
    """
    winners = setting_winners(
        df,
        metric=metric,
        models=models,
        setting_keys=setting_keys,
        checkpoint=checkpoint,
        as_released=as_released,
    )
    labels = [*_check_models(models), NO_WINNER]
    wins = winners["winner"].value_counts().reindex(labels, fill_value=0).astype(int)
    n = int(wins.sum())
    result = pd.DataFrame({"wins": wins, "share": wins / n if n else np.nan})
    result.index.name = "model"
    result.attrs["num_settings"] = n
    return result
