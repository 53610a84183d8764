"""Routing beyond the paper: sparse top-k, Gumbel-softmax and routing regularisers.

The survey's routing choices (survey-map §A3: hard learned routing §4.2.2, sparse soft routing
§4.2.3, level of routing §4.3; the additions of §A11, items 1-4) built from the same pieces as
the paper's models: the same modules (computation function), the same score logits (each
module's own, or the ``modular-op`` context scorer ``g(c)``) and the same weighted sum
(aggregation function). Only the step from score logits to combination weights changes, so
every variant has exactly the parameters of the paper model it derives from.

=====================  ========================  ===========================================
model                  routing class             combination weights ``w``
=====================  ========================  ===========================================
``modular-topk``       SelfScoredTopKRouting     top-k of ``softmax_m(l_m)``, option k (default 1)
``modular-top2``       SelfScoredTopKRouting     the same with k = 2 fixed by the name
``modular-gumbel``     SelfScoredGumbelRouting   one-hot Gumbel-softmax sample (straight-through)
``modular-op-topk``    ContextTopKRouting        top-k of ``softmax(g(c))``, option k (default 1)
=====================  ========================  ===========================================

The regularisers (:func:`load_balancing_loss`, :func:`routing_information_loss`) are options of
every learned-routing model (``balance_weight``, ``entropy_weight``); the table of model names
in :mod:`~mod_arch_core.models.registry` gives some combinations names of their own
(``modular-balanced``, ``modular-topk-balanced``, ...).

Scores and weights. A hard router's forward pass combines the modules with sparse weights
``w``, but the ``scores`` the model returns stay the soft router probabilities ``p`` *before*
selection (``softmax`` of the logits), so that the activation matrix P of spec §5.2 is the mean
router probability (Switch's ``P_m``). The evaluation records the selection frequencies (the
argmax of ``p``, Switch's ``f_m``) as a second matrix (columns ``*_selected`` of the results).

How the routing reaches the model. Hard routers record the ``p`` of every call of a forward pass;
:class:`RoutedModel`, the mixin every modular model of the registry carries, opens the record
before the setting's forward pass and replaces the returned weights by the recorded ``p``
afterwards, and it computes the per-run auxiliary loss of the regularisers.

References
----------
Shazeer et al. 2017 (sparsely-gated MoE, top-k gating); Fedus, Zoph, Shazeer 2022 (Switch
Transformer: top-1 routing and the load-balancing loss); Jang, Gu, Poole 2017 and Maddison, Mnih,
Teh 2017 (Gumbel-softmax / Concrete relaxation, straight-through estimator); Rosenbaum, Klinger,
Riemer 2018 (routing networks: hard routing, per-task routers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mod_arch_core.models.base import ModelConfig
from mod_arch_core.models.routing import OracleRouting, Routing
from mod_arch_core.validation import check_int

__all__ = [
    "NOISE_STREAM",
    "REGULARISER_OPTIONS",
    "ContextTopKRouting",
    "HardRouting",
    "RoutedModel",
    "SelfScoredGumbelRouting",
    "SelfScoredTopKRouting",
    "TopKRouting",
    "gumbel_noise",
    "load_balancing_loss",
    "routing_information_loss",
    "top_k_gate",
]

#: Options of every learned-routing model that add an auxiliary loss (handled by RoutedModel).
REGULARISER_OPTIONS: tuple[str, ...] = ("balance_weight", "entropy_weight")
#: Entropy of the Gumbel noise streams: a run's noise seed is SeedSequence([seed, 20, draw]).
NOISE_STREAM = 20


# Regularisers ---------------------------------------------------------------------------------


def _flatten_positions(probs: Tensor) -> Tensor:
    """(N, ..., R) -> (N, T, R): every example / token / step of a run on one axis."""
    if probs.ndim < 2:
        raise ValueError(f"probs must have shape (N, ..., R), got {tuple(probs.shape)}")
    return probs.reshape(probs.shape[0], -1, probs.shape[-1])


def load_balancing_loss(probs: Tensor, selected: Tensor | None = None) -> Tensor:
    """Switch load-balancing loss ``R * sum_m f_m * P_m`` of every run (Fedus et al. 2022, §2.2).

    ``f_m`` is the fraction of the run's examples / tokens / steps routed to module m (the argmax,
    no gradient) and ``P_m`` the mean router probability of m (the gradient path). The loss is 1
    when the routing is balanced (``f`` uniform) or the router uniform (``P`` uniform), and R when
    every position goes to one module with probability 1 (full collapse).

    Parameters
    ----------
    probs : Tensor, shape (N, ..., R)
        Router probabilities (the soft scores before any selection).
    selected : Tensor of int, shape (N, ...), optional
        The module each position was routed to; default ``probs.argmax(-1)``.

    Returns
    -------
    Tensor, shape (N,)
    """
    flat = _flatten_positions(probs)
    num_modules = flat.shape[-1]
    if selected is None:
        chosen = flat.argmax(-1)
    else:
        chosen = selected.reshape(flat.shape[:2])
    fraction = F.one_hot(chosen, num_modules).to(flat.dtype).mean(dim=1)  # f: (N, R)
    mean_prob = flat.mean(dim=1)  # P: (N, R)
    return num_modules * (fraction * mean_prob).sum(dim=-1)


def _entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) over the last axis; 0 log 0 = 0 with a finite gradient."""
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(dim=-1)


