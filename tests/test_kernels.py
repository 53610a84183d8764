"""The fused LSTM kernel (mod_arch_core.models.kernels) computes the cell of spec §3.4.

Checked against the plain formula in float32 (values and gradients, with and without the
Modular self-scores, from the zero state and from a given one), against the pure-PyTorch path
of a whole RNN model, for bitwise stacked == alone and repeatability, and for its switch
``MOD_ARCH_KERNELS``.
"""

from __future__ import annotations

import platform
import shutil

import pytest
import torch

from mod_arch_core import provenance
from mod_arch_core.models import build_model
from mod_arch_core.models import kernels as kernel_module
from mod_arch_core.models.aggregation import weighted_sum
from mod_arch_core.models.kernels import (
    fused_lstm_cell,
    fused_mix,
    kernel_mode,
    kernels,
    pure_pytorch,
    use_fused,
)

BUILDS_HERE = platform.system() == "Linux" and shutil.which("g++") is not None
needs_kernel = pytest.mark.skipif(kernels() is None, reason="the fused kernel is not built here")


def randn(*shape, seed=0):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return t.requires_grad_(True)


def plain_cell(proj, recur, c_prev, num_modules, score_weights):
    """The formula: gates (i, f, g, o) of proj + recur per module, logits from the ReLUs."""
    n, b, width = proj.shape
    h = width // (4 * num_modules)
    pre = proj if recur is None else proj + recur
    i, f, g, o = pre.view(n, b, num_modules, 4 * h).chunk(4, dim=-1)
    c_shared = 0.0 if c_prev is None else c_prev.unsqueeze(-2)
    c = torch.sigmoid(f) * c_shared + torch.sigmoid(i) * torch.tanh(g)
    logits = None
    if score_weights is not None:
        w0, w1 = score_weights
        logits = (proj.view(n, b, num_modules, -1).relu() * w0.unsqueeze(1)).sum(-1)
        if recur is not None:
            logits = logits + (recur.view(n, b, num_modules, -1).relu() * w1.unsqueeze(1)).sum(-1)
    return torch.sigmoid(o) * torch.tanh(c), c, logits


def test_the_kernel_builds_on_linux_with_gcc():
    """CI's machines have gcc: a kernel that stops building must fail loudly, not fall back."""
    if not BUILDS_HERE or kernel_mode() == "off":
        pytest.skip("no gcc on Linux here, or MOD_ARCH_KERNELS=off")
    assert kernels() is not None


