"""The stacked training engine: equivalence, independence, determinism, learning, faults."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from mod_arch_core import training
from mod_arch_core.evaluation import evaluate_result, named_budget
from mod_arch_core.training import TrainConfig, clip_grad_norm_per_run, train

TINY = {"mlp": (8, 32), "mha": (8, 32), "rnn": (8, 16)}


def tiny(setting: str, task: str = "regression", model: str = "modular", **kw) -> TrainConfig:
    enc, dim = TINY[setting]
    defaults = dict(
        setting=setting,
        task=task,
        model=model,
        num_rules=2,
        encoder_dim=enc,
        dim=dim,
        iterations=10,
        batch_size=16,
        eval_every=5,
        eval_batches=1,
        state_dim=4,
        device="cpu",
    )
    defaults.update(kw)
    return TrainConfig(**defaults)


def weights(result, run: int) -> dict[str, torch.Tensor]:
    return {k: v[run] for k, v in result.model.state_dict().items()}


@pytest.mark.parametrize("setting", ["mlp", "mha", "rnn"])
def test_stacked_run_equals_the_same_run_trained_alone(setting: str) -> None:
    """Run (data_seed=1, seed=2) inside a 2x2 stack == that run alone, after 50 steps.

    Tolerance: 1e-5 relative + 1e-6 absolute on every weight and curve value, CPU float32; the
    only difference is the order of floating-point reductions inside batched matmuls.
    """
    config = tiny(setting, iterations=50, eval_every=25, data_seeds=(0, 1), seeds=(1, 2))
    alone = dataclasses.replace(config, data_seeds=(1,), seeds=(2,))
    stacked, single = train(config), train(alone)
    k = config.runs.index((1, 2))
    for name, value in weights(single, 0).items():
        torch.testing.assert_close(weights(stacked, k)[name], value, rtol=1e-5, atol=1e-6)
    curve = stacked.curves[stacked.curves.run == k].perf.to_numpy()
    np.testing.assert_allclose(curve, single.curves.perf.to_numpy(), rtol=1e-5, atol=1e-6)


def test_runs_are_independent_of_their_neighbours() -> None:
    """Changing one run's task (data seed) leaves every other run bit-identical."""
    a = train(tiny("mlp", data_seeds=(0, 1), seeds=(0,)))
    b = train(tiny("mlp", data_seeds=(0, 7), seeds=(0,)))
    for name, value in weights(a, 0).items():
        assert torch.equal(value, weights(b, 0)[name]), name
    changed = [not torch.equal(v, weights(b, 1)[name]) for name, v in weights(a, 1).items()]
    assert any(changed), "the run whose task changed should have learned something else"


def test_same_seeds_same_numbers() -> None:
    config = tiny("mha", data_seeds=(0, 1), seeds=(0,), task="classification")
    first, second = train(config), train(config)
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    assert first.curves.equals(second.curves)
    budget = named_budget("smoke")
    rows_a = evaluate_result(first, budget)
    rows_b = evaluate_result(second, budget)
    assert rows_a == rows_b


@pytest.mark.parametrize("setting", ["mlp", "mha", "rnn"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_short_training_lowers_the_loss(setting: str, task: str) -> None:
    config = tiny(
        setting, task=task, iterations=150, eval_every=150, eval_batches=4, batch_size=64, lr=3e-3
    )
    result = train(config)
    curve = result.curves.groupby("iteration").perf.mean()
    assert curve.iloc[-1] < curve.iloc[0], curve.to_dict()


def test_gt_modular_metrics_are_ideal_after_a_short_run() -> None:
    result = train(tiny("mlp", model="gt-modular", num_rules=4, dim=32))
    rows = evaluate_result(result, named_budget("smoke"), checkpoints=("last",))
    for row in rows:
        assert row["collapse_avg"] == pytest.approx(0, abs=1e-12)
        assert row["collapse_worst"] == pytest.approx(0, abs=1e-12)
        assert row["alignment"] == pytest.approx(0, abs=1e-12)
        assert row["inverse_mutual_info"] < 1e-5
        np.testing.assert_allclose(np.asarray(row["activation_matrix"]), np.eye(4) / 4)


def test_best_checkpoint_holds_the_best_validated_weights() -> None:
    result = train(tiny("mlp", iterations=30, eval_every=10, data_seeds=(0, 1)))
    curves = result.curves
    for k in range(result.config.num_runs):
        val = curves[curves.run == k].set_index("iteration").perf_val
        assert result.best_iteration[k] == val.idxmin()
    assert set(result.state("best")) == set(result.state("last"))


def test_gradient_clipping_is_per_run() -> None:
    a = torch.zeros(3, 4, requires_grad=True)
    b = torch.zeros(3, 2, requires_grad=True)
    a.grad = torch.tensor([[3.0, 0, 0, 0], [0.1, 0, 0, 0], [0, 0, 0, 0]])
    b.grad = torch.tensor([[4.0, 0], [0, 0], [0, 0.5]])
    norms = clip_grad_norm_per_run([a, b], max_norm=1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.1, 0.5]))
    assert torch.linalg.vector_norm(torch.cat([a.grad[0], b.grad[0]])) == pytest.approx(
        1.0, rel=1e-5
    )
    assert a.grad[1, 0] == pytest.approx(0.1)  # below the limit: untouched
    assert b.grad[2, 1] == pytest.approx(0.5)


