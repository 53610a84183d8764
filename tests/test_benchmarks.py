"""The training benchmark: its reference-style baseline is the same model, data and FLOP count."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_phases
import bench_training
import reference_style as rs

from mod_arch_core.data import make_task
from mod_arch_core.data.mha import search
from mod_arch_core.data.rnn import run_dynamics
from mod_arch_core.models import build_model

R, E, D, STATE_DIM = 3, 8, 24, 5


def reference_model(setting: str) -> torch.nn.Module:
    if setting == "mlp":
        return rs.MLPModular(4, E, 32)  # D must be a multiple of R
    if setting == "mha":
        return rs.MHAModular(R, E, D, 5 * R)
    return rs.RNNModular(R, E, D, STATE_DIM)


@pytest.mark.parametrize("setting", ["mlp", "mha", "rnn"])
def test_reference_style_model_computes_the_engine_model(setting: str) -> None:
    """Run 1 of an engine stack, loaded into the one-model baseline, gives the same outputs."""
    target = reference_model(setting)
    r, dim = (4, 32) if setting == "mlp" else (R, D)
    engine = build_model(
        setting, "modular", r, E, dim, "regression", num_runs=2, seeds=[3, 4], state_dim=STATE_DIM
    )
    rs.copy_engine_weights(target, engine, run=1)
    options = {"state_dim": STATE_DIM} if setting == "rnn" else {}
    batch = make_task(setting, "regression", r, 0, **options).sample(
        6, torch.Generator().manual_seed(0), **({} if setting == "mlp" else {"seq_len": 7})
    )
    with torch.no_grad():
        out_engine, scores_engine = engine(torch.stack([batch.inputs, batch.inputs]))
        out_ref, scores_ref = target(batch.inputs)
    torch.testing.assert_close(out_ref, out_engine[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(scores_ref, scores_engine[1], atol=1e-6, rtol=1e-5)


def test_reference_style_data_follow_the_rules() -> None:
    """Labels of the numpy generators equal the package's rules on the same inputs (spec §2)."""
    stream = np.random.RandomState(0)
    alpha, beta = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, -0.75])
    x, y = rs.mlp_batch(stream, 32, alpha, beta)
    rules = x[:, 2:].argmax(-1).numpy()
    expected = alpha[rules] * x[:, 0].double().numpy() + beta[rules] * x[:, 1].double().numpy()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)

    x, y = rs.mha_batch(stream, 8, 6, alpha, beta)
    rules = x[..., 4 * R :].argmax(-1)
    _, _, v, v_prime = search(x[..., : 4 * R], rules, 1)
    a, b = torch.from_numpy(alpha)[rules], torch.from_numpy(beta)[rules]
    torch.testing.assert_close(y, (a * v + b * v_prime).float(), atol=1e-5, rtol=1e-5)

    A = stream.randn(R, 1, STATE_DIM, STATE_DIM) / np.sqrt(STATE_DIM)
    B = stream.randn(R, STATE_DIM, STATE_DIM) / np.sqrt(STATE_DIM)
    x, y = rs.rnn_batch(stream, 8, 6, A, B)
    rules = x[..., STATE_DIM:].argmax(-1)
    states = run_dynamics(
        x[None, ..., :STATE_DIM].double(),
        rules[None],
        torch.from_numpy(A)[None],
        torch.from_numpy(B)[None],
    )
    torch.testing.assert_close(y, states[0].float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("setting", ["mlp", "mha", "rnn"])
def test_analytic_flops_match_torch_flop_counter(setting: str) -> None:
    """The roofline's FLOPs = PyTorch's count of the matrix products, within the elementwise
    mixing it leaves out (3%)."""
    r = bench_training.SETTINGS[setting]
    run = rs.make_reference_run(setting, r, 32, 128)
    x, _ = run.batch()
    with FlopCounterMode(display=False) as counter:
        run.model(x)
    analytic = 2 * bench_training.forward_macs(setting, r, 32, 128)
    assert counter.get_total_flops() == pytest.approx(analytic, rel=0.03)


def test_reference_style_run_trains() -> None:
    run = rs.make_reference_run("mlp", 4, 8, 32, batch_size=64)
    run.optimizer.param_groups[0]["lr"] = 3e-3
    first = [run.step() for _ in range(10)]
    later = [run.step() for _ in range(150)][-10:]
    assert np.mean(later) < 0.8 * np.mean(first)


def test_benchmark_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--settings", "mlp", "--steps", "1", "--rounds", "1", "--warmup", "0"]
    assert (
        bench_training.main([*argv, "--encoder-dim", "8", "--n-runs", "1,2", "--batches", "16"])
        == 0
    )
    out = capsys.readouterr().out
    for name in ("reference", "engine N=1", "engine N=2", "roofline", "GFLOP/s"):
        assert name in out
    # On more than one thread the table says that its ratios are not per core.
    assert ("per core the like-for-like" in out) == (bench_training.parse_args([]).threads > 1)


@pytest.mark.parametrize("setting", ["mlp", "mha", "rnn"])
def test_bench_phases_finds_a_configuration_of_every_setting_of_the_reference_profile(setting):
    """The per-phase benchmark measures what the shipped profile trains (MHA: search version 2)."""
    profile, config = bench_phases.pick_config("reference", setting, "modular", 4)
    assert profile.name == "reference" and (config.setting, config.num_rules) == (setting, 4)
    assert config in profile.configurations(device="cpu") and config.task == "regression"
    if setting == "mha":
        assert config.search_version in profile.grid_for("mha").search_versions


def test_matmul_floor_replays_each_recorded_product_by_its_count() -> None:
    """The floor sums each distinct product's replayed time weighted by its calls per step; a
    baddbmm's scalar arguments (recorded as empty shapes) are not operands."""
    bmm = ("aten::bmm", ((4, 8, 16), (4, 16, 8)))
    baddbmm = ("aten::baddbmm", ((4, 1, 8), (4, 8, 16), (4, 16, 8), (), ()))
    operands = bench_training._gemm_inputs(baddbmm[0], [list(s) for s in baddbmm[1]])
    assert operands is not None and [tuple(t.shape) for t in operands] == [
        (4, 1, 8), (4, 8, 16), (4, 16, 8)
    ]  # fmt: skip
    assert bench_training._gemm_flops(operands) == 2 * 4 * 8 * 16 * 8
    once = bench_training.matmul_floor({bmm: 2, baddbmm: 2}, steps=2, repeats=3)
    assert once.seconds > 0 and len(once.dearest) == 2
    assert once.seconds == pytest.approx(sum(t for t, _ in once.dearest))
    assert all("GFLOP/s" in label for _, label in once.dearest)
    assert bench_training._gemm_inputs("aten::mm", [[3, 4]]) is None  # not a full call


def test_benchmark_profile_reports_the_matmul_floor(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--settings", "mlp", "--steps", "1", "--rounds", "1", "--warmup", "0", "--profile"]
    assert (
        bench_training.main([*argv, "--encoder-dim", "8", "--n-runs", "2", "--batches", "16"]) == 0
    )
    out = capsys.readouterr().out
    assert "aten kernels per step" in out
    assert re.search(r"dearest: (bmm|baddbmm|mm|addmm) \(\d+, \d+", out)  # the costliest varies
    assert "engine N=2: matmul floor" in out and "the reference-style loop" in out
