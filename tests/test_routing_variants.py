"""Routing variants beyond the paper (models/sparse_routing.py): sparsity, gradients, losses,
stacked training, determinism, parameter counts, results rows and profiles."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mod_arch_core import experiment, results
from mod_arch_core.evaluation import SELECTED_METRIC_NAMES, named_budget
from mod_arch_core.models import (
    MODEL_NAMES,
    MODELS,
    HardRouting,
    build_model,
    count_parameters,
    input_dim,
    load_balancing_loss,
    routing_information_loss,
    top_k_gate,
)
from mod_arch_core.models.sparse_routing import SelfScoredGumbelRouting, gumbel_noise
from mod_arch_core.profiles import load_profile
from mod_arch_core.training import TrainConfig, build_stack, train
from mod_arch_core.validation import PAPER_MODELS, SETTINGS

R, E, D, STATE_DIM = 3, 8, 24, 4  # D: a multiple of R (MLP) and of 2R (MHA)
VARIANTS = tuple(m for m in MODEL_NAMES if m not in PAPER_MODELS)
#: Non-zero combination weights per position of each hard routing.
SPARSITY = {"modular-topk": 1, "modular-top2": 2, "modular-gumbel": 1, "modular-op-topk": 1}
SPARSITY |= {"modular-topk-balanced": 1, "modular-gumbel-balanced": 1}
HARD = tuple(m for m in VARIANTS if issubclass(MODELS[m].routing, HardRouting))


def tiny(setting, model, num_runs=2, **kwargs):
    return build_model(
        setting, model, R, E, D, "regression", num_runs=num_runs, state_dim=STATE_DIM, **kwargs
    )


def make_input(setting, num_runs=2, batch=6, length=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lead = (num_runs, batch) if setting == "mlp" else (num_runs, batch, length)
    x = torch.randn(*lead, input_dim(setting, R, state_dim=STATE_DIM), generator=generator)
    rules = torch.randint(R, lead, generator=generator)
    x[..., -R:] = F.one_hot(rules, R).float()
    return x, rules


def test_every_variant_is_a_model_name_with_its_routing_and_options() -> None:
    assert set(SPARSITY) == set(HARD)
    assert set(VARIANTS) == set(MODELS) - set(PAPER_MODELS)
    assert MODELS["modular-top2"].options == {"top_k": 2}
    assert MODELS["modular-balanced"].routing is MODELS["modular"].routing
    for model in VARIANTS:
        built = tiny("mlp", model)
        assert built.model_name == model
        rebuilt = build_model(**built.config)  # fixed options round-trip through the config
        assert rebuilt.config == built.config
        for a, b in zip(built.parameters(), rebuilt.parameters(), strict=True):
            assert torch.equal(a, b)


# Sparsity and scores ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", HARD)
@pytest.mark.parametrize("setting", SETTINGS)
def test_forward_weights_are_exactly_k_sparse_and_scores_are_the_soft_probabilities(
    setting, model
) -> None:
    net = tiny(setting, model)
    x, rules = make_input(setting)
    for mode in ("train", "eval"):
        net.train(mode == "train")
        _, scores = net(x)
        weights = net.routing_weights()
        assert weights.shape == scores.shape == (*x.shape[:-1], R)
        assert ((weights != 0).sum(-1) == SPARSITY[model]).all(), mode
        torch.testing.assert_close(scores.sum(-1), torch.ones(x.shape[:-1]))
        assert (scores >= 0).all() and ((scores > 0) & (scores < 1)).any()  # soft, not selected
        selected = weights.argmax(-1)
        if model.startswith("modular-gumbel") and mode == "train":
            continue  # a sample: need not be the argmax of the scores
        assert torch.equal(selected, scores.argmax(-1)), mode  # the selection is the argmax
    if model == "modular-top2":  # renormalised over the two selected modules
        torch.testing.assert_close(weights.sum(-1), torch.ones(x.shape[:-1]))
    if model.startswith("modular-gumbel"):
        assert torch.equal(weights, F.one_hot(weights.argmax(-1), R).float())
    if setting == "rnn":  # a single step: one routing call, weights (N, B, 1, R)
        _, one_step = net(x[:, :, :1])
        assert one_step.shape == (2, x.shape[1], 1, R)
    if model == "modular-op-topk":  # task-level: one module per rule
        for run in range(2):
            for rule in range(R):
                chosen = selected[run][rules[run] == rule]
                assert (chosen == chosen.flatten()[0]).all()


def test_top_k_gate_values() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    torch.testing.assert_close(top_k_gate(probs, 1), torch.tensor([[0.5, 0, 0], [0, 0, 0.7]]))
    expected = torch.tensor([[0.625, 0.375, 0], [0, 0.2 / 0.9, 0.7 / 0.9]])
    torch.testing.assert_close(top_k_gate(probs, 2), expected)
    torch.testing.assert_close(top_k_gate(probs, 3), probs)
    with pytest.raises(ValueError, match="top_k must lie in"):
        top_k_gate(probs, 4)


# Gradients reach the router ---------------------------------------------------------------------


def _capture_router_input(net):
    """Keep the score logits the routing receives (module_logits, or the scorer's output)."""
    captured = []

    def hook(module, args, kwargs):
        logits = kwargs.get("module_logits")
        if logits is not None:
            logits.retain_grad()
            captured.append(logits)

    net.routing.register_forward_pre_hook(hook, with_kwargs=True)
    return captured


@pytest.mark.parametrize("model", HARD)
@pytest.mark.parametrize("setting", SETTINGS)
def test_task_gradient_reaches_the_router(setting, model) -> None:
    net = tiny(setting, model)
    captured = _capture_router_input(net)
    x, _ = make_input(setting)
    output, _ = net(x)
    output.square().mean().backward()  # the task loss only: no auxiliary loss in these models
    if net.routing.self_scored:
        assert captured and all(c.grad is not None and c.grad.abs().sum() > 0 for c in captured)
    else:
        for name, param in net.routing.scorer.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name


# Auxiliary losses --------------------------------------------------------------------------------


def _onehot(rows, num_modules):
    return F.one_hot(torch.tensor(rows), num_modules).float()


@pytest.mark.parametrize("num_modules", [2, 4])
def test_load_balancing_loss_is_one_when_balanced_and_num_modules_when_collapsed(
    num_modules,
) -> None:
    positions = 4 * num_modules
    uniform = torch.full((1, positions, num_modules), 1 / num_modules)
    balanced = _onehot([list(range(num_modules)) * 4], num_modules)
    collapsed = _onehot([[0] * positions], num_modules)
    partial = _onehot([[0] * (positions - 2) + [1, 1]], num_modules)
    torch.testing.assert_close(load_balancing_loss(uniform), torch.ones(1))
    torch.testing.assert_close(load_balancing_loss(balanced), torch.ones(1))
    torch.testing.assert_close(load_balancing_loss(collapsed), torch.full((1,), num_modules * 1.0))
    assert 1 < load_balancing_loss(partial).item() < num_modules
    soft_collapse = torch.softmax(torch.tensor([3.0] + [0.0] * (num_modules - 1)), 0)
    assert load_balancing_loss(soft_collapse.expand(1, positions, num_modules)).item() > 1
    stack = torch.cat([uniform, collapsed])  # per run: (2,)
    torch.testing.assert_close(load_balancing_loss(stack), torch.tensor([1.0, num_modules]))


def test_balancing_loss_gradient_pushes_towards_the_neglected_modules() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0]] * 6], requires_grad=True)
    load_balancing_loss(torch.softmax(logits, -1)).sum().backward()
    assert (logits.grad[..., 0] > 0).all() and (logits.grad[..., 1:] < 0).all()


