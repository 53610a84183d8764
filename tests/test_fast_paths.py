"""The fast paths of the engine compute the plain formulas (spec §3), values and gradients.

Each optimisation of ``benchmarks/README.md`` is checked against the straightforward
computation it replaces: in float64 with ``gradcheck`` where it has a hand-written backward pass,
in float32 against the plain autograd graph otherwise.
"""

from __future__ import annotations

import pytest
import torch

from mod_arch_core.models import build_model, lstm_update, masked_self_attention, weighted_sum
from mod_arch_core.models.aggregation import mixed_group_linear
from mod_arch_core.models.layers import (
    GroupLSTMCell,
    affine,
    block_diagonal,
    group_linear,
    group_linear_scores,
    initialise,
)
from mod_arch_core.models.mha import _padded_length
from mod_arch_core.training import TrainConfig, retain_freed_memory, train


def randn(*shape, seed=0, dtype=torch.float64, grad=True):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return t.requires_grad_(grad)


def plain_lstm(preact, c_prev):
    i, f, g, o = preact.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def plain_attention(q, k, v):
    logits = torch.einsum("...ihd,...jhd->...hij", q, k) * q.shape[-1] ** -0.5
    eye = torch.eye(q.shape[-3], dtype=torch.bool)
    weights = logits.masked_fill(eye, float("-inf")).softmax(-1)
    return torch.einsum("...hij,...jhd->...ihd", weights, v)


def test_lstm_update_matches_the_formula_and_its_gradient():
    preact, c_prev = randn(2, 3, 4, 20), randn(2, 3, 1, 5, seed=1)  # modules share c_prev
    torch.autograd.gradcheck(lstm_update, (preact, c_prev))
    for ours, plain in zip(lstm_update(preact, c_prev), plain_lstm(preact, c_prev), strict=True):
        torch.testing.assert_close(ours, plain)
    zero = torch.zeros((), dtype=torch.float64)  # the initial state
    torch.autograd.gradcheck(lambda p: lstm_update(p, zero), (preact,))


@pytest.mark.parametrize("length", [2, 3, 10, 16, 17, 30])
def test_masked_self_attention_matches_the_formula_and_its_gradient(length):
    q, k, v = (randn(1, length, 2, 3, seed=s) for s in range(3))
    torch.testing.assert_close(masked_self_attention(q, k, v), plain_attention(q, k, v))
    if length in (3, 17):  # unpadded to 16, padded to 32
        torch.autograd.gradcheck(masked_self_attention, (q, k, v))
    assert _padded_length(length) % 16 == 0 and _padded_length(length) >= length


@pytest.mark.parametrize(("din", "dout"), [(3, 12), (12, 3), (5, 5)])
def test_affine_with_the_bias_as_an_input_column(din, dout):
    x, w, b = randn(2, 7, din), randn(2, din, dout, seed=1), randn(2, dout, seed=2)
    torch.testing.assert_close(affine(x, w, b), x @ w + b.unsqueeze(1))
    torch.autograd.gradcheck(affine, (x, w, b))


@pytest.mark.parametrize("bias", [True, False])
def test_mixed_group_linear_is_the_weighted_sum_of_the_module_outputs(bias):
    hidden, weight = randn(2, 3, 2, 3), randn(2, 2, 3, 4, seed=1)
    b = randn(2, 2, 4, seed=2) if bias else None
    probs = randn(2, 3, 2, seed=3).softmax(-1)
    expected = weighted_sum(group_linear(hidden, weight, b), probs)
    torch.testing.assert_close(mixed_group_linear(hidden, weight, b, probs), expected)
    torch.autograd.gradcheck(mixed_group_linear, (hidden, weight, b, probs))


def test_block_diagonal_scores_are_one_dot_product_per_module():
    x, w, b = randn(2, 5, 3, 4), randn(2, 3, 4, seed=1), randn(2, 3, seed=2)
    expected = (x * w.unsqueeze(1)).sum(-1) + b.unsqueeze(1)
    torch.testing.assert_close(group_linear_scores(x, w, b), expected)
    assert block_diagonal(w).shape == (2, 12, 3)


def test_group_lstm_step_from_input_equals_project_then_step():
    cell = initialise(GroupLSTMCell(2, 3, 5, 4, self_scored=True), [0, 1])
    x, h = randn(2, 6, 5, dtype=torch.float32), randn(2, 6, 4, seed=1, dtype=torch.float32)
    projected, input_logits = cell.project_inputs(x.unsqueeze(2))
    for state in (None, (h, randn(2, 6, 4, seed=2, dtype=torch.float32))):
        hs, c = (torch.zeros(2, 6, 4), torch.zeros(2, 6, 4)) if state is None else state
        expected = cell.step(projected[:, :, 0], input_logits[:, :, 0], hs, c)
        got = cell.step_from_input(x, *(state or (None, None)), cell.score_maps())
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("setting", ["mlp", "mha", "rnn"])
@pytest.mark.parametrize("model", ["monolithic", "modular", "modular-op", "gt-modular"])
def test_gradients_of_a_stack_match_float64(setting, model):
    """The float32 fast paths stay within float32 rounding of the float64 computation."""
    kwargs = dict(num_runs=2, seeds=[0, 1], state_dim=4)
    dim = 24 if setting != "rnn" else 16
    single = build_model(setting, model, 3, 8, dim, "regression", **kwargs)
    double = build_model(setting, model, 3, 8, dim, "regression", **kwargs).double()
    features = 5 if setting == "mlp" else (15 if setting == "mha" else 7)
    lead = (2, 4) if setting == "mlp" else (2, 4, 6)
    x = torch.randn(*lead, features)
    x[..., -3:] = torch.nn.functional.one_hot(torch.randint(3, lead), 3).float()
    single(x)[0].square().sum().backward()
    double(x.double())[0].square().sum().backward()
    for (name, p32), p64 in zip(single.named_parameters(), double.parameters(), strict=True):
        torch.testing.assert_close(p32.grad.double(), p64.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_retain_freed_memory_is_idempotent():
    first = retain_freed_memory()
    assert retain_freed_memory() is False  # applied at most once per process
    assert isinstance(first, bool)


def test_training_after_memory_tuning_is_unchanged():
    config = TrainConfig(
        "mlp", "regression", "modular", 2, 8, 16, iterations=3, batch_size=8, eval_every=3,
        eval_batches=1, device="cpu",
    )  # fmt: skip
    first, second = train(config), train(config)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