@needs_kernel
@pytest.mark.parametrize("hidden", [1, 5, 8, 21, 62])
@pytest.mark.parametrize("scored", [True, False])
@pytest.mark.parametrize("first_step", [True, False])
def test_fused_cell_is_the_formula_and_its_gradient(hidden, scored, first_step):
    n, b, r = 2, 3, 4
    proj = randn(n, b, r * 4 * hidden)
    recur = None if first_step else randn(n, b, r * 4 * hidden, seed=1)
    c_prev = None if first_step else randn(n, b, hidden, seed=2)
    weights = (randn(n, r, 4 * hidden, seed=3), randn(n, r, 4 * hidden, seed=4)) if scored else None
    got = fused_lstm_cell(proj, recur, c_prev, r, weights)
    want = plain_cell(proj, recur, c_prev, r, weights)
    assert (got[2] is None) == (not scored)
    outputs = [(a, e) for a, e in zip(got, want, strict=True) if e is not None]
    for a, e in outputs:
        torch.testing.assert_close(a, e, atol=2e-6, rtol=1e-5)
    leaves = [t for t in (proj, recur, c_prev, *(weights or ())) if t is not None]
    upstream = [randn(*e.shape, seed=10 + k).detach() for k, (_, e) in enumerate(outputs)]
    grads = torch.autograd.grad([a for a, _ in outputs], leaves, upstream, allow_unused=True)
    plain = torch.autograd.grad([e for _, e in outputs], leaves, upstream, allow_unused=True)
    for leaf, a, e in zip(leaves, grads, plain, strict=True):
        expected = torch.zeros_like(leaf) if e is None else e
        torch.testing.assert_close(a, expected, atol=1e-5, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("hidden", [3, 62])
@pytest.mark.parametrize("with_grad_c", [True, False])
def test_fused_mix_is_the_weighted_sum_and_its_gradient(hidden, with_grad_c):
    """with_grad_c=False: the last step's c feeds nothing, its gradient is None."""
    h_m, c_m = randn(2, 3, 4, hidden), randn(2, 3, 4, hidden, seed=1)
    probs = randn(2, 3, 4, seed=2).detach().softmax(-1).requires_grad_()
    got = fused_mix(h_m, c_m, probs)
    want = (weighted_sum(h_m, probs), weighted_sum(c_m, probs))
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-5)
    count = 2 if with_grad_c else 1
    upstream = [randn(2, 3, hidden, seed=5 + k).detach() for k in range(count)]
    grads = torch.autograd.grad(got[:count], [h_m, c_m, probs], upstream, allow_unused=True)
    plain = torch.autograd.grad(want[:count], [h_m, c_m, probs], upstream, allow_unused=True)
    for leaf, a, e in zip((h_m, c_m, probs), grads, plain, strict=True):
        torch.testing.assert_close(
            a, torch.zeros_like(leaf) if e is None else e, atol=1e-6, rtol=1e-5
        )


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_run_k_of_a_stack_is_the_run_alone_bit_for_bit(threads):
    """Every element takes one code path whatever its address, so stacking changes no bit."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n, b, r, h = 5, 7, 4, 62
        stack = [randn(n, b, r * 4 * h), randn(n, b, r * 4 * h, seed=1), randn(n, b, h, seed=2)]
        weights = [randn(n, r, 4 * h, seed=3), randn(n, r, 4 * h, seed=4)]

        def run(tensors, w):
            h_m, c_m, logits = fused_lstm_cell(*tensors, r, tuple(w))
            loss = h_m.square().sum() + c_m.sum() + logits.square().sum()
            return [h_m, c_m, logits, *torch.autograd.grad(loss, [*tensors, *w])]

        together = run(stack, weights)
        for k in (0, 3):
            alone = run(
                [t[k : k + 1].detach().requires_grad_() for t in stack],
                [w[k : k + 1].detach().requires_grad_() for w in weights],
            )
            for a, s in zip(alone, together, strict=True):
                assert torch.equal(a[0], s[k])
        again = run(stack, weights)
        assert all(torch.equal(a, s) for a, s in zip(again, together, strict=True))
    finally:
        torch.set_num_threads(previous)


@needs_kernel
@pytest.mark.parametrize("model", ["monolithic", "modular", "modular-op", "gt-modular"])
def test_rnn_models_agree_with_the_pure_pytorch_path(model):
    """A whole forward and backward of each paper model, fused vs eager, to float32 rounding."""
    kwargs = dict(num_runs=2, seeds=[0, 1], state_dim=4)
    x = torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(0))
    x[..., -3:] = torch.nn.functional.one_hot(torch.randint(3, (2, 4, 6)), 3).float()

    def forward_backward():
        net = build_model("rnn", model, 3, 8, 16, "regression", **kwargs)
        out, scores = net(x)
        out.square().sum().backward()
        grads = {name: p.grad for name, p in net.named_parameters()}
        return out, scores, grads

    fused = forward_backward()
    with pure_pytorch():
        eager = forward_backward()
        assert "fused" not in provenance.hardware("cpu", "rnn")
    torch.testing.assert_close(fused[0], eager[0], atol=1e-6, rtol=1e-5)
    if eager[1] is not None:
        torch.testing.assert_close(fused[1], eager[1], atol=1e-6, rtol=1e-5)
    for name, grad in eager[2].items():
        torch.testing.assert_close(fused[2][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_use_fused_takes_float32_on_the_cpu_only():
    assert not use_fused(torch.zeros(2, dtype=torch.float64))
    assert not use_fused(torch.zeros(2, device="meta"))
    assert use_fused(torch.zeros(2), None) == (kernels() is not None)


@pytest.mark.parametrize("value", ["yes", "1", "gpu"])
def test_a_bad_kernel_mode_is_named(value, monkeypatch):
    monkeypatch.setenv("MOD_ARCH_KERNELS", value)
    with pytest.raises(ValueError, match=r"MOD_ARCH_KERNELS=.*auto, on, off"):
        kernel_mode()


@pytest.fixture
def switch(monkeypatch):
    """``switch(mode, build)``: kernels() under MOD_ARCH_KERNELS=mode with _build replaced; the
    cache is cleared again afterwards, so later tests load the real extension."""

    def apply(mode, build):
        monkeypatch.setenv("MOD_ARCH_KERNELS", mode)
        monkeypatch.setattr(kernel_module, "_build", build)
        kernels.cache_clear()

    yield apply
    kernels.cache_clear()


def test_off_never_builds_and_tags_no_row(switch):
    def build():
        raise AssertionError("built under MOD_ARCH_KERNELS=off")

    switch("off", build)
    assert kernels() is None and not use_fused(torch.zeros(2))
    assert "fused" not in provenance.hardware("cpu", "rnn")


def test_a_failed_build_warns_in_auto_and_raises_in_on(switch):
    def build():
        raise OSError("no compiler")

    switch("auto", build)
    with pytest.warns(RuntimeWarning, match="pure-PyTorch path"):
        assert kernels() is None
    switch("on", build)
    with pytest.raises(RuntimeError, match=r"MOD_ARCH_KERNELS=on.*no compiler"):
        kernels()


@needs_kernel
def test_rnn_rows_say_which_cell_computed_them():
    assert provenance.hardware("cpu", "rnn").endswith("threads, fused LSTM)")
    assert "fused" not in provenance.hardware("cpu", "mlp")


@needs_kernel
def test_the_kernel_rejects_wrong_shapes_by_name():
    ext = kernels()
    with pytest.raises(RuntimeError, match="c_prev has shape"):
        ext.lstm_cell_forward(torch.zeros(1, 2, 16), None, torch.zeros(1, 2, 3), None, None, 1)
    with pytest.raises(RuntimeError, match=r"multiple of 4"):
        ext.lstm_cell_forward(torch.zeros(1, 2, 10), None, None, None, None, 1)


def test_each_checkout_builds_its_own_extension(tmp_path, monkeypatch):
    """Two checkouts sharing one build folder would rebuild it in turn; names differ by path."""
    flags = kernel_module._compile_flags()
    here = kernel_module._build_name(flags)
    assert here == kernel_module._build_name(flags)
    copies = []
    for source in kernel_module._SOURCES:
        copy = tmp_path / source.name
        copy.write_bytes(source.read_bytes())
        copies.append(copy)
    monkeypatch.setattr(kernel_module, "_SOURCES", copies)
    assert kernel_module._build_name(flags) != here
    assert kernel_module._build_name([*flags, "-g"]) != kernel_module._build_name(flags)
