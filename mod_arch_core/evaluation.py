"""Evaluation of a trained stack: performance, activation matrix P and the five metrics (spec §5).

For every run of a stack and for each checkpoint (``last``, ``best``) this computes

* ID and OoD performance (spec §5.1): MLP one pair; MHA/RNN one pair per evaluation length
  (3, 5, 10, 20, 30), with the headline ``perf`` = ID at length 10 and ``perf_ood`` = inputs x2 at
  length 30;
* the activation matrix P[r, m] = (1/R) E[p_m | c = r] (spec §5.2) from the model's scores;
* Collapse-Avg, Collapse-Worst, Alignment, inverse mutual information (spec §5.3-5.4) from P;
* the model-based Adaptation (spec §5.4, Eq. 20): Dirichlet draws p_k (``RandomState(k)``), data
  drawn with rule distribution p_k, q_k = mean module activation, score 1/2 sum |sort p - sort q|;
* for a model with hard routing (``model.hard_routing``: top-k, Gumbel), the same five metrics
  once more on the *selection* frequencies, P built from ``onehot(argmax scores)`` instead of the
  scores (keys :data:`SELECTED_METRIC_NAMES`, Switch's ``f_m`` next to the soft ``P_m``).

Sample budgets are parameters (:class:`EvalBudget`); :meth:`EvalBudget.paper` gives the paper's.
Every evaluation stream is seeded from the run's model seed only, so a run evaluates on the same
data whether it was trained alone or in a stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mod_arch_core import metrics
from mod_arch_core.data import sample_stack
from mod_arch_core.training import (
    TrainConfig,
    TrainResult,
    build_stack,
    evaluate_batches,
    resolve_device,
    run_generators,
)
from mod_arch_core.validation import check_int

#: Evaluation lengths for MHA and RNN (spec §5.1).
EVAL_LENGTHS: tuple[int, ...] = (3, 5, 10, 20, 30)
#: Streams of a model seed used by evaluation (training uses 0-2, see ``training``).
STREAM_PERF_ID, STREAM_PERF_OOD, STREAM_PROB, STREAM_ADAPT = 10, 11, 12, 13
#: Names of the five metrics, in the paper's column order (Fig. 5).
METRIC_NAMES: tuple[str, ...] = (
    "collapse_avg",
    "collapse_worst",
    "alignment",
    "adaptation",
    "inverse_mutual_info",
)
#: The five metrics of the selection frequencies, for models with hard routing.
SELECTED_METRIC_NAMES: tuple[str, ...] = tuple(f"{name}_selected" for name in METRIC_NAMES)


def _paper_perf_batch_size(setting: str, task: str) -> int:
    """Evaluation batch sizes of the reference ``perf.py`` (spec §5.1)."""
    if setting == "mlp":
        return 1000
    if setting == "mha":
        return 256 if task == "regression" else 1000
    return 256


@dataclass(frozen=True)
class EvalBudget:
    """How many samples each evaluation uses. Defaults are the paper's (spec §5)."""

    perf_batches: int = 100  # fresh batches per performance number (spec §5.1)
    perf_batch_size: int | None = None  # None: the reference's per-setting size (spec §5.1)
    lengths: tuple[int, ...] = EVAL_LENGTHS  # MHA/RNN evaluation lengths
    prob_batches: int = 1000  # batches for P (spec §5.2)
    prob_batch_size: int | None = None  # None: 1000 (MLP, MHA) or 100 sequences (RNN)
    adaptation_draws: int = 100  # Dirichlet draws, seeds 0..draws-1 (spec §5.4)
    adaptation_batches: int = 10  # batches per draw
    adaptation_batch_size: int = 1000  # examples / sequences per batch

    def __post_init__(self) -> None:
        for name in ("perf_batches", "prob_batches", "adaptation_draws", "adaptation_batches"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.adaptation_batch_size, "adaptation_batch_size", minimum=1)
        for name in ("perf_batch_size", "prob_batch_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        lengths = tuple(check_int(length, "lengths", minimum=2) for length in self.lengths)
        if 10 not in lengths or 30 not in lengths:
            raise ValueError(
                f"lengths must include 10 (headline ID) and 30 (headline OoD), got {list(lengths)}"
            )
        object.__setattr__(self, "lengths", lengths)

    @classmethod
    def paper(cls) -> EvalBudget:
        """The paper's budgets (spec §5): 100 perf batches, 1000 P batches, 100 x 10 draws."""
        return cls()

    def perf_size(self, setting: str, task: str) -> int:
        if self.perf_batch_size is not None:
            return self.perf_batch_size
        return _paper_perf_batch_size(setting, task)

    def prob_size(self, setting: str) -> int:
        if self.prob_batch_size is not None:
            return self.prob_batch_size
        return 100 if setting == "rnn" else 1000

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _routes_hard(model: nn.Module) -> bool:
    """True if the model declares hard routing (its forward weights are a selection)."""
    return bool(getattr(model, "hard_routing", False))


def _selection(scores: torch.Tensor) -> torch.Tensor:
    """One-hot of the argmax of the scores: (..., R) -> (..., R)."""
    return F.one_hot(scores.argmax(dim=-1), scores.shape[-1]).to(scores.dtype)


def _finite_runs(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split off runs whose scores are not finite (a diverged run), so the others still count.

    Parameters
    ----------
    scores : (runs, ..., R) tensor

    Returns
    -------
    scores with each such run's scores replaced by the uniform 1/R (a placeholder whose metrics
    are discarded), and the (runs,) bool tensor of those runs.
    """
    bad = ~torch.isfinite(scores).flatten(1).all(dim=1)
    if bool(bad.any()):
        shape = (-1,) + (1,) * (scores.dim() - 1)
        scores = torch.where(
            bad.view(shape), torch.full_like(scores, 1.0 / scores.shape[-1]), scores
        )
    return scores, bad


def evaluate_performance(
    model: nn.Module,
    tasks: Sequence[Any],
    config: TrainConfig,
    budget: EvalBudget,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """ID and OoD performance of every run (spec §5.1); each value has shape (runs,).

    Keys: ``perf``, ``perf_ood`` (headline numbers) and, for MHA/RNN, ``perf_{L}`` and
    ``perf_ood_{L}`` for every evaluation length L.
    """
    size = budget.perf_size(config.setting, config.task)
    common = dict(num_batches=budget.perf_batches, batch_size=size, task=config.task, device=device)
    out: dict[str, np.ndarray] = {}
    if config.setting == "mlp":
        for ood, key, stream in (
            (False, "perf", STREAM_PERF_ID),
            (True, "perf_ood", STREAM_PERF_OOD),
        ):
            gens = run_generators(config, stream, device)
            out[key] = evaluate_batches(model, tasks, gens, ood=ood, **common).cpu().numpy()
        return out
    for ood, prefix, stream in (
        (False, "perf", STREAM_PERF_ID),
        (True, "perf_ood", STREAM_PERF_OOD),
    ):
        gens = run_generators(config, stream, device)
        for length in budget.lengths:
            values = evaluate_batches(model, tasks, gens, ood=ood, seq_len=length, **common)
            out[f"{prefix}_{length}"] = values.cpu().numpy()
    out["perf"] = out["perf_10"]
    out["perf_ood"] = out["perf_ood_30"]
    return out


@torch.no_grad()
def estimate_activation_matrices(
    model: nn.Module,
    tasks: Sequence[Any],
    config: TrainConfig,
    budget: EvalBudget,
    device: torch.device,
    *,
    selected: bool = False,
) -> np.ndarray | None:
    """P for every run (spec §5.2), shape (runs, R, R); ``None`` for a model without scores.

    Uniform rules, training length (10) for MHA/RNN, eval mode; rows are rules, columns modules,
    each row sums to 1/R. ``selected=True``: P of ``onehot(argmax scores)``, the selection
    frequencies of a hard router, instead of its mean probabilities.
    """
    model.eval()
    gens = run_generators(config, STREAM_PROB, device)
    seq_len = config.seq_len if config.setting != "mlp" else None
    size = budget.prob_size(config.setting)
    accumulator = metrics.ActivationAccumulator(config.num_rules, num_runs=len(tasks))
    diverged = torch.zeros(len(tasks), dtype=torch.bool, device=device)
    for _ in range(budget.prob_batches):
        batch = sample_stack(tasks, size, gens, seq_len=seq_len, device=device)
        _, scores = model(batch.inputs)
        if scores is None:
            return None
        scores, bad = _finite_runs(scores)
        diverged |= bad
        accumulator.update(_selection(scores) if selected else scores, batch.rules)
    matrices = accumulator.matrix()
    matrices[diverged.cpu().numpy()] = np.nan
    return matrices


@torch.no_grad()
def estimate_adaptation(
    model: nn.Module,
    tasks: Sequence[Any],
    config: TrainConfig,
    budget: EvalBudget,
    device: torch.device,
    *,
    selected: bool = False,
) -> np.ndarray | None:
    """Model-based Adaptation of every run (spec §5.4, Eq. 20 with the code's 1/2), shape (runs,).

    For draw k = 0..draws-1: p_k = ``RandomState(k).dirichlet(ones(R))``; the rules of
    ``adaptation_batches`` batches are drawn from p_k; q_k is the mean score vector over every
    example / token / step; the run's score is the mean over k of 1/2 sum |sort p_k - sort q_k|.
    ``selected=True``: q_k from ``onehot(argmax scores)`` (a hard router's selection frequencies).
    """
    model.eval()
    draws = metrics.dirichlet_draws(config.num_rules, budget.adaptation_draws)
    gens = run_generators(config, STREAM_ADAPT, device)
    seq_len = config.seq_len if config.setting != "mlp" else None
    n_runs = len(tasks)
    q = np.zeros((n_runs, budget.adaptation_draws, config.num_rules))
    diverged = torch.zeros(n_runs, dtype=torch.bool, device=device)
    for k, p in enumerate(draws):
        accumulator = metrics.ActivationAccumulator(config.num_rules, num_runs=n_runs)
        for _ in range(budget.adaptation_batches):
            batch = sample_stack(
                tasks, budget.adaptation_batch_size, gens, prob=p, seq_len=seq_len, device=device
            )
            _, scores = model(batch.inputs)
            if scores is None:
                return None
            scores, bad = _finite_runs(scores)
            diverged |= bad
            accumulator.update(_selection(scores) if selected else scores, batch.rules)
        q[:, k] = accumulator.mean_scores()
    # A diverged run gets NaN; every other run its own score (the stack is never lost to one run).
    healthy = ~diverged.cpu().numpy()
    adaptation = np.full(n_runs, np.nan)
    if healthy.any():
        adaptation[healthy] = metrics.adaptation_from_marginals(draws, q[healthy])
    return adaptation


def evaluate_stack(
    model: nn.Module,
    tasks: Sequence[Any],
    config: TrainConfig,
    budget: EvalBudget,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """Every evaluation of spec §5 for the model's current weights; one dict per run.

    Each dict has the performance keys of :func:`evaluate_performance`, the five metrics
    (NaN for Monolithic, which has no scores) and ``activation_matrix`` (R x R nested list or None).
    A model with hard routing also gets :data:`SELECTED_METRIC_NAMES` and
    ``activation_matrix_selected``, from the selection frequencies (the evaluation passes for P
    and Adaptation then run twice, on the same batches).
    """
    device = resolve_device(device if device is not None else config.device)
    perf = evaluate_performance(model, tasks, config, budget, device)
    matrices = estimate_activation_matrices(model, tasks, config, budget, device)
    adaptation = estimate_adaptation(model, tasks, config, budget, device)
    hard = _routes_hard(model)
    if hard:
        selected = estimate_activation_matrices(model, tasks, config, budget, device, selected=True)
        selected_adaptation = estimate_adaptation(
            model, tasks, config, budget, device, selected=True
        )
    rows: list[dict[str, Any]] = []
    for k in range(len(tasks)):
        row: dict[str, Any] = {key: float(values[k]) for key, values in perf.items()}
        if matrices is None:
            row.update({name: float("nan") for name in METRIC_NAMES})
            row["activation_matrix"] = None
        else:
            P = matrices[k]
            if np.isfinite(P).all() and P.sum() > 0:
                values = metrics.all_metrics(P)
                row.update({name: float(values[name]) for name in METRIC_NAMES if name in values})
                row["adaptation"] = float(adaptation[k])
                row["activation_matrix"] = P.tolist()
            else:  # a diverged run: its scores are NaN, so are its metrics
                row.update({name: float("nan") for name in METRIC_NAMES})
                row["activation_matrix"] = None
        if hard and selected is not None:
            P = selected[k]
            # a diverged run (NaN scores, NaN soft P) has no meaningful argmax either
            finite = row["activation_matrix"] is not None and bool(np.isfinite(P).all())
            values = metrics.all_metrics(P) if finite else {}
            for name, key in zip(METRIC_NAMES, SELECTED_METRIC_NAMES, strict=True):
                value = selected_adaptation[k] if name == "adaptation" else values.get(name)
                row[key] = float(value) if finite else float("nan")
            row["activation_matrix_selected"] = P.tolist() if finite else None
        rows.append(row)
    return rows


def evaluate_result(
    result: TrainResult,
    budget: EvalBudget,
    checkpoints: Sequence[str] = ("last", "best"),
) -> list[dict[str, Any]]:
    """Evaluate every run of a :class:`~mod_arch_core.training.TrainResult` at each checkpoint.

    Returns one dict per (run, checkpoint) with the run's keys (``data_seed``, ``seed``,
    ``checkpoint``, ``best_iteration``, ``diverged_at``) and everything of :func:`evaluate_stack`.
    A run that diverged keeps its row: at ``last`` (the weights frozen at divergence) every
    measured value is NaN; ``best`` (weights from before the divergence) is evaluated as usual.
    The other runs of the stack are unaffected.
    """
    config = result.config
    device = torch.device(result.device)
    tasks, model = build_stack(config, device)
    rows: list[dict[str, Any]] = []
    for checkpoint in checkpoints:
        model.load_state_dict(result.state(checkpoint))
        evaluated = evaluate_stack(model, tasks, config, budget, device)
        for k, ((data_seed, seed), row) in enumerate(zip(config.runs, evaluated, strict=True)):
            if checkpoint == "last" and result.diverged_at[k] >= 0:
                row = _unmeasured(row)
            rows.append(
                {
                    "data_seed": data_seed,
                    "seed": seed,
                    "checkpoint": checkpoint,
                    "best_iteration": int(result.best_iteration[k]),
                    "diverged_at": int(result.diverged_at[k]),
                    **row,
                }
            )
    return rows


def _unmeasured(row: dict[str, Any]) -> dict[str, Any]:
    """The row of a diverged run's final weights: every number NaN, no activation matrix."""
    return {key: None if key.startswith("activation_matrix") else float("nan") for key in row}


#: Named evaluation budgets: the paper's (spec §5) and two scaled-down ones for CPUs.
BUDGETS: dict[str, EvalBudget] = {
    "paper": EvalBudget.paper(),
    # a few hundred thousand examples per run: metrics stable to ~1e-3 on CPU in seconds
    "quick": EvalBudget(
        perf_batches=10,
        perf_batch_size=500,
        prob_batches=20,
        prob_batch_size=500,
        adaptation_draws=25,
        adaptation_batches=2,
        adaptation_batch_size=500,
    ),
    # tests and smoke runs: enough samples for every rule to occur, nothing more
    "smoke": EvalBudget(
        perf_batches=2,
        perf_batch_size=64,
        prob_batches=2,
        prob_batch_size=128,
        adaptation_draws=3,
        adaptation_batches=1,
        adaptation_batch_size=128,
    ),
}


def named_budget(name: str) -> EvalBudget:
    """The evaluation budget called ``name`` (``paper``, ``quick`` or ``smoke``)."""
    if name not in BUDGETS:
        raise ValueError(f"unknown evaluation budget {name!r}; allowed: {', '.join(BUDGETS)}")
    return BUDGETS[name]
