"""Model names, ``build_model`` and parameter counts (spec §3, §3.5).

``build_model(setting, model, num_rules, encoder_dim, dim, task, ...)`` returns a stack of
``num_runs`` independent runs of one model in one of the three settings: the paper's four
(Table 1) or a routing variant beyond the paper (survey-map §A11). ``count_parameters`` gives the
per-run parameter count, by default in the reference's convention (spec §3.5, §9.6).

Model names. :data:`MODELS` is the one table of names: each maps to a routing class and the
options the name fixes. A name is ``<routing>[-<regulariser>]``:

* routing: ``modular`` (self-scored soft), ``modular-op`` (context soft), ``gt-modular``
  (oracle), ``modular-topk`` (self-scored top-k, option ``top_k``, default 1),
  ``modular-top2`` (the same with ``top_k`` fixed to 2, so that k = 1 and k = 2 can sit side
  by side in one results table), ``modular-gumbel`` (self-scored straight-through
  Gumbel-softmax), ``modular-op-topk`` (context top-k, default 1);
* regulariser suffix: ``-balanced`` (Switch load balancing, ``balance_weight`` =
  :data:`BALANCE_WEIGHT`) or ``-entropy`` (routing-entropy / mutual-information regulariser,
  ``entropy_weight`` = :data:`ENTROPY_WEIGHT`).

Any other combination is a name plus options, e.g. ``build_model(..., "modular-op",
balance_weight=0.1)``; give it a name of its own here when it should appear as its own model in
results tables (rows are keyed by model name, not by options).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mod_arch_core import model_names as _light_names
from mod_arch_core.models.base import ModelConfig, StackedModel
from mod_arch_core.models.layers import initialise
from mod_arch_core.models.mha import MHAModular, MHAMonolithic, mha_input_dim
from mod_arch_core.models.mlp import MLPModular, MLPMonolithic
from mod_arch_core.models.rnn import RNNModular, RNNMonolithic
from mod_arch_core.models.routing import (
    ContextRouting,
    OracleRouting,
    Routing,
    SelfScoredRouting,
    register_routing,
)
from mod_arch_core.models.sparse_routing import (
    REGULARISER_OPTIONS,
    ContextTopKRouting,
    RoutedModel,
    SelfScoredGumbelRouting,
    SelfScoredTopKRouting,
)
from mod_arch_core.validation import (
    canonical_name,
    check_int,
    check_num_rules,
    check_seed,
    check_setting,
    check_task,
)

__all__ = [
    "BALANCE_WEIGHT",
    "ENTROPY_WEIGHT",
    "MODELS",
    "MODEL_NAMES",
    "ModelSpec",
    "build_model",
    "check_model_options",
    "count_parameters",
    "input_dim",
    "model_class",
    "resolved_options",
]

#: ``balance_weight`` of the ``-balanced`` names: Switch's alpha = 1e-2 (Fedus et al. 2022, §2.2).
#: On the exploration seeds (profile ``routing-explore``) no weight of 0.01, 0.1 and 1 stays within
#: 10% of plain Modular's ID performance (``routing_study.choose_weight``; MLP errors there are
#: ~1%, so relative changes are large and noisy), so the published value is kept (book chapter 9).
BALANCE_WEIGHT = 0.01
#: ``entropy_weight`` of the ``-entropy`` names: of 0.01, 0.1 and 1, the largest weight within 10%
#: of plain Modular's ID performance on the exploration seeds (0.1 costs ~45% there).
ENTROPY_WEIGHT = 0.01


@dataclass(frozen=True)
class ModelSpec:
    """What a model name means: its routing class and the options the name fixes."""

    routing: type[Routing] | None  # None: Monolithic (no modules, no routing)
    options: Mapping[str, Any] = field(default_factory=dict)  # fixed by the name

    @property
    def allowed_options(self) -> tuple[str, ...]:
        """Options ``build_model`` accepts for this name (routing and regulariser options)."""
        if self.routing is None:
            return ()
        learned = not issubclass(self.routing, OracleRouting)
        return (*self.routing.options, *(REGULARISER_OPTIONS if learned else ()))


#: The one table of model names (see the module docstring): the paper's four (spec §3.1), in the
#: order of ``validation.PAPER_MODELS``, then the routing variants beyond the paper.
MODELS: dict[str, ModelSpec] = {
    "monolithic": ModelSpec(None),
    "modular": ModelSpec(SelfScoredRouting),
    "modular-op": ModelSpec(ContextRouting),
    "gt-modular": ModelSpec(OracleRouting),
    "modular-topk": ModelSpec(SelfScoredTopKRouting),  # top_k: an option, default 1
    "modular-top2": ModelSpec(SelfScoredTopKRouting, {"top_k": 2}),
    "modular-gumbel": ModelSpec(SelfScoredGumbelRouting),
    "modular-op-topk": ModelSpec(ContextTopKRouting),  # top_k: an option, default 1
    "modular-balanced": ModelSpec(SelfScoredRouting, {"balance_weight": BALANCE_WEIGHT}),
    "modular-entropy": ModelSpec(SelfScoredRouting, {"entropy_weight": ENTROPY_WEIGHT}),
    "modular-topk-balanced": ModelSpec(SelfScoredTopKRouting, {"balance_weight": BALANCE_WEIGHT}),
    "modular-gumbel-balanced": ModelSpec(
        SelfScoredGumbelRouting, {"balance_weight": BALANCE_WEIGHT}
    ),
}
for _name, _spec in MODELS.items():  # build_routing (called by the settings) resolves every name
    if _spec.routing is not None:
        register_routing(_name, _spec.routing)
del _name, _spec

#: Every buildable model name (the CLI, profiles and ``TrainConfig`` read it). The torch-free copy
#: in :mod:`mod_arch_core.model_names` (what the CLI parser uses) must agree with this table.
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
if MODEL_NAMES != _light_names.MODEL_NAMES or any(
    spec.allowed_options != _light_names.MODEL_OPTIONS[name] for name, spec in MODELS.items()
):
    raise ImportError(
        "mod_arch_core.model_names disagrees with models.registry.MODELS; update model_names.py"
    )


class MLPRouted(RoutedModel, MLPModular):
    """MLP modular model (spec §3.2) with the routing hooks of :class:`RoutedModel`."""


class MHARouted(RoutedModel, MHAModular):
    """MHA modular model (spec §3.3) with the routing hooks of :class:`RoutedModel`."""


class RNNRouted(RoutedModel, RNNModular):
    """RNN modular model (spec §3.4) with the routing hooks of :class:`RoutedModel`."""


#: setting -> (monolithic class, modular class taking the routing by model name).
_CLASSES: dict[str, tuple[type[StackedModel], type[StackedModel]]] = {
    "mlp": (MLPMonolithic, MLPRouted),
    "mha": (MHAMonolithic, MHARouted),
    "rnn": (RNNMonolithic, RNNRouted),
}


def model_class(setting: str, model: str) -> type[StackedModel]:
    """The class implementing ``model`` in ``setting`` (names as in :func:`build_model`)."""
    monolithic, modular = _CLASSES[check_setting(setting)]
    return monolithic if canonical_name(model, "model", MODEL_NAMES) == "monolithic" else modular


def input_dim(setting: str, num_rules: int, *, search_version: int = 1, state_dim: int = 32) -> int:
    """Width of the model input, rule one-hot included (spec §2): 2+R, 5R/7R or d+R."""
    setting = check_setting(setting)
    num_rules = check_num_rules(num_rules)
    if setting == "mlp":
        return 2 + num_rules
    if setting == "mha":
        return mha_input_dim(num_rules, search_version)
    return check_int(state_dim, "state_dim", minimum=1) + num_rules


def _check_seeds(seeds: Sequence[int] | None, num_runs: int) -> tuple[int, ...]:
    if seeds is None:
        return tuple(range(num_runs))
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence | range):
        raise TypeError(f"seeds must be a sequence of integers, got {seeds!r}")
    if len(seeds) != num_runs:
        raise ValueError(
            f"seeds must have one entry per run (num_runs={num_runs}), got {len(seeds)}: "
            f"{list(seeds)}"
        )
    return tuple(check_seed(s, f"seeds[{i}]") for i, s in enumerate(seeds))


def _make_config(
    setting: str,
    model: str,
    num_rules: int,
    encoder_dim: int,
    dim: int,
    task: str,
    *,
    num_runs: int,
    seeds: Sequence[int] | None,
    search_version: int,
    state_dim: int,
    options: dict[str, Any],
) -> ModelConfig:
    setting = check_setting(setting)
    model = canonical_name(model, "model", MODEL_NAMES)
    num_runs = check_int(num_runs, "num_runs", minimum=1)
    search_version = check_int(search_version, "search_version", minimum=1)
    mha_input_dim(2, search_version)  # raises unless search_version is 1 or 2
    spec = MODELS[model]
    unknown = sorted(set(options) - set(spec.allowed_options))
    if unknown:
        allowed = ", ".join(spec.allowed_options) or "none"
        raise ValueError(
            f"unknown option(s) {unknown} for model {model!r}; allowed options: {allowed}"
        )
    for key, value in spec.options.items():
        if key in options and options[key] != value:
            raise ValueError(
                f"model {model!r} fixes {key}={value!r}, got {key}={options[key]!r}; "
                "use a model name without it and pass the option"
            )
    options = resolved_options(model, options)
    return ModelConfig(
        setting=setting,
        model=model,
        num_rules=check_num_rules(num_rules),
        encoder_dim=check_int(encoder_dim, "encoder_dim", minimum=1),
        dim=check_int(dim, "dim", minimum=1),
        task=check_task(task),
        num_runs=num_runs,
        seeds=_check_seeds(seeds, num_runs),
        search_version=search_version,
        state_dim=check_int(state_dim, "state_dim", minimum=1),
        options=dict(options),
    )


def resolved_options(model: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The routing options a model runs with: those its name fixes (:data:`MODELS`) plus ``options``.

    What the results tables record per run (``model_options``), so that ``modular`` trained with
    ``balance_weight=0.1`` is told apart from plain ``modular``.
    """
    spec = MODELS[canonical_name(model, "model", MODEL_NAMES)]
    return {**spec.options, **(options or {})}


