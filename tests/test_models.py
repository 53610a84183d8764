"""Tests of the stacked models (spec §3): shapes, scores, counts, independence, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mod_arch_core.models import (
    MODEL_NAMES,
    MODELS,
    GroupLinear,
    GroupLSTMCell,
    HardRouting,
    StackedLSTMCell,
    StackedMLP,
    build_model,
    build_routing,
    count_parameters,
    initialise,
    input_dim,
    masked_self_attention,
    mha_head_dim,
    mha_intermediate_dim,
    rnn_modular_hidden,
    weighted_sum,
)
from mod_arch_core.validation import PAPER_MODELS, SETTINGS, TASKS

# Tiny sizes: D = 24 is a multiple of R (MLP modules) and of 2R (MHA heads).
R, E, D, STATE_DIM = 3, 8, 24, 4
BATCH, LENGTH = 5, 4
MODULAR = ("modular", "modular-op", "gt-modular")
ATOL = 1e-6  # stacked run k vs single-run model; measured: forward 0, gradients <= 3e-8


def tiny(setting, model, task="regression", **kwargs):
    kwargs.setdefault("state_dim", STATE_DIM)
    return build_model(setting, model, R, E, D, task, **kwargs)


def make_input(setting, num_runs, *, seed=0, num_rules=R, batch=BATCH, length=LENGTH):
    """Random features with the rule one-hot as the last R features (the data contract)."""
    generator = torch.Generator().manual_seed(seed)
    features = input_dim(setting, num_rules, state_dim=STATE_DIM)
    lead = (num_runs, batch) if setting == "mlp" else (num_runs, batch, length)
    x = torch.randn(*lead, features, generator=generator)
    rules = torch.randint(num_rules, lead, generator=generator)
    x[..., -num_rules:] = F.one_hot(rules, num_rules).float()
    return x, rules


def expected_output_shape(setting, task, lead):
    if setting == "rnn" and task == "regression":
        return (*lead, STATE_DIM)
    return lead


def loss_per_run(output, task, target):
    """Mean loss of each run, (N,), as the training engine would compute it."""
    if task == "regression":
        per = (output - target).abs()
    else:
        per = F.binary_cross_entropy_with_logits(output, target, reduction="none")
    return per.flatten(1).mean(dim=1)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def target_like(output, task, seed=1):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randn(output.shape, generator=generator)
    return target if task == "regression" else (target > 0).float()


# Shapes and scores ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("setting", SETTINGS)
def test_output_and_score_shapes(setting, model, task):
    stacked = tiny(setting, model, task, num_runs=3)
    x, rules = make_input(setting, 3)
    output, scores = stacked(x)
    lead = tuple(x.shape[:-1])
    assert output.shape == expected_output_shape(setting, task, lead)
    assert torch.isfinite(output).all()
    if model == "monolithic":
        assert scores is None
    else:
        assert scores.shape == (*lead, R)
        assert torch.allclose(scores.sum(-1), torch.ones(lead), atol=1e-6)
        assert (scores >= 0).all()
        if model == "gt-modular":
            assert torch.equal(scores, F.one_hot(rules, R).float())

    single = tiny(setting, model, task)  # num_runs=1, x without the run axis
    output1, scores1 = single(x[0])
    assert output1.shape == expected_output_shape(setting, task, lead[1:])
    assert (scores1 is None) == (model == "monolithic")
    if scores1 is not None:
        assert scores1.shape == (*lead[1:], R)
    output_axis, _ = single(x[:1])  # the run axis may also be kept
    assert torch.equal(output_axis[0], output1)


@pytest.mark.parametrize("setting", SETTINGS)
def test_modular_op_scores_depend_on_the_rule_only(setting):
    model = tiny(setting, "modular-op", num_runs=2)
    x, rules = make_input(setting, 2, batch=40)
    _, scores = model(x)
    for run in range(2):
        for rule in range(R):
            chosen = scores[run][rules[run] == rule]
            assert torch.allclose(chosen, chosen[:1].expand_as(chosen), atol=1e-6)
    assert not torch.allclose(scores[0], scores[1])  # runs have their own scorers


@pytest.mark.parametrize("setting", SETTINGS)
def test_models_read_the_data_package_layout(setting):
    data = pytest.importorskip("mod_arch_core.data")
    options = {"state_dim": STATE_DIM} if setting == "rnn" else {}
    tasks = [data.make_task(setting, "regression", R, seed, **options) for seed in (0, 1)]
    generators = [torch.Generator().manual_seed(k) for k in (0, 1)]
    batch = data.sample_stack(tasks, BATCH, generators)
    model = tiny(setting, "gt-modular", num_runs=2)
    output, scores = model(batch.inputs)
    assert output.shape == batch.targets.shape
    assert torch.equal(scores, F.one_hot(batch.rules.long(), R).float())


# Parameter counts and derived widths (spec §3.3-3.5) -----------------------------------------

CAPACITIES = (32, 64, 128, 256, 512)
SPEC_COUNTS = {
    ("mlp", 2, "monolithic"): (35361, 140353, 559233, 2232577, 8921601),
    ("mlp", 2, "modular"): (35619, 140867, 560259, 2234627, 8925699),
    ("mlp", 32, "monolithic"): (36321, 142273, 563073, 2240257, 8936961),
    ("mlp", 32, "modular"): (40449, 150497, 579489, 2273057, 9002529),
    ("mha", 2, "monolithic"): (28609, 112513, 446209, 1777153, 7093249),
    ("mha", 2, "modular"): (29827, 116995, 463363, 1844227, 7358467),
    ("mha", 32, "monolithic"): (30499, 110533, 419209, 1630993, 6432289),
    ("mha", 32, "modular"): (33377, 121441, 456609, 1768225, 6956577),
    ("rnn", 2, "monolithic"): (105760, 410144, 1614880, 6408224, 25530400),
    ("rnn", 2, "modular"): (104494, 406652, 1611696, 6401696, 25516710),
    ("rnn", 32, "monolithic"): (106720, 412064, 1618720, 6415904, 25545760),
    ("rnn", 32, "modular"): (98000, 395264, 1587296, 6361376, 25469600),
}


@pytest.mark.parametrize(("setting", "num_rules", "model"), list(SPEC_COUNTS))
def test_parameter_counts_match_spec_tables(setting, num_rules, model):
    counts = tuple(
        count_parameters(setting, model, num_rules, e, 4 * e, "regression") for e in CAPACITIES
    )
    assert counts == SPEC_COUNTS[setting, num_rules, model]


def test_parameter_count_of_a_built_stack_is_per_run():
    model = build_model("mlp", "monolithic", 2, 32, 128, "regression", num_runs=3)
    assert count_parameters(model) == 35361
    assert sum(p.numel() for p in model.parameters()) == 3 * 35361


def test_reference_convention_adds_only_the_unused_rnn_scorer_bias():
    for setting in SETTINGS:
        for model in MODEL_NAMES:
            args = (setting, model, 4, 32, 128, "regression")
            extra = count_parameters(*args) - count_parameters(*args, reference_convention=False)
            routing = getattr(build_model(*args, device="meta"), "routing", None)
            self_scored = getattr(routing, "self_scored", False)  # modular and its variants
            assert extra == (4 if setting == "rnn" and self_scored else 0)


SPEC_HEAD_DIM = {
    2: (32, 64, 128, 256, 512),
    4: (16, 32, 64, 128, 256),
    8: (8, 16, 32, 64, 128),
    16: (4, 8, 16, 32, 64),
    32: (2, 4, 8, 16, 32),
}
SPEC_INTERMEDIATE = {
    2: (48, 96, 192, 384, 768),
    4: (35, 70, 140, 281, 563),
    8: (24, 48, 96, 192, 384),
    16: (14, 29, 59, 119, 238),
    32: (8, 17, 34, 68, 136),
}
SPEC_RNN_HIDDEN = {
    2: (91, 182, 365, 730, 1460),
    4: (62, 124, 249, 499, 999),
    8: (41, 82, 164, 329, 659),
    16: (26, 52, 104, 209, 419),
    32: (15, 31, 63, 127, 255),
}


@pytest.mark.parametrize("num_rules", sorted(SPEC_HEAD_DIM))
def test_derived_widths_match_spec_tables(num_rules):
    assert tuple(mha_head_dim(num_rules, 4 * d) for d in CAPACITIES) == SPEC_HEAD_DIM[num_rules]
    intermediate = tuple(mha_intermediate_dim(num_rules, d, 4 * d) for d in CAPACITIES)
    assert intermediate == SPEC_INTERMEDIATE[num_rules]
    hidden = tuple(rnn_modular_hidden(num_rules, h // 4, h) for h in (128, 256, 512, 1024, 2048))
    assert hidden == SPEC_RNN_HIDDEN[num_rules]


def test_built_models_use_the_derived_widths():
    mha = build_model("mha", "modular", 4, 32, 128, "regression", device="meta")
    assert (mha.head_dim, mha.intermediate_dim) == (16, 35)
    rnn = build_model("rnn", "modular-op", 4, 32, 128, "regression", device="meta")
    assert rnn.hidden_size == 62
    assert all(p.is_meta for p in rnn.parameters())


# Independence of runs and equality with single-run models -------------------------------------


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("setting", SETTINGS)
def test_stacked_run_equals_single_run_model(setting, model):
    task = "classification" if setting == "rnn" else "regression"
    stacked = tiny(setting, model, task, num_runs=3, seeds=[7, 3, 9])
    single = tiny(setting, model, task, seeds=[3])
    for (name, p_stack), p_single in zip(
        stacked.named_parameters(), single.parameters(), strict=True
    ):
        assert torch.equal(p_stack[1], p_single[0]), name  # bit-identical initialisation

    x, _ = make_input(setting, 3)
    out_stack, scores_stack = stacked(x)
    out_single, scores_single = single(x[1])
    torch.testing.assert_close(out_stack[1], out_single, atol=ATOL, rtol=0)
    if scores_single is not None:
        torch.testing.assert_close(scores_stack[1], scores_single, atol=ATOL, rtol=0)

    target = target_like(out_stack, task)
    loss_per_run(out_stack, task, target).sum().backward()
    loss_per_run(out_single.unsqueeze(0), task, target[1:2]).sum().backward()
    for (name, p_stack), p_single in zip(
        stacked.named_parameters(), single.parameters(), strict=True
    ):
        torch.testing.assert_close(p_stack.grad[1], p_single.grad[0], atol=ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("setting", SETTINGS)
def test_runs_do_not_mix(setting, model):
    stacked = tiny(setting, model, num_runs=3)
    x, _ = make_input(setting, 3)
    with torch.no_grad():
        base, _ = stacked(x)
        x_perturbed = x.clone()
        x_perturbed[1, ..., 0] += 1.0  # a raw feature of run 1 only
        out, _ = stacked(x_perturbed)
        changed = (out - base).flatten(1).abs().amax(dim=1)
        assert changed[1] > 0 and changed[0] == 0 and changed[2] == 0

        for param in stacked.parameters():
            param[1].add_(0.1)  # run 1's parameters only
        out, _ = stacked(x)
        changed = (out - base).flatten(1).abs().amax(dim=1)
        assert changed[1] > 0 and changed[0] == 0 and changed[2] == 0


def test_same_seeds_give_identical_weights_and_outputs():
    for setting in SETTINGS:
        first = tiny(setting, "modular", num_runs=2, seeds=[5, 6])
        second = tiny(setting, "modular", num_runs=2, seeds=[5, 6])
        other = tiny(setting, "modular", num_runs=2, seeds=[5, 8])
        for a, b, c in zip(
            first.parameters(), second.parameters(), other.parameters(), strict=True
        ):
            assert torch.equal(a, b)
            assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
        x, _ = make_input(setting, 2)
        assert torch.equal(first(x)[0], second(x)[0])


# Training -----------------------------------------------------------------------------------


# A small step lowers a smooth loss; a hard router's loss jumps wherever a selection flips, so
# the routing variants of sparse_routing.py are trained in tests/test_routing_variants.py instead.
SMOOTH_MODELS = tuple(
    m for m in MODEL_NAMES if not issubclass(MODELS[m].routing or object, HardRouting)
)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", SMOOTH_MODELS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_one_adam_step_lowers_the_loss_of_every_run(setting, model, task):
    stacked = tiny(setting, model, task, num_runs=2)
    x, _ = make_input(setting, 2, batch=16)
    with torch.no_grad():
        target = target_like(stacked(x)[0], task)
    optimiser = torch.optim.Adam(stacked.parameters(), lr=1e-3)
    before = loss_per_run(stacked(x)[0], task, target)
    before.sum().backward()
    optimiser.step()
    with torch.no_grad():
        after = loss_per_run(stacked(x)[0], task, target)
    assert (after < before.detach()).all(), (before, after)


# Building blocks ----------------------------------------------------------------------------


def test_stacked_linear_is_n_linear_layers():
    layer = build_model("mlp", "monolithic", 2, 4, 8, "regression", num_runs=3).core.first
    x = randn(3, 7, 2, 12)
    out = layer(x)
    for run in range(3):
        expected = F.linear(x[run], layer.weight[run].T, layer.bias[run])
        torch.testing.assert_close(out[run], expected)


def test_group_linear_applies_one_map_per_module_and_shared_input_equals_tiling():
    layer = initialise(GroupLinear(2, 3, 5, 4), [0, 1])
    x = randn(2, 6, 3, 5)
    out = layer(x)
    for run in range(2):
        for module in range(3):
            expected = x[run, :, module] @ layer.weight[run, module] + layer.bias[run, module]
            torch.testing.assert_close(out[run, :, module], expected)
    shared = GroupLinear(2, 3, 5, 4, shared_input=True)
    shared.load_state_dict(layer.state_dict())
    z = randn(2, 6, 5, seed=1)
    torch.testing.assert_close(shared(z), layer(z.unsqueeze(-2).expand(2, 6, 3, 5)))


def test_initialisation_follows_pytorch_default_distributions():
    def assert_uniform(param, bound):
        values = param.detach().flatten()
        assert values.abs().max() <= bound and values.abs().max() > 0.9 * bound
        assert abs(values.mean().item()) < 0.25 * bound  # mean of U(-b, b): 0
        if values.numel() >= 1000:  # std of U(-b, b): b / sqrt(3)
            assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)

    rnn = build_model("rnn", "monolithic", 2, 16, 64, "regression")
    for param in (*rnn.cell.input_map.parameters(), *rnn.cell.hidden_map.parameters()):
        assert_uniform(param, 1 / math.sqrt(64))  # LSTMCell: 1/sqrt(hidden) everywhere
    for param in rnn.encoder.first.parameters():
        assert_uniform(param, 1 / math.sqrt(2 + 32))  # Linear: 1/sqrt(fan_in)
    mlp = build_model("mlp", "modular", 4, 32, 128, "regression")
    for param in mlp.core.second.parameters():
        assert_uniform(param, 1 / math.sqrt(128 // 4))  # GroupLinear: 1/sqrt(din)


def test_stacked_lstm_cell_matches_torch_lstm_cell():
    cell = StackedLSTMCell(1, 5, 7)
    initialise(cell, [0])
    reference = torch.nn.LSTMCell(5, 7)
    with torch.no_grad():
        reference.weight_ih.copy_(cell.input_map.weight[0].T)
        reference.bias_ih.copy_(cell.input_map.bias[0])
        reference.weight_hh.copy_(cell.hidden_map.weight[0].T)
        reference.bias_hh.copy_(cell.hidden_map.bias[0])
    x, h, c = randn(4, 5), randn(4, 7, seed=1), randn(4, 7, seed=2)
    h_new, c_new = cell.step(cell.project_inputs(x[None]), h[None], c[None])
    h_ref, c_ref = reference(x, (h, c))
    torch.testing.assert_close(h_new[0], h_ref)
    torch.testing.assert_close(c_new[0], c_ref)


def test_group_lstm_cell_scores_each_module_from_its_own_preactivations():
    cell = initialise(GroupLSTMCell(2, 3, 5, 4, self_scored=True), [0, 1])
    x, h, c = randn(2, 6, 1, 5), randn(2, 6, 4, seed=1), randn(2, 6, 4, seed=2)
    projected, input_logits = cell.project_inputs(x)
    h_mod, c_mod, logits = cell.step(projected[:, :, 0], input_logits[:, :, 0], h, c)
    i2h = (x[:, :, 0] @ cell.i2h.weight).view(2, 6, 3, 16)
    h2h = (h @ cell.h2h.weight).view(2, 6, 3, 16)
    features = torch.relu(torch.cat([i2h, h2h], dim=-1))  # (N, B, R, 8h)
    torch.testing.assert_close(logits, cell.scorer(features).squeeze(-1))
    i, f, g, o = (i2h + h2h).chunk(4, dim=-1)
    c_expected = f.sigmoid() * c.unsqueeze(-2) + i.sigmoid() * g.tanh()
    torch.testing.assert_close(c_mod, c_expected)
    torch.testing.assert_close(h_mod, o.sigmoid() * c_expected.tanh())


def test_masked_self_attention_never_attends_to_the_token_itself():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 4, generator=generator) for _ in range(3))  # (B, L, H, hd)
    out = masked_self_attention(q, k, v)
    v_changed = v.clone()
    v_changed[:, 2] += 10.0
    changed = masked_self_attention(q, k, v_changed)
    torch.testing.assert_close(out[:, 2], changed[:, 2])  # token 2 ignores its own value
    assert not torch.allclose(out[:, 1], changed[:, 1])
    logits = torch.einsum("bihd,bjhd->bhij", q, k) / 2.0  # head_dim ** 0.5 = 2
    logits = logits.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
    expected = torch.einsum("bhij,bjhd->bihd", logits.softmax(-1), v)
    torch.testing.assert_close(out, expected)


def test_routings_and_aggregation():
    logits = randn(2, 5, R)
    onehot = F.one_hot(torch.arange(5) % R, R).float().expand(2, 5, R)
    self_scored = build_routing("modular", context_scorer=lambda: None)
    assert self_scored.self_scored
    torch.testing.assert_close(self_scored(onehot, module_logits=logits), logits.softmax(-1))
    scorer = initialise(StackedMLP(2, R, 4, R), [0, 1])
    context = build_routing("modular-op", context_scorer=lambda: scorer)
    assert not context.self_scored and context.scorer is scorer
    torch.testing.assert_close(context(onehot), scorer(onehot).softmax(-1))
    oracle = build_routing("gt-modular", context_scorer=lambda: None)
    assert torch.equal(oracle(onehot, module_logits=logits), onehot)
    with pytest.raises(ValueError, match="unknown routing 'no-such-routing'"):
        build_routing("no-such-routing", context_scorer=lambda: None)
    values = randn(2, 5, R, 6)
    probs = logits.softmax(-1)
    expected = sum(probs[..., m, None] * values[..., m, :] for m in range(R))
    torch.testing.assert_close(weighted_sum(values, probs), expected)
    with pytest.raises(ValueError, match="values"):
        weighted_sum(values, probs[..., :2])


# Configuration --------------------------------------------------------------------------------


def test_config_rebuilds_the_model_and_exposes_attributes():
    model = build_model(
        "MHA", "GT_Modular", 3, 8, 24, "Classification", num_runs=2, seeds=[4, 2],
        search_version=2,
    )  # fmt: skip
    assert (model.setting, model.model_name, model.task) == ("mha", "gt-modular", "classification")
    assert (model.num_rules, model.num_runs) == (3, 2)
    config = json.loads(json.dumps(model.config))
    assert config["seeds"] == [4, 2] and config["search_version"] == 2
    rebuilt = build_model(**config)
    for a, b in zip(model.parameters(), rebuilt.parameters(), strict=True):
        assert torch.equal(a, b)
    assert set(PAPER_MODELS) <= set(MODEL_NAMES)


# Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "modularish"}, ValueError, "unknown model 'modularish'; allowed: monolithic"),
        ({"setting": "cnn"}, ValueError, "unknown setting 'cnn'; allowed: mlp, mha, rnn"),
        ({"task": "ranking"}, ValueError, "unknown task 'ranking'"),
        ({"num_rules": 1}, ValueError, "num_rules must be >= 2, got 1"),
        ({"dim": 0}, ValueError, "dim must be >= 1, got 0"),
        ({"encoder_dim": 8.0}, TypeError, "encoder_dim must be an integer"),
        ({"dim": 25}, ValueError, r"dim must be a multiple of num_rules=3 .* got dim=25"),
        ({"setting": "mha", "dim": 21}, ValueError, r"multiple of 2 \* num_rules = 6 .* dim=21"),
        ({"num_runs": 2, "seeds": [1]}, ValueError, r"one entry per run \(num_runs=2\), got 1"),
        ({"seeds": [-1]}, ValueError, r"seeds\[0\] must be >= 0"),
        ({"search_version": 3}, ValueError, "search_version must be one of 1, 2; got 3"),
        ({"top_k": 2}, ValueError, r"unknown option\(s\) \['top_k'\] for model 'modular'"),
        ({"model": "monolithic", "k": 1}, ValueError, r"option\(s\) \['k'\] for model 'mono"),
    ],
)
def test_bad_build_arguments_raise_helpful_errors(kwargs, error, match):
    args = {"setting": "mlp", "model": "modular", "num_rules": R, "encoder_dim": E, "dim": D}
    args.update(task="regression")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        build_model(**args)


@pytest.mark.parametrize(
    ("setting", "shape", "match"),
    [
        ("mlp", (3, 5, 4), r"MLP input must have shape \(num_runs=3, batch, 5\); got \(3, 5, 4\)"),
        ("mlp", (2, 5, 5), r"\(num_runs=3, batch, 5\); got \(2, 5, 5\)"),
        ("mha", (3, 5, 15), r"MHA input must have shape \(num_runs=3, batch, length, 15\)"),
        ("rnn", (3, 5, 2, 6), r"RNN input must have shape \(num_runs=3, batch, length, 7\)"),
        ("mha", (3, 5, 1, 15), "sequence length >= 2"),
    ],
)
def test_wrong_input_shapes_raise(setting, shape, match):
    model = tiny(setting, "modular", num_runs=3)
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape))


def test_wrong_input_dtype_and_unstacked_input_for_stacks_raise():
    single = tiny("mlp", "monolithic")
    with pytest.raises(TypeError, match=r"dtype torch\.float32"):
        single(torch.zeros(4, 2 + R, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"or \(batch, 5\) without the run axis"):
        single(torch.zeros(4, 7))
    stacked = tiny("mlp", "monolithic", num_runs=2)
    with pytest.raises(ValueError, match=r"num_runs=2"):
        stacked(torch.zeros(4, 2 + R))  # the run axis is required when N > 1
    with pytest.raises(TypeError, match="takes no build arguments"):
        count_parameters(stacked, "mlp")