def test_a_diverging_run_is_marked_and_the_others_continue(monkeypatch) -> None:
    original = training.per_run_loss
    calls = {"n": 0}

    def poisoned(output, target, task):
        losses = original(output, target, task)
        calls["n"] += 1
        if calls["n"] > 4 and torch.is_grad_enabled():
            losses = losses.clone()
            losses[1] = losses[1] * float("nan")
        return losses

    config = tiny("mlp", data_seeds=(0, 1, 2), seeds=(0,), iterations=12)
    clean = train(config)
    monkeypatch.setattr(training, "per_run_loss", poisoned)
    result = train(config)
    assert result.diverged_at[1] == 4
    assert result.diverged_at[0] == -1 and result.diverged_at[2] == -1
    for k in (0, 2):
        for name, value in weights(result, k).items():
            assert torch.isfinite(value).all()
            torch.testing.assert_close(value, weights(clean, k)[name])


def test_invalid_configurations_fail_before_training() -> None:
    with pytest.raises(ValueError, match="unknown model 'modullar'"):
        training.build_stack(tiny("mlp", model="modullar"))
    with pytest.raises(ValueError, match="num_rules must be >= 2, got 1"):
        tiny("mlp", num_rules=1)
    with pytest.raises(ValueError, match="unknown setting 'cnn'"):
        TrainConfig("cnn", "regression", "modular", 2)
    with pytest.raises(ValueError, match="seeds must not repeat"):
        tiny("mlp", seeds=(1, 1))
    with pytest.raises(ValueError, match="search_version must be 1 or 2"):
        tiny("mha", search_version=3)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        tiny("mlp", lr=-1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            tiny("mlp", device="cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda"):
        tiny("mlp", device="tpu")


def test_config_round_trips_through_a_dict() -> None:
    config = tiny("rnn", data_seeds=(0, 3), seeds=(1,))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.clip_norm == 1.0 and tiny("mlp").clip_norm is None
    assert config.eval_iterations() == [0, 5, 10]
    assert TrainConfig("mlp", "regression", "modular", 4).num_steps == 100_000
    assert TrainConfig("mha", "regression", "modular", 4).num_steps == 500_000


@pytest.mark.parametrize("setting", ["mlp", "rnn"])
def test_checkpoints_evaluated_in_one_stack_equal_each_alone(setting: str) -> None:
    """evaluate_result (all checkpoints stacked, a best equal to the last evaluated once) gives
    each checkpoint the rows of evaluating that checkpoint's weights on their own."""
    from mod_arch_core.evaluation import checkpoint_stack, evaluate_stack

    config = tiny(setting, data_seeds=(0, 1), seeds=(0,), iterations=6, eval_every=2)
    result = train(config, progress=False)
    with torch.no_grad():  # run 1's best is its last; run 0's is different
        result.best_state = {k: v.clone() for k, v in result.best_state.items()}
        for name, value in result.model.state_dict().items():
            result.best_state[name][1].copy_(value[1])
            result.best_state[name][0].copy_(value[0] * 0.5)
    entries, where = checkpoint_stack(result, ("last", "best"))
    assert entries == [("last", 0), ("last", 1), ("best", 0)]
    assert where[("best", 1)] == where[("last", 1)]
    budget = named_budget("smoke")
    rows = evaluate_result(result, budget)
    tasks, model = training.build_stack(config, torch.device("cpu"))
    for checkpoint in ("last", "best"):
        model.load_state_dict(result.state(checkpoint))
        alone = evaluate_stack(model, tasks, config, budget, "cpu")
        stacked = [row for row in rows if row["checkpoint"] == checkpoint]
        for want, got in zip(alone, stacked, strict=True):
            for key, value in want.items():
                if isinstance(value, float):
                    np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_engine_tensors_live_on_the_training_device() -> None:
    """Generators, batches, parameters, gradients and Adam's state are all on the device the
    configuration names (the CUDA path's placement, checked with the device at hand)."""
    from mod_arch_core.data import sample_stack

    config = tiny("rnn", data_seeds=(0, 1), seeds=(0, 1))
    device = training.resolve_device(config.device)
    generators = training.run_generators(config, training.STREAM_TRAIN, device)
    assert {g.device for g in generators} == {device}
    tasks, model = training.build_stack(config, device)
    batch = sample_stack(tasks, 4, generators, seq_len=3, device=device)
    assert {batch.inputs.device, batch.targets.device} == {device}
    params = list(model.parameters())
    optimizer = training.make_optimizer(params, config)
    alive = torch.ones(config.num_runs, dtype=torch.bool, device=device)
    training.train_step(model, optimizer, batch, task="regression", clip=1.0, alive=alive)
    tensors = [p for p in params] + [p.grad for p in params]
    tensors += [
        v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)
    ]
    assert {t.device for t in tensors} == {device}
    meta = training.build_stack(config, torch.device("meta"))[1]
    assert {p.device.type for p in meta.parameters()} == {"meta"}  # nothing drawn on the CPU


