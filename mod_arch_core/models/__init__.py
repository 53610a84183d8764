"""The paper's models as stacks of N independent runs (spec §3; paper Table 1).

Vocabulary of the survey (survey-map §A): each modular model is a *computation function*
(R modules: :mod:`~mod_arch_core.models.layers`), a *routing function*
(:mod:`~mod_arch_core.models.routing`: learned self-scored, context-only or oracle; beyond the
paper, :mod:`~mod_arch_core.models.sparse_routing`: top-k, Gumbel-softmax, regularisers) and an
*aggregation function* (:func:`~mod_arch_core.models.aggregation.weighted_sum`). The
per-setting computation lives in :mod:`.mlp`, :mod:`.mha` and :mod:`.rnn`;
:func:`build_model` and :func:`count_parameters` are the entry points.

>>> model = build_model("mlp", "modular", num_rules=4, encoder_dim=32, dim=128,
...                     task="regression", num_runs=3, seeds=[0, 1, 2])
>>> model.num_runs, count_parameters(model)
(3, 35941)
"""

from __future__ import annotations

from mod_arch_core.models.aggregation import weighted_sum
from mod_arch_core.models.base import ModelConfig, StackedModel
from mod_arch_core.models.layers import (
    GroupLinear,
    GroupLSTMCell,
    GroupMLP,
    StackedLinear,
    StackedLSTMCell,
    StackedMLP,
    initialise,
    lstm_update,
)
from mod_arch_core.models.mha import (
    masked_self_attention,
    mha_head_dim,
    mha_input_dim,
    mha_intermediate_dim,
)
from mod_arch_core.models.mlp import mlp_module_width
from mod_arch_core.models.registry import (
    MODEL_NAMES,
    MODELS,
    ModelSpec,
    build_model,
    check_model_options,
    count_parameters,
    input_dim,
    model_class,
)
from mod_arch_core.models.rnn import rnn_modular_hidden
from mod_arch_core.models.routing import (
    ROUTINGS,
    ContextRouting,
    OracleRouting,
    Routing,
    SelfScoredRouting,
    build_routing,
    register_routing,
)
from mod_arch_core.models.sparse_routing import (
    ContextTopKRouting,
    HardRouting,
    RoutedModel,
    SelfScoredGumbelRouting,
    SelfScoredTopKRouting,
    TopKRouting,
    load_balancing_loss,
    routing_information_loss,
    top_k_gate,
)

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "ROUTINGS",
    "ContextRouting",
    "ContextTopKRouting",
    "GroupLSTMCell",
    "GroupLinear",
    "GroupMLP",
    "HardRouting",
    "ModelConfig",
    "ModelSpec",
    "OracleRouting",
    "RoutedModel",
    "Routing",
    "SelfScoredGumbelRouting",
    "SelfScoredRouting",
    "SelfScoredTopKRouting",
    "StackedLSTMCell",
    "StackedLinear",
    "StackedMLP",
    "StackedModel",
    "TopKRouting",
    "build_model",
    "build_routing",
    "check_model_options",
    "count_parameters",
    "initialise",
    "input_dim",
    "load_balancing_loss",
    "lstm_update",
    "masked_self_attention",
    "mha_head_dim",
    "mha_input_dim",
    "mha_intermediate_dim",
    "mlp_module_width",
    "model_class",
    "register_routing",
    "rnn_modular_hidden",
    "routing_information_loss",
    "top_k_gate",
    "weighted_sum",
]