def test_information_regulariser_is_lowest_for_sharp_and_balanced_routing() -> None:
    num_modules = 4
    sharp_balanced = _onehot([list(range(num_modules)) * 2], num_modules)
    uniform = torch.full((1, 8, num_modules), 1 / num_modules)
    collapsed = _onehot([[0] * 8], num_modules)
    soft_balanced = 0.5 * sharp_balanced + 0.5 * uniform
    values = {
        name: routing_information_loss(p).item()
        for name, p in [
            ("sharp_balanced", sharp_balanced),
            ("uniform", uniform),
            ("collapsed", collapsed),
            ("soft_balanced", soft_balanced),
        ]
    }
    assert values["sharp_balanced"] == pytest.approx(-math.log(num_modules), abs=1e-6)
    assert values["uniform"] == pytest.approx(0, abs=1e-6)
    assert values["collapsed"] == pytest.approx(0, abs=1e-6)
    assert min(values, key=values.get) == "sharp_balanced"
    assert values["sharp_balanced"] < values["soft_balanced"] < values["uniform"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_models_expose_per_run_auxiliary_losses(setting) -> None:
    x, _ = make_input(setting, num_runs=3)
    plain = tiny(setting, "modular", num_runs=3)
    plain(x)
    assert plain.auxiliary_loss() is None
    both = tiny(setting, "modular-op-topk", num_runs=3, balance_weight=0.5, entropy_weight=0.25)
    _, scores = both(x)
    selected = both.routing_weights().argmax(-1)
    expected = 0.5 * load_balancing_loss(scores, selected) + 0.25 * routing_information_loss(scores)
    torch.testing.assert_close(both.auxiliary_loss(), expected)
    single = tiny(setting, "modular-op-topk", num_runs=1, seeds=[1], balance_weight=0.5)
    single(x[1:2])
    balanced = tiny(setting, "modular-op-topk", num_runs=3, balance_weight=0.5)
    balanced(x)
    torch.testing.assert_close(single.auxiliary_loss()[0], balanced.auxiliary_loss()[1])


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="fixes top_k=2"):
        tiny("mlp", "modular-top2", top_k=1)
    with pytest.raises(ValueError, match="allowed options: balance_weight, entropy_weight"):
        tiny("mlp", "modular", top_k=1)
    with pytest.raises(ValueError, match=r"unknown option.*'gt-modular'; allowed options: none"):
        tiny("mlp", "gt-modular", balance_weight=0.1)
    with pytest.raises(ValueError, match="top_k must be <= num_rules=3"):
        tiny("mlp", "modular-topk", top_k=4)
    with pytest.raises(ValueError, match="balance_weight must be a finite number >= 0"):
        tiny("mlp", "modular", balance_weight=-1.0)
    with pytest.raises(ValueError, match="tau_end must be > 0"):
        tiny("mlp", "modular-gumbel", tau_end=0)