def check_model_options(model: str, options: Mapping[str, Any], num_rules: int) -> dict[str, Any]:
    """Validate routing ``options`` of ``model`` at ``num_rules`` without training anything.

    Checks the names (:data:`MODEL_OPTIONS` via :func:`mod_arch_core.model_names.check_option_names`)
    and the values, by building the model's smallest MLP on the meta device (no memory, about a
    millisecond; cached), so ``top_k=0`` or ``top_k > num_rules`` fails before any training.
    Returns the options as a dict.
    """
    model = canonical_name(model, "model", MODEL_NAMES)
    options = _light_names.check_option_names(model, options)
    num_rules = check_num_rules(num_rules)
    try:
        key = tuple(sorted(options.items()))
        hash(key)
    except TypeError:  # an unhashable value (a list): check it uncached
        _build_probe(model, num_rules, **options)
    else:
        _check_cached(model, key, num_rules)
    return options


def _build_probe(model: str, num_rules: int, **options: Any) -> None:
    build_model("mlp", model, num_rules, 1, num_rules, "regression", device="meta", **options)


@functools.lru_cache(maxsize=4096)
def _check_cached(model: str, key: tuple[tuple[str, Any], ...], num_rules: int) -> None:
    _build_probe(model, num_rules, **dict(key))