# Learning-rate decay (a deviation from spec §4 for the CPU profiles) ---------------------------


def recorded_lrs(monkeypatch, config: TrainConfig) -> tuple[list[float], training.TrainResult]:
    """Train ``config`` for real and return the optimizer's lr at every step, and the result."""
    original = training.train_step
    seen: list[float] = []

    def spy(model, optimizer, batch, **kwargs):
        assert len(optimizer.param_groups) == 1  # one lr for every run of the stack
        seen.append(optimizer.param_groups[0]["lr"])
        return original(model, optimizer, batch, **kwargs)

    monkeypatch.setattr(training, "train_step", spy)
    result = train(config, progress=False)
    monkeypatch.setattr(training, "train_step", original)
    return seen, result


def test_default_lr_is_constant_and_bitwise_the_plain_adam_loop(monkeypatch) -> None:
    """Without lr_decay, train() is the constant-lr loop it always was, bit for bit: the same
    weights as a hand-written loop over build_stack, make_optimizer and train_step (which never
    touches the lr), and the same as setting the lr to its own value each step (factor 1)."""
    config = tiny("mlp", data_seeds=(0, 1), seeds=(0,), iterations=12, lr=3e-3)
    lrs, result = recorded_lrs(monkeypatch, config)
    assert lrs == [3e-3] * 12
    device = torch.device("cpu")
    tasks, model = training.build_stack(config, device)
    optimizer = training.make_optimizer([p for p in model.parameters()], config)
    generators = training.run_generators(config, training.STREAM_TRAIN, device)
    alive = torch.ones(config.num_runs, dtype=torch.bool)
    for _ in range(config.num_steps):
        batch = training.sample_stack(tasks, config.batch_size, generators, device=device)
        training.train_step(model, optimizer, batch, task=config.task, clip=None, alive=alive)
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name
    flat = dataclasses.replace(config, lr_decay={"start": 0.0, "factor": 1.0})
    flat_lrs, flat_result = recorded_lrs(monkeypatch, flat)
    assert flat_lrs == lrs
    assert flat_result.curves.equals(result.curves)
    for name, value in flat_result.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name


def test_lr_decay_follows_the_schedule_step_by_step(monkeypatch) -> None:
    """Constant up to fraction start of the steps, then a half cosine to factor x lr at the
    last step, as read from the optimizer's param group during real training; the run is the
    constant-lr run until the decay begins, and differs after."""
    lr, steps = 1e-2, 11  # step t has training fraction t / 10
    decay = {"start": 0.5, "factor": 0.1}
    config = tiny("rnn", iterations=steps, eval_every=6, lr=lr, lr_decay=decay)
    lrs, result = recorded_lrs(monkeypatch, config)
    assert lrs[:6] == [lr] * 6  # fractions 0 .. 0.5: exactly the constant lr
    expected = [
        lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (t / 10 - 0.5) / 0.5))) for t in range(6, 11)
    ]
    np.testing.assert_allclose(lrs[6:], expected, rtol=1e-12)
    assert lrs[-1] == pytest.approx(0.1 * lr, rel=1e-12)
    assert all(a > b for a, b in itertools.pairwise(lrs[5:]))  # strictly decreasing
    assert lrs == [config.lr_at(t) for t in range(steps)]
    constant_lrs, constant = recorded_lrs(monkeypatch, dataclasses.replace(config, lr_decay=None))
    assert constant_lrs == [lr] * steps
    curves, flat = result.curves, constant.curves
    before = curves.iteration <= 6  # evaluations before the first decayed step
    assert curves[before].equals(flat[flat.iteration <= 6])
    after = curves[~before].perf.to_numpy()
    assert not np.array_equal(after, flat[flat.iteration > 6].perf.to_numpy())
    state, flat_state = result.model.state_dict(), constant.model.state_dict()
    assert any(not torch.equal(value, flat_state[name]) for name, value in state.items())