# Gumbel-softmax: noise, temperature, determinism ------------------------------------------------


def test_gumbel_noise_of_a_run_depends_only_on_its_generator() -> None:
    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    stacked = gumbel_noise((3, 5, 4), gens(7, 3, 9))
    single = gumbel_noise((1, 5, 4), gens(3))
    assert torch.equal(stacked[1], single[0])
    assert not torch.equal(stacked[0], stacked[1])
    assert torch.isfinite(gumbel_noise((2, 10_000, 4), gens(0, 1))).all()


@pytest.mark.parametrize("setting", SETTINGS)
def test_gumbel_noise_is_a_function_of_seed_and_step(setting) -> None:
    x, _ = make_input(setting, num_runs=3, batch=32)
    net = tiny(setting, "modular-gumbel", num_runs=3, seeds=[7, 3, 9])
    single = tiny(setting, "modular-gumbel", num_runs=1, seeds=[3])
    out_a, _ = net(x)
    weights_a = net.routing_weights().detach().clone()
    out_b, _ = net(x)  # same step: same noise
    assert torch.equal(out_a, out_b) and torch.equal(weights_a, net.routing_weights())
    out_single, _ = single(x[1:2])
    torch.testing.assert_close(out_single[0], out_a[1], rtol=0, atol=1e-6)
    assert torch.equal(single.routing_weights()[0], weights_a[1])
    net.set_progress(0.5)  # a new step: new noise, somewhere another module
    net(x)
    assert not torch.equal(weights_a, net.routing_weights())
    net.eval()  # evaluation: deterministic argmax of the scores
    _, scores = net(x)
    assert torch.equal(net.routing_weights(), F.one_hot(scores.argmax(-1), R).float())