def build_model(
    setting: str,
    model: str,
    num_rules: int,
    encoder_dim: int,
    dim: int,
    task: str,
    *,
    num_runs: int = 1,
    seeds: Sequence[int] | None = None,
    search_version: int = 1,
    state_dim: int = 32,
    device: str | torch.device | None = None,
    **options: Any,
) -> StackedModel:
    """Build a stack of ``num_runs`` independent runs of one model (spec §3, Table 1).

    Parameters
    ----------
    setting : {"mlp", "mha", "rnn"}
        Architecture (spec §1).
    model : str
        A name of :data:`MODEL_NAMES`: the paper's ``"monolithic"``, ``"modular"``,
        ``"modular-op"``, ``"gt-modular"`` (spec §3.1) or a routing variant (:data:`MODELS`);
        case-insensitive, ``_`` accepted for ``-``.
    num_rules : int
        R >= 2, the number of rules and of modules.
    encoder_dim : int
        E: MLP encoder width, MHA token width d, RNN encoder width (spec §1).
    dim : int
        D: MLP core width (a multiple of R for the modular models), MHA attention width A
        (a multiple of 2R), RNN monolithic LSTM hidden size H (spec §1).
    task : {"regression", "classification"}
    num_runs : int
        N, the number of independent runs in the stack.
    seeds : sequence of int, optional
        One initialisation seed per run (default ``range(num_runs)``). Run k's weights depend
        only on ``seeds[k]``.
    search_version : {1, 2}
        MHA input layout: 5R (version 1) or 7R (version 2) features per token.
    state_dim : int
        RNN state dimension d of the data (input d + R; regression output d). The paper's
        value is 32.
    device : str or torch.device, optional
        Where the parameters live (default CPU). They are drawn on the CPU and then moved, so
        weights do not depend on the device. ``"meta"`` builds shapes only (no values).
    **options
        Routing options of the model's routing class (``top_k``; ``tau_start``, ``tau_end``)
        and, for learned routings, the regularisers ``balance_weight`` and ``entropy_weight``
        (:mod:`~mod_arch_core.models.sparse_routing`). Options a name fixes (:data:`MODELS`)
        may be repeated with the same value, never changed. ``model.config`` holds them all.

    Returns
    -------
    StackedModel
        ``model(x) -> (output, scores)``; attributes ``setting``, ``model_name``, ``task``,
        ``num_rules``, ``num_runs`` and ``config`` (``build_model(**config)`` rebuilds it).
    """
    config = _make_config(
        setting,
        model,
        num_rules,
        encoder_dim,
        dim,
        task,
        num_runs=num_runs,
        seeds=seeds,
        search_version=search_version,
        state_dim=state_dim,
        options=options,
    )
    cls = model_class(config.setting, config.model)
    try:
        target = torch.device("cpu") if device is None else torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must be a torch device such as 'cpu', 'cuda', 'cuda:0' or 'meta', got {device!r}"
        ) from error
    if target.type == "meta":
        with torch.device("meta"):
            return cls(config)
    with torch.device("cpu"):
        built = cls(config)
    initialise(built, config.seeds)
    return built.to(target)


