"""Rule-based data of spec §2: MLP, MHA and RNN rule families behind one sampling contract.

>>> import torch
>>> task = make_task("mlp", "regression", num_rules=4, data_seed=0)
>>> task.alpha.round(5).tolist()
[1.76405, 0.40016, 0.97874, 2.24089]
>>> batch = task.sample(8, torch.Generator().manual_seed(0))
>>> tuple(batch.inputs.shape), tuple(batch.targets.shape), tuple(batch.rules.shape)
((8, 6), (8,), (8,))
"""

from __future__ import annotations

from mod_arch_core.data import mha, mlp, rnn
from mod_arch_core.data.tasks import (
    Batch,
    RuleTask,
    draw_rules,
    make_task,
    rule_cdf,
    sample_stack,
)

__all__ = [
    "Batch",
    "RuleTask",
    "draw_rules",
    "make_task",
    "mha",
    "mlp",
    "rnn",
    "rule_cdf",
    "sample_stack",
]