def test_gumbel_temperature_anneals_geometrically() -> None:
    routing = SelfScoredGumbelRouting(tau_start=2.0, tau_end=0.5)
    assert routing.tau == 2.0
    routing.set_progress(0.5)
    assert routing.tau == pytest.approx(1.0)
    routing.set_progress(1.0)
    assert routing.tau == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"progress fraction must lie in \[0, 1\]"):
        routing.set_progress(1.5)


# Parameter counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_rules", [2, 4])
@pytest.mark.parametrize("setting", SETTINGS)
def test_variants_have_the_parameter_count_of_the_model_they_derive_from(
    setting, num_rules
) -> None:
    args = (setting, None, num_rules, 32, 128, "regression")

    def count(model):
        return count_parameters(args[0], model, *args[2:])

    for model in VARIANTS:
        base = "modular-op" if model.startswith("modular-op") else "modular"
        assert count(model) == count(base), model
    assert count("modular-op-topk") == count("modular-op")


# Training through the stacked engine ------------------------------------------------------------

TINY_SIZES = {"mlp": (8, 24), "mha": (8, 24), "rnn": (8, 16)}


def tiny_config(setting, model, **kw) -> TrainConfig:
    enc, dim = TINY_SIZES[setting]
    defaults = dict(
        setting=setting,
        task="regression",
        model=model,
        num_rules=2,
        encoder_dim=enc,
        dim=dim,
        iterations=8,
        batch_size=8,
        eval_every=4,
        eval_batches=1,
        state_dim=4,
        lr=3e-3,
        device="cpu",
    )
    defaults.update(kw)
    return TrainConfig(**defaults)