def test_scheduled_lr_edges() -> None:
    decay = {"start": 0.0, "factor": 0.25}
    assert training.scheduled_lr(1.0, 0, 5, decay) == 1.0  # fraction 0 <= start
    assert training.scheduled_lr(1.0, 4, 5, decay) == 0.25  # last step: exactly factor x lr
    assert training.scheduled_lr(1.0, 0, 1, decay) == 0.25  # a single step is the last one
    assert training.scheduled_lr(2e-3, 3, 5, None) == 2e-3
    assert training.scheduled_lr(1.0, 2, 5, decay) == pytest.approx(0.625)  # half way: mean


def test_lr_decay_is_recorded_and_hashed_only_when_set() -> None:
    from mod_arch_core.evaluation import named_budget
    from mod_arch_core.experiment import experiment_hash

    config = tiny("mlp")
    decayed = dataclasses.replace(config, lr_decay={"factor": 0.1, "start": 0.8})
    assert "lr_decay" not in config.to_dict()  # the form that existing hashes were made from
    assert decayed.to_dict()["lr_decay"] == {"start": 0.8, "factor": 0.1}
    assert TrainConfig.from_dict(decayed.to_dict()) == decayed
    assert TrainConfig.from_dict(config.to_dict()) == config
    budget = named_budget("smoke")
    assert experiment_hash(decayed, budget) != experiment_hash(config, budget)
    other = dataclasses.replace(config, lr_decay={"start": 0.8, "factor": 0.2})
    assert experiment_hash(other, budget) != experiment_hash(decayed, budget)


@pytest.mark.parametrize(
    ("decay", "match"),
    [
        ({"start": 1.0, "factor": 0.1}, r"lr_decay\.start must lie in \[0, 1\)"),
        ({"start": -0.5, "factor": 0.1}, r"lr_decay\.start must lie in \[0, 1\)"),
        ({"start": 0.5, "factor": 0.0}, r"lr_decay\.factor must lie in \(0, 1\]"),
        ({"start": 0.5, "factor": 2.0}, r"lr_decay\.factor must lie in \(0, 1\]"),
        ({"start": 0.5, "factor": float("inf")}, r"lr_decay\.factor must be a finite number"),
        ({"start": True, "factor": 0.1}, r"lr_decay\.start must be a number"),
        ({"start": 0.5}, r"lr_decay needs lr_decay\.factor"),
        ({"start": 0.5, "factor": 0.1, "kind": "cos"}, r"unknown keys \['kind'\]"),
        (0.8, r"lr_decay must be a mapping with start and factor"),
    ],
)
def test_a_bad_lr_decay_is_refused_before_any_work(monkeypatch, decay, match) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("a bad lr_decay reached training")

    monkeypatch.setattr(training, "build_stack", no_work)
    with pytest.raises((ValueError, TypeError), match=match):
        tiny("mlp", lr_decay=decay)


def test_train_cli_passes_and_records_the_lr_decay(tmp_path) -> None:
    """``train --lr-decay START,FACTOR`` reaches TrainConfig and the folder's provenance."""
    import json

    from mod_arch_core.__main__ import main
    from mod_arch_core.experiment import experiment_hash

    out = tmp_path / "run"
    argv = ["train", "--setting", "mlp", "--task", "regression", "--model", "modular",
            "--num-rules", "2", "--encoder-dim", "4", "--dim", "8", "--iterations", "4",
            "--eval-every", "2", "--eval-batches", "1", "--batch-size", "4", "--budget", "smoke",
            "--device", "cpu", "--no-checkpoints", "--no-progress", "--lr", "1e-3",
            "--lr-decay", "0.5,0.2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["lr_decay"] == {"start": 0.5, "factor": 0.2}
    config = TrainConfig.from_dict(meta["config"])
    assert config.lr_at(3) == pytest.approx(2e-4)
    rows = pd.read_parquet(out / "runs.parquet")
    assert set(rows["config_hash"]) == {experiment_hash(config, named_budget("smoke"))}


def test_describe_lr_states_the_schedule_the_book_quotes() -> None:
    from mod_arch_core.training import describe_lr

    assert describe_lr(1e-3, None) == "0.001, constant"
    assert describe_lr(1e-3, {"start": 0.75, "factor": 0.1}) == (
        "0.001 for the first 75% of the steps, then a half-cosine decay to 0.1 × 0.001 = 0.0001 "
        "at the last step"
    )
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        describe_lr(0.0, None)
    with pytest.raises(ValueError, match=r"lr_decay.start must lie in \[0, 1\)"):
        describe_lr(1e-3, {"start": 1.5, "factor": 0.1})
