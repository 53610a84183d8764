"""Routing: the score function that turns evidence into probabilities over modules.

Spec §3.1 "Scores" and paper Table 1; in the survey's vocabulary (survey-map §A3) the
*routing function* ``r`` gives a distribution ``p`` over the R modules, which the
*aggregation function* (:func:`~mod_arch_core.models.aggregation.weighted_sum`) uses to
combine the modules' outputs.

==============  ====================  =========================================================
model           routing class         p
==============  ====================  =========================================================
``modular``     SelfScoredRouting     ``softmax_m(l_m)``: each module emits its own logit
``modular-op``  ContextRouting        ``softmax(g(c))``: a learned function of the rule only
``gt-modular``  OracleRouting         ``onehot(c)``: the ground-truth rule
==============  ====================  =========================================================

The setting code (mlp.py, mha.py, rnn.py) never looks at the routing's type. It asks one
question, :attr:`Routing.self_scored` (must the modules emit a score logit each?), and calls
the routing with what it has::

    p = routing(rule_onehot, module_logits=logits, context=context)

Adding a routing (say top-k, Gumbel-softmax or a load-balancing loss) therefore means a new
subclass plus a model name for it; the settings pick it up by name. The paper's three are in
:data:`ROUTINGS`; the variants beyond the paper (top-k, Gumbel-softmax: :mod:`.sparse_routing`)
get their names from the table of model names in :mod:`.registry`, which calls
:func:`register_routing`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "ROUTINGS",
    "ContextRouting",
    "OracleRouting",
    "Routing",
    "SelfScoredRouting",
    "build_routing",
    "register_routing",
    "split_score_channel",
]


class Routing(nn.Module):
    """Base class of score functions ``p = r(...)`` over the R modules (spec §3.1).

    Subclasses set :attr:`name` (the model name in :data:`ROUTINGS`), :attr:`self_scored`
    and implement :meth:`forward`. :attr:`options` lists the keyword options
    :meth:`build` accepts (passed on from ``build_model(**options)``).
    """

    #: Model name this routing defines (a key of :data:`ROUTINGS`).
    name: ClassVar[str]
    #: True if the modules must emit one score logit each (``module_logits``).
    self_scored: ClassVar[bool] = False
    #: Keyword options accepted by :meth:`build`.
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def build(cls, *, context_scorer: Callable[[], nn.Module], **options: Any) -> Routing:
        """Construct the routing; ``context_scorer()`` makes ``g`` for routings that need one."""
        return cls(**options)

    def forward(
        self,
        rule_onehot: Tensor,
        *,
        module_logits: Tensor | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Probabilities over modules.

        Parameters
        ----------
        rule_onehot : Tensor, shape (N, ..., R)
            One-hot of the ground-truth rule of each example / token / step.
        module_logits : Tensor, shape (N, ..., R), optional
            The modules' own score logits (given when :attr:`self_scored`).
        context : Tensor, shape (N, ..., C), optional
            What a learned context-only scorer reads; the setting decides (the MLP passes the
            encoded rule, MHA and RNN the one-hot). Defaults to ``rule_onehot``.

        Returns
        -------
        Tensor, shape (N, ..., R): non-negative, summing to 1 over the last axis.
        """
        raise NotImplementedError


class SelfScoredRouting(Routing):
    """Paper "Modular": every module scores itself, ``p = softmax_m(l_m)`` (Table 1, §3.2-3.4)."""

    name = "modular"
    self_scored = True

    def forward(
        self,
        rule_onehot: Tensor,
        *,
        module_logits: Tensor | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        if module_logits is None:
            raise ValueError("SelfScoredRouting needs module_logits (N, ..., R)")
        return torch.softmax(module_logits, dim=-1)


class ContextRouting(Routing):
    """Paper "Modular-op": ``p = softmax(g(c))``, a learned function of the rule only (Table 1).

    ``g`` is the setting's scorer (spec §3.2: ``Linear(E, R)`` on the encoded rule; §3.3:
    MLP ``R -> head_dim -> R``; §3.4: MLP ``R -> h -> R`` without biases).
    """

    name = "modular-op"

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    @classmethod
    def build(cls, *, context_scorer: Callable[[], nn.Module], **options: Any) -> Routing:
        return cls(context_scorer(), **options)

    def forward(
        self,
        rule_onehot: Tensor,
        *,
        module_logits: Tensor | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        return torch.softmax(self.scorer(rule_onehot if context is None else context), dim=-1)


class OracleRouting(Routing):
    """Paper "GT-Modular": ``p = onehot(c)``, the ground-truth rule (Table 1)."""

    name = "gt-modular"

    def forward(
        self,
        rule_onehot: Tensor,
        *,
        module_logits: Tensor | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        return rule_onehot


#: Model name -> routing class, in the order of ``validation.PAPER_MODELS``.
ROUTINGS: Mapping[str, type[Routing]] = {
    cls.name: cls for cls in (SelfScoredRouting, ContextRouting, OracleRouting)
}

#: Every model name :func:`build_routing` accepts: :data:`ROUTINGS` plus the registered ones.
_REGISTERED: dict[str, type[Routing]] = dict(ROUTINGS)


def register_routing(name: str, cls: type[Routing]) -> None:
    """Let model ``name`` use routing ``cls`` (called by the registry's table of model names)."""
    if not (isinstance(cls, type) and issubclass(cls, Routing)):
        raise TypeError(f"routing for model {name!r} must be a Routing subclass, got {cls!r}")
    if _REGISTERED.get(name, cls) is not cls:
        raise ValueError(f"model {name!r} already uses routing {_REGISTERED[name].__name__}")
    _REGISTERED[name] = cls


def build_routing(name: str, *, context_scorer: Callable[[], nn.Module], **options: Any) -> Routing:
    """The routing of model ``name`` (a key of :data:`ROUTINGS` or a registered name).

    Parameters
    ----------
    name : str
        Canonical model name, e.g. ``"modular-op"``.
    context_scorer : callable
        Makes the setting's context scorer ``g``; called only by routings that need one, so
        the others allocate no parameters for it.
    **options
        Routing options; each must be in the routing class's ``options``.
    """
    if name not in _REGISTERED:
        raise ValueError(f"unknown routing {name!r}; allowed: {', '.join(_REGISTERED)}")
    cls = _REGISTERED[name]
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        allowed = ", ".join(cls.options) if cls.options else "none"
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}; allowed options: {allowed}"
        )
    return cls.build(context_scorer=context_scorer, **options)


def split_score_channel(out: Tensor, self_scored: bool) -> tuple[Tensor, Tensor | None]:
    """Split the modules' outputs into values and score logits (spec §3.2, §3.3).

    A self-scored module emits one extra output channel, its score logit.

    Parameters
    ----------
    out : Tensor, shape (N, ..., R, D + 1) if ``self_scored`` else (N, ..., R, D)

    Returns
    -------
    values : Tensor, shape (N, ..., R, D)
    logits : Tensor of shape (N, ..., R), or None
    """
    if not self_scored:
        return out, None
    return out[..., :-1], out[..., -1]