def count_parameters(
    model: nn.Module | str, /, *args: Any, reference_convention: bool = True, **kwargs: Any
) -> int:
    """Number of parameters of ONE run (spec §3.5).

    Parameters
    ----------
    model : nn.Module or str
        A stacked model, or the ``setting`` followed by the other arguments of
        :func:`build_model` (the model is then built on the meta device: instant, no memory).
    reference_convention : bool
        If True, add the bias tensors the reference allocates but never uses
        (``GroupLinear(..., bias=False)``; in the grid only the RNN Modular scorer, adding R;
        spec §9.6), so the count equals the reference's logged ``sum(p.numel())``.

    Examples
    --------
    >>> count_parameters("mlp", "monolithic", 2, 32, 128, "regression")
    35361
    """
    if not isinstance(model, nn.Module):
        model = build_model(model, *args, device="meta", **kwargs)
    elif args or kwargs:
        raise TypeError("count_parameters(model) takes no build arguments when given a model")
    num_runs = getattr(model, "num_runs", 1)
    total = sum(p.numel() for p in model.parameters())
    if total % num_runs:
        raise ValueError(f"{total} parameters do not split evenly over num_runs={num_runs}")
    per_run = total // num_runs
    if reference_convention:
        per_run += sum(getattr(m, "unused_reference_bias_numel", 0) for m in model.modules())
    return per_run