@pytest.mark.parametrize("model", VARIANTS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_variants_train_stacked_and_run_k_equals_the_run_alone(setting, model) -> None:
    """Tolerance as tests/test_training.py: 1e-5 relative + 1e-6 absolute, CPU float32."""
    config = tiny_config(setting, model, data_seeds=(0, 1), seeds=(1, 2))
    alone = dataclasses.replace(config, data_seeds=(1,), seeds=(2,))
    stacked, single = train(config), train(alone)
    k = config.runs.index((1, 2))
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(
            stacked.model.state_dict()[name][k], value[0], rtol=1e-5, atol=1e-6, msg=name
        )
    curve = stacked.curves[stacked.curves.run == k].perf.to_numpy()
    np.testing.assert_allclose(curve, single.curves.perf.to_numpy(), rtol=1e-5, atol=1e-6)
    assert (stacked.diverged_at == -1).all()


def test_training_adds_the_auxiliary_loss_and_anneals_the_temperature() -> None:
    plain = train(tiny_config("mlp", "modular-gumbel", iterations=4))
    balanced = train(tiny_config("mlp", "modular-gumbel-balanced", iterations=4))
    changed = [
        not torch.equal(value, balanced.model.state_dict()[name])
        for name, value in plain.model.state_dict().items()
    ]
    assert any(changed)  # the balancing loss reached the optimiser
    routing = plain.model.routing
    assert routing.draw == 4  # one set_progress call per step
    assert routing.tau == pytest.approx(1.0 * 0.5 ** (3 / 4))  # last step: fraction 3/4
    again = train(tiny_config("mlp", "modular-gumbel", iterations=4))
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name  # deterministic


# Results rows and profiles ------------------------------------------------------------------------


def test_variant_names_appear_in_results_rows_with_selected_metrics() -> None:
    budget = named_budget("smoke")
    hard = experiment.run_experiment(tiny_config("mlp", "modular-topk", iterations=4), budget)
    soft = experiment.run_experiment(tiny_config("mlp", "modular-balanced", iterations=4), budget)
    for out, name in ((hard, "modular-topk"), (soft, "modular-balanced")):
        assert list(out.runs.columns) == list(results.RUN_COLUMNS)
        assert set(out.runs.model) == {name}
        results.validate_runs(out.runs)
    assert list(results.RUN_COLUMNS)[-5:] == list(SELECTED_METRIC_NAMES)
    assert np.isfinite(hard.runs[list(SELECTED_METRIC_NAMES)].to_numpy()).all()
    assert soft.runs[list(SELECTED_METRIC_NAMES)].isna().all().all()
    for _, row in hard.runs.iterrows():
        assert 0 <= row.collapse_avg_selected <= 1 and 0 <= row.alignment_selected <= 1


def test_routing_profiles_share_the_mlp_grid_and_seeds_of_the_reference_profile() -> None:
    """``routing-quick`` is the reference MLP grid (first capacity) at a constant lr; ``routing``
    is ``routing-quick`` on every setting."""
    quick, every, reference = (load_profile(n) for n in ("routing-quick", "routing", "reference"))
    differs = {"name", "description", "settings"}
    for field in dataclasses.fields(quick):
        if field.name not in differs:
            assert getattr(every, field.name) == getattr(quick, field.name), field.name
    for name in ("data_seeds", "seeds", "eval_batches", "seq_len", "lr", "budget"):
        assert getattr(quick, name) == getattr(reference, name), name
    ours, theirs = quick.grid_for("mlp"), reference.grid_for("mlp")
    assert set(ours.num_rules) <= set(theirs.num_rules)
    assert ours.capacities == theirs.capacities[:1]
    for name in ("iterations", "eval_every", "batch_size"):
        assert getattr(ours, name) == getattr(theirs, name), name
    # the routing results were trained before the reference recipe decayed its lr
    assert quick.lr_decay is None and reference.lr_decay is not None
    assert set(quick.models) == set(MODEL_NAMES) - {"modular-gumbel-balanced"}
    assert set(reference.models) <= set(quick.models)
    configs = {c.model: c for c in quick.configurations(device="cpu")}
    assert configs["modular-top2"].model_options == {"top_k": 2}
    small = dataclasses.replace(configs["modular-top2"], encoder_dim=8, dim=16, num_rules=2)
    _, model = build_stack(small)
    assert model.routing.top_k == 2 and model.model_name == "modular-top2"


def test_rows_record_the_routing_options_in_effect() -> None:
    budget = named_budget("smoke")
    plain = experiment.run_experiment(tiny_config("mlp", "modular", iterations=2), budget)
    weighted = experiment.run_experiment(
        tiny_config("mlp", "modular", iterations=2, model_options={"balance_weight": 0.5}), budget
    )
    named = experiment.run_experiment(tiny_config("mlp", "modular-top2", iterations=2), budget)
    assert set(plain.runs.model_options) == {"{}"}
    assert set(weighted.runs.model_options) == {'{"balance_weight": 0.5}'}
    assert set(named.runs.model_options) == {'{"top_k": 2}'}
    old = plain.runs.drop(columns=["model_options"])  # a table from before the column existed
    assert set(results.conform(old, results.RUN_COLUMNS).model_options) == {"{}"}


def test_train_cli_takes_routing_variants_and_options(tmp_path, capsys) -> None:
    from mod_arch_core.__main__ import main

    base = ["train", "--setting", "mlp", "--task", "regression", "--num-rules", "2",
            "--encoder-dim", "8", "--dim", "16", "--iterations", "4", "--batch-size", "8",
            "--eval-every", "2", "--eval-batches", "1", "--budget", "smoke", "--no-checkpoints",
            "--no-progress"]  # fmt: skip
    out = tmp_path / "topk"
    assert main([*base, "--model", "modular-topk", "--option", "top_k=2", "--out", str(out)]) == 0
    runs = results.load(out).runs
    assert set(runs.model) == {"modular-topk"} and set(runs.model_options) == {'{"top_k": 2}'}
    assert runs["collapse_avg_selected"].notna().all()
    with pytest.raises(SystemExit):
        main(
            [*base, "--model", "modular-top2", "--option", "top_k=3", "--out", str(tmp_path / "x")]
        )
    assert "fixes top_k=2, got top_k=3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--model", "monolithic", "--option", "top_k=1", "--out", str(tmp_path / "y")])
    assert "unknown option(s) ['top_k'] for model 'monolithic'" in capsys.readouterr().err