def routing_information_loss(probs: Tensor) -> Tensor:
    """``mean_t H(p_t) - H(mean_t p_t)`` of every run: minus a minibatch estimate of I(x; m).

    Minimising it makes each position's routing sharp (low per-position entropy) and the
    marginal use of the modules balanced (high entropy of the mean). It lies in [-log R, 0]:
    -log R for sharp and balanced routing (a different module per position, each as often), 0
    when every position has the same distribution (uniform, or collapsed on one module).

    Parameters
    ----------
    probs : Tensor, shape (N, ..., R)

    Returns
    -------
    Tensor, shape (N,)
    """
    flat = _flatten_positions(probs)
    return _entropy(flat).mean(dim=1) - _entropy(flat.mean(dim=1))


def _check_weight(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


# Gates ----------------------------------------------------------------------------------------


def top_k_gate(probs: Tensor, k: int) -> Tensor:
    """Sparse combination weights from the top k router probabilities (over the last axis).

    * k >= 2 (Shazeer et al. 2017, §2.1: softmax of the kept logits): the k largest
      probabilities renormalised to sum to 1, zeros elsewhere. The router's gradient flows
      through the renormalised weights of the selected modules.
    * k = 1 (Fedus et al. 2022, §2.1, Switch): the selected module's probability ``p_m`` itself,
      zeros elsewhere. Renormalising a single weight would give the constant 1 and cut the router
      off from the task loss; the Switch gate keeps the gradient path through ``p_m``. The weights
      then sum to ``p_m <= 1``.

    Parameters
    ----------
    probs : Tensor, shape (..., R)
    k : int, 1 <= k <= R

    Returns
    -------
    Tensor, shape (..., R): exactly k non-zero entries per position (unless a selected
    probability underflows to 0).
    """
    if not 1 <= k <= probs.shape[-1]:
        raise ValueError(f"top_k must lie in [1, num_modules={probs.shape[-1]}], got {k}")
    index = probs.topk(k, dim=-1).indices
    kept = probs * torch.zeros_like(probs).scatter_(-1, index, 1.0)
    if k == 1:
        return kept
    return kept / kept.sum(dim=-1, keepdim=True)


def _noise_seed(seed: int, draw: int) -> int:
    return int(np.random.SeedSequence([int(seed), NOISE_STREAM, int(draw)]).generate_state(1)[0])


def gumbel_noise(
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard Gumbel noise ``-log(-log u)`` of shape (N, ...), run k from ``generators[k]``.

    Drawn on the CPU (like the initial weights) and then moved to ``device``, so a run's noise is
    the same on every device and never depends on the other runs of a stack.
    """
    if shape[0] != len(generators):
        raise ValueError(
            f"noise for {shape[0]} runs needs as many generators, got {len(generators)}"
        )
    tiny = torch.finfo(dtype).tiny
    draws = [
        torch.rand(tuple(shape[1:]), generator=generator, dtype=dtype).clamp_min_(tiny)
        for generator in generators
    ]
    return (-(-torch.stack(draws).log()).log()).to(device)


# Routing classes ------------------------------------------------------------------------------


class HardRouting(Routing):
    """Base of the routings whose forward weights differ from their scores (top-k, Gumbel).

    ``forward`` computes logits (:meth:`router_logits`), the soft router probabilities
    ``p = softmax(logits)`` and the combination weights (:meth:`select`). It returns the weights
    (what the setting aggregates with) and records ``p`` (what the model reports as scores).

    Protocol with :class:`RoutedModel` (the model calls these; nothing else needs to):
    :meth:`bind` once after construction, :meth:`start_forward` before every forward pass,
    :meth:`soft_scores` after it.
    """

    #: The forward weights are sparse / sampled, not the scores (see :class:`RoutedModel`).
    hard: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.num_rules: int | None = None
        self.seeds: tuple[int, ...] | None = None
        self._recorded: list[Tensor] | None = None  # a list while a model forward is open

    def bind(self, num_rules: int, seeds: Sequence[int]) -> None:
        """Learn the model's R and per-run seeds (called once by the model)."""
        self.num_rules = num_rules
        self.seeds = tuple(int(s) for s in seeds)

    def start_forward(self) -> None:
        """Open the record of soft probabilities for one forward pass of the model."""
        self._recorded = []

    def soft_scores(self, like: Tensor) -> Tensor:
        """The recorded ``p`` of the forward pass, shaped like its combination weights ``like``.

        One call gives ``p`` as it is; several calls in one pass (the RNN's steps, each
        (N, B, R)) are stacked on the axis before the module axis, as the setting stacks the
        weights.
        """
        recorded, self._recorded = self._recorded, None
        if not recorded:
            raise RuntimeError("soft_scores() needs start_forward() and a forward call first")
        if len(recorded) == 1 and recorded[0].shape == like.shape:
            scores = recorded[0]
        else:  # one call per step (an RNN of any length, 1 included)
            scores = torch.stack(recorded, dim=like.ndim - 2)
        if scores.shape != like.shape:
            raise RuntimeError(
                f"recorded router probabilities {tuple(scores.shape)} do not match the "
                f"combination weights {tuple(like.shape)}"
            )
        return scores

    def router_logits(
        self, rule_onehot: Tensor, module_logits: Tensor | None, context: Tensor | None
    ) -> Tensor:
        """Score logits (N, ..., R)."""
        raise NotImplementedError

    def select(self, logits: Tensor, probs: Tensor) -> Tensor:
        """Combination weights (N, ..., R) from the logits and ``p = softmax(logits)``."""
        raise NotImplementedError

    def forward(
        self,
        rule_onehot: Tensor,
        *,
        module_logits: Tensor | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        logits = self.router_logits(rule_onehot, module_logits, context)
        probs = torch.softmax(logits, dim=-1)
        if self._recorded is not None:
            self._recorded.append(probs)
        return self.select(logits, probs)


def _self_scored_logits(module_logits: Tensor | None, name: str) -> Tensor:
    if module_logits is None:
        raise ValueError(f"{name} needs module_logits (N, ..., R)")
    return module_logits


class TopKRouting(HardRouting):
    """Base of the top-k routings: combination weights from :func:`top_k_gate`.

    Gradient: the task loss reaches the router through the gate values of the selected modules
    (renormalised softmax weights for k >= 2, Shazeer et al. 2017; ``p_m`` for k = 1, Switch),
    and through the softmax denominator to every module's logit. Nothing flows through the
    choice of the set. ``scores`` are the probabilities before selection.

    Options: ``top_k`` (default 1), 1 <= top_k <= R.
    """

    options = ("top_k",)

    def __init__(self, top_k: int = 1) -> None:
        super().__init__()
        self.top_k = check_int(top_k, "top_k", minimum=1)

    def bind(self, num_rules: int, seeds: Sequence[int]) -> None:
        if self.top_k > num_rules:
            raise ValueError(f"top_k must be <= num_rules={num_rules}, got {self.top_k}")
        super().bind(num_rules, seeds)

    def select(self, logits: Tensor, probs: Tensor) -> Tensor:
        return top_k_gate(probs, self.top_k)

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}"


class SelfScoredTopKRouting(TopKRouting):
    """``modular-topk`` / ``modular-top2``: sparse top-k MoE over the modules' own scores.

    Taxonomy (survey §4.2.2-4.2.3): learned, hard (fixed-size top-k selection, the sparse MoE
    that sits "between hard and soft"), input-dependent at the paper's granularity (example /
    token / step), one modular layer; aggregation: weighted sum of the k selected modules
    (:func:`top_k_gate`). Introduced by Shazeer et al. 2017 (top-k gating, k >= 2); top-1 with
    the gate ``p_m`` as in Switch (Fedus, Zoph, Shazeer 2022).

    The logits are the modules' own, as in ``modular`` (same parameters); ``scores`` are
    ``softmax_m(l_m)`` before selection. Every module is still computed (its score comes from its
    output), so there is no conditional-compute saving. Gradient path: :class:`TopKRouting`.
    """

    name = "modular-topk"
    self_scored = True

    def router_logits(
        self, rule_onehot: Tensor, module_logits: Tensor | None, context: Tensor | None
    ) -> Tensor:
        return _self_scored_logits(module_logits, type(self).__name__)


class ContextTopKRouting(TopKRouting):
    """``modular-op-topk``: hard top-k routing from the rule context alone.

    Taxonomy (survey §4.2.2, §4.3): learned, hard, task-level (a function of the rule only,
    constant within a rule: the survey's task-level routing, like the per-task routers of
    Rosenbaum, Klinger, Riemer 2018); aggregation: weighted sum of the k selected modules
    (:func:`top_k_gate`: Shazeer et al. 2017, and Switch for k = 1). The logits are those of
    ``modular-op``, ``g(c)``, from the same context scorer (same parameters); ``scores`` are
    ``softmax(g(c))`` before selection. Gradient path: :class:`TopKRouting`.
    """

    name = "modular-op-topk"

    def __init__(self, scorer: nn.Module, top_k: int = 1) -> None:
        super().__init__(top_k=top_k)
        self.scorer = scorer

    @classmethod
    def build(cls, *, context_scorer: Callable[[], nn.Module], **options: Any) -> Routing:
        return cls(context_scorer(), **options)

    def router_logits(
        self, rule_onehot: Tensor, module_logits: Tensor | None, context: Tensor | None
    ) -> Tensor:
        return self.scorer(rule_onehot if context is None else context)


class SelfScoredGumbelRouting(HardRouting):
    """``modular-gumbel``: straight-through Gumbel-softmax routing on the modules' own scores.

    Taxonomy (survey §4.2.2): learned, hard and stochastic, trained through a continuous
    relaxation (Gumbel-softmax / Concrete: Jang, Gu, Poole 2017; Maddison, Mnih, Teh 2017) rather
    than with RL as in routing networks (Rosenbaum et al. 2018); input-dependent at the paper's
    granularity (example / token / step); aggregation: selection of one module (a weighted sum
    with one-hot weights).

    Training mode: ``y = softmax((l + g) / tau)`` with Gumbel noise ``g``; the forward weights
    are ``onehot(argmax y)``, a sample from ``softmax(l)`` (the Gumbel-max trick), and the
    gradient is that of ``y`` (straight-through Gumbel-softmax, Jang et al. 2017 §2.2).
    Evaluation mode (``model.eval()``): no noise, the deterministic ``onehot(argmax l)``.
    ``scores`` are ``softmax(l)`` in both modes: the probabilities the training sample is drawn
    from, so the temperature changes the gradient only, never the scores.

    Temperature: ``tau = tau_start * (tau_end / tau_start) ** fraction``, annealed geometrically
    over training by :meth:`set_progress` (the training loop calls it every step with
    ``fraction = step / num_steps``); ``tau_start`` until then.

    Noise: run k's noise comes from a ``torch.Generator`` owned by this routing and seeded from
    ``(seeds[k], NOISE_STREAM, draw)``, where ``draw`` counts the :meth:`set_progress` calls. It
    is reseeded at the start of every forward pass of the model, so the noise of a pass depends
    only on the run's seed and the training step (stacked run k equals the same run alone, and
    two passes within one step see the same noise); within a pass (the RNN's steps) it advances.

    Options: ``tau_start`` (default 1.0), ``tau_end`` (default 0.5), both > 0.
    """

    name = "modular-gumbel"
    self_scored = True
    options = ("tau_start", "tau_end")

    def __init__(self, tau_start: float = 1.0, tau_end: float = 0.5) -> None:
        super().__init__()
        self.tau_start = _check_temperature(tau_start, "tau_start")
        self.tau_end = _check_temperature(tau_end, "tau_end")
        self.tau = self.tau_start
        self.draw = 0
        self._generators: list[torch.Generator] | None = None

    def set_progress(self, fraction: float) -> None:
        """Set the temperature for training progress ``fraction`` in [0, 1]; new noise draw."""
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must lie in [0, 1], got {fraction}")
        self.tau = self.tau_start * (self.tau_end / self.tau_start) ** fraction
        self.draw += 1
        self._generators = None

    def start_forward(self) -> None:
        super().start_forward()
        self._generators = None  # reseeded from (seed, draw) at the first draw of the pass

    def _noise(self, logits: Tensor) -> Tensor:
        if self._generators is None:
            seeds = self.seeds if self.seeds is not None else range(logits.shape[0])
            self._generators = [
                torch.Generator().manual_seed(_noise_seed(s, self.draw)) for s in seeds
            ]
        return gumbel_noise(
            logits.shape, self._generators, dtype=logits.dtype, device=logits.device
        )

    def router_logits(
        self, rule_onehot: Tensor, module_logits: Tensor | None, context: Tensor | None
    ) -> Tensor:
        return _self_scored_logits(module_logits, type(self).__name__)

    def select(self, logits: Tensor, probs: Tensor) -> Tensor:
        num_modules = logits.shape[-1]
        if not self.training:
            return F.one_hot(logits.argmax(-1), num_modules).to(logits.dtype)
        relaxed = torch.softmax((logits + self._noise(logits)) / self.tau, dim=-1)
        hard = F.one_hot(relaxed.argmax(-1), num_modules).to(logits.dtype)
        return hard + (relaxed - relaxed.detach())  # forward: exactly the one-hot

    def extra_repr(self) -> str:
        return f"tau_start={self.tau_start}, tau_end={self.tau_end}, tau={self.tau:.4g}"


def _check_temperature(value: Any, name: str) -> float:
    value = _check_weight(value, name)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


# The model side -------------------------------------------------------------------------------


class RoutedModel(nn.Module):
    """Mixin of the modular models: hard-routing scores, regularisers, progress.

    Put it before a setting's modular class (``class MLPRouted(RoutedModel, MLPModular)``). It

    * takes the regulariser options (:data:`REGULARISER_OPTIONS`) out of the options the setting
      passes to its routing, and keeps them all in ``model.config`` (so ``build_model(**config)``
      rebuilds the model);
    * for a :class:`HardRouting`, returns the soft router probabilities as ``scores`` and keeps
      the combination weights of the last forward pass (:meth:`routing_weights`);
    * computes the per-run auxiliary loss of the last forward pass (:meth:`auxiliary_loss`):
      ``balance_weight * load_balancing_loss + entropy_weight * routing_information_loss``,
      with ``f_m`` from the argmax of the combination weights (the module actually used);
    * forwards :meth:`set_progress` to the routing (temperature schedules).

    Options: ``balance_weight``, ``entropy_weight`` (default 0: no auxiliary loss); refused for
    a fixed routing (``gt-modular``).
    """

    routing: Routing

    def __init__(self, config: ModelConfig) -> None:
        regularisers = {k: config.options[k] for k in REGULARISER_OPTIONS if k in config.options}
        routing_options = {k: v for k, v in config.options.items() if k not in regularisers}
        super().__init__(dataclasses.replace(config, options=routing_options))
        self._config = config  # model.config keeps every option
        self.balance_weight = _check_weight(
            regularisers.get("balance_weight", 0.0), "balance_weight"
        )
        self.entropy_weight = _check_weight(
            regularisers.get("entropy_weight", 0.0), "entropy_weight"
        )
        if regularisers and isinstance(self.routing, OracleRouting):
            raise ValueError(
                f"{sorted(regularisers)} apply to learned routings; model {config.model!r} "
                "routes by the ground-truth rule"
            )
        if isinstance(self.routing, HardRouting):
            self.routing.bind(config.num_rules, config.seeds)
        self._auxiliary: Tensor | None = None
        self._weights: Tensor | None = None

    @property
    def hard_routing(self) -> bool:
        """True if the forward weights are a hard selection, not the scores (top-k, Gumbel)."""
        return isinstance(self.routing, HardRouting)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        hard = self.hard_routing
        if hard:
            self.routing.start_forward()
        output, weights = super()._forward(x)  # type: ignore[misc]
        scores = self.routing.soft_scores(weights) if hard else weights
        self._weights = weights
        self._auxiliary = self._regularise(scores, weights)
        return output, scores

    def _regularise(self, probs: Tensor, weights: Tensor) -> Tensor | None:
        if not (self.balance_weight or self.entropy_weight):
            return None
        total = probs.new_zeros(probs.shape[0])
        if self.balance_weight:
            selected = weights.argmax(dim=-1)
            total = total + self.balance_weight * load_balancing_loss(probs, selected)
        if self.entropy_weight:
            total = total + self.entropy_weight * routing_information_loss(probs)
        return total

    def auxiliary_loss(self) -> Tensor | None:
        """Per-run auxiliary loss (N,) of the last forward pass, or None without regularisers."""
        return self._auxiliary

    def routing_weights(self) -> Tensor | None:
        """Combination weights (N, ..., R) of the last forward pass (sparse for hard routings)."""
        return self._weights

    def set_progress(self, fraction: float) -> None:
        """Tell the routing how far training is (``step / num_steps``); no-op if it has no schedule."""
        hook = getattr(self.routing, "set_progress", None)
        if hook is not None:
            hook(fraction)
