"""Stacked layers: N independent copies ("runs") of every parameter, computed at once.

Spec §3.1 (shared building blocks). Every parameter has a leading run axis ``N``
(``num_runs``) and every activation carries it too, so one batched computation trains N
independent runs of one configuration. Runs never mix: run ``k`` of an output depends only
on run ``k`` of the input and of the parameters.

* :class:`StackedLinear` is N copies of ``nn.Linear``: weight ``(N, din, dout)``.
* :class:`GroupLinear` is N copies of the reference's GroupLinear (R modules, each its own
  linear map): weight ``(N, R, din, dout)``.
* :class:`StackedMLP` / :class:`GroupMLP` are Linear -> ReLU -> Linear built from them.
* :class:`StackedLSTMCell` / :class:`GroupLSTMCell` are the recurrent cells of spec §3.4.

All matrix products are ``torch.baddbmm`` / ``torch.bmm`` over a flattened batch (the run
axis, or runs x modules for :class:`GroupLinear`): on CPU this was the fastest of einsum,
bmm + bias and baddbmm for the group linear at the MLP Modular R=8, E=32, D=128 shapes
(N=25, batch 256, forward + backward).

Initialisation follows PyTorch's defaults (spec §3.1): ``U(-b, b)`` with
``b = 1/sqrt(fan_in)`` for linear maps and group linear maps, ``b = 1/sqrt(hidden)`` for
the monolithic LSTM cell. Each run draws its values from its own
``torch.Generator().manual_seed(seed_k)`` in the fixed order of ``module.modules()`` (weight
before bias), see :func:`initialise`. So a run's weights depend only on its seed, never on
the other runs of the stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mod_arch_core.models.aggregation import mixed_group_linear
from mod_arch_core.models.kernels import fused_lstm_cell

__all__ = [
    "GroupLSTMCell",
    "GroupLinear",
    "GroupMLP",
    "StackedLSTMCell",
    "StackedLinear",
    "StackedMLP",
    "StackedModule",
    "affine",
    "block_diagonal",
    "group_linear",
    "group_linear_scores",
    "initialise",
    "lstm_update",
    "make_generators",
    "uniform_per_run_",
]


# Initialisation ------------------------------------------------------------------------------


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per run, seeded with ``seeds[k]``."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def uniform_per_run_(param: Tensor, bound: float, generators: Sequence[torch.Generator]) -> Tensor:
    """Fill ``param[k]`` with ``U(-bound, bound)`` drawn from ``generators[k]`` (in place).

    Values are drawn on the CPU in float32 and copied to ``param``'s device, so a run's
    weights are identical whatever the device. Parameters on the ``meta`` device are left
    alone (they hold no values).

    Parameters
    ----------
    param : Tensor, shape (N, ...)
        A stacked parameter, run axis first.
    bound : float
        Half-width of the uniform distribution.
    generators : sequence of torch.Generator, length N
        One generator per run.
    """
    if param.shape[0] != len(generators):
        raise ValueError(
            f"param has {param.shape[0]} runs but {len(generators)} generators were given"
        )
    if param.is_meta:
        return param
    with torch.no_grad():
        for run, generator in enumerate(generators):
            draw = torch.empty(param.shape[1:], dtype=torch.float32)
            draw.uniform_(-bound, bound, generator=generator)
            param[run].copy_(draw)
    return param


class StackedModule(nn.Module):
    """A layer that owns stacked parameters and initialises them run by run.

    Subclasses implement :meth:`init_per_run_`; :func:`initialise` calls it on every
    ``StackedModule`` of a model in ``model.modules()`` order.
    """

    num_runs: int

    def init_per_run_(self, generators: Sequence[torch.Generator]) -> None:
        """Initialise this layer's own parameters, run ``k`` from ``generators[k]``."""
        raise NotImplementedError


def initialise(module: nn.Module, seeds: Sequence[int]) -> nn.Module:
    """Initialise every stacked layer of ``module``, run ``k`` from ``seeds[k]`` (spec §3.1).

    Layers are visited in ``module.modules()`` order, which is their registration order, so
    run ``k``'s values depend only on ``seeds[k]`` and the architecture: a single-run model
    built with ``seeds=[3]`` equals run 1 of one built with ``seeds=[7, 3, 9]`` bit for bit.
    """
    generators = make_generators(seeds)
    for layer in module.modules():
        if isinstance(layer, StackedModule):
            layer.init_per_run_(generators)
    return module


def _check_last_dim(x: Tensor, num_runs: int, din: int, layer: str) -> None:
    if x.ndim < 2 or x.shape[0] != num_runs or x.shape[-1] != din:
        raise ValueError(
            f"{layer} expects input of shape (num_runs={num_runs}, ..., {din}), "
            f"got {tuple(x.shape)}"
        )


# Linear maps ---------------------------------------------------------------------------------


def affine(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x[k] @ weight[k] + bias[k]`` for every k of the leading batch axis.

    Parameters
    ----------
    x : Tensor, shape (K, M, din)
    weight : Tensor, shape (K, din, dout)
    bias : Tensor of shape (K, dout), optional

    Returns
    -------
    Tensor, shape (K, M, dout)

    A narrow input with a wide output (``2 din <= dout``, e.g. the attention's q, k, v) takes the
    bias as one more input column of ones, ``[x, 1] @ [weight; bias]``: ``torch.baddbmm`` would
    first write the bias into the whole (M, dout) output and its backward pass sum the output's
    gradient again for the bias, two extra passes over the largest tensor of the product.
    """
    if bias is None:
        return torch.bmm(x, weight)
    if 2 * weight.shape[-2] <= weight.shape[-1]:
        ones = x.new_ones(*x.shape[:-1], 1)
        return torch.bmm(torch.cat([x, ones], dim=-1), torch.cat([weight, bias.unsqueeze(-2)], -2))
    return torch.baddbmm(bias.unsqueeze(-2), x, weight)


class StackedLinear(StackedModule):
    """N independent ``nn.Linear(din, dout)`` layers, one per run (spec §3.1).

    ``y[k] = x[k] @ weight[k] + bias[k]``.

    Parameters
    ----------
    num_runs : int
        N, the number of independent runs.
    in_features, out_features : int
        din and dout.
    bias : bool
        Whether the layer has a bias.
    init_bound : float, optional
        Half-width of the uniform initialisation of weight and bias; PyTorch's
        ``nn.Linear`` default ``1/sqrt(in_features)`` when omitted.

    Shapes
    ------
    weight : (N, din, dout); bias : (N, dout); input (N, ..., din) -> output (N, ..., dout).
    """

    def __init__(
        self,
        num_runs: int,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        init_bound: float | None = None,
    ) -> None:
        super().__init__()
        self.num_runs = num_runs
        self.in_features = in_features
        self.out_features = out_features
        self.init_bound = 1.0 / math.sqrt(in_features) if init_bound is None else init_bound
        self.weight = nn.Parameter(torch.empty(num_runs, in_features, out_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_runs, out_features))
        else:
            self.register_parameter("bias", None)

    def init_per_run_(self, generators: Sequence[torch.Generator]) -> None:
        uniform_per_run_(self.weight, self.init_bound, generators)
        if self.bias is not None:
            uniform_per_run_(self.bias, self.init_bound, generators)

    def forward(self, x: Tensor) -> Tensor:
        """Apply run k's map to run k's input: (N, ..., din) -> (N, ..., dout)."""
        _check_last_dim(x, self.num_runs, self.in_features, "StackedLinear")
        lead = x.shape[1:-1]
        flat = x.reshape(self.num_runs, -1, self.in_features)
        out = affine(flat, self.weight, self.bias)
        return out.view(self.num_runs, *lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"num_runs={self.num_runs}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


def group_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Module r of run k maps ``x[k, ..., r]``: ``x @ weight[k, r] + bias[k, r]`` (spec §3.1).

    Runs x modules form one flat batch of ``(M, din) @ (din, dout)`` products
    (``torch.baddbmm``).

    Parameters
    ----------
    x : Tensor, shape (N, ..., R, din)
    weight : Tensor, shape (N, R, din, dout)
    bias : Tensor, shape (N, R, dout), optional

    Returns
    -------
    Tensor, shape (N, ..., R, dout)
    """
    n, r, din, dout = weight.shape
    if x.ndim < 3 or x.shape[0] != n or x.shape[-2:] != (r, din):
        raise ValueError(
            f"GroupLinear expects input of shape (num_runs={n}, ..., num_modules={r}, {din}), "
            f"got {tuple(x.shape)}"
        )
    lead = x.shape[1:-2]
    flat = x.reshape(n, -1, r, din).transpose(1, 2).reshape(n * r, -1, din)
    if bias is None:
        out = torch.bmm(flat, weight.reshape(n * r, din, dout))
    else:
        out = torch.baddbmm(bias.reshape(n * r, 1, dout), flat, weight.reshape(n * r, din, dout))
    return out.view(n, r, -1, dout).transpose(1, 2).reshape(n, *lead, r, dout)


def block_diagonal(weight: Tensor) -> Tensor:
    """R column vectors as one block-diagonal matrix: (N, R, din) -> (N, R * din, R).

    ``x.view(N, M, R * din) @ block_diagonal(w)`` gives ``x[..., r, :] @ w[:, r]`` for every
    module r in one matrix product (used for the modules' one-channel score logits).
    """
    n, r, din = weight.shape
    eye = torch.eye(r, dtype=weight.dtype, device=weight.device)
    return (weight.unsqueeze(-1) * eye[:, None, :]).reshape(n, r * din, r)


def group_linear_scores(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Module r's one-channel map of ``x[..., r, :]``, all modules at once (spec §3.2, §3.3).

    Parameters
    ----------
    x : Tensor, shape (N, ..., R, din)
    weight : Tensor, shape (N, R, din)
    bias : Tensor of shape (N, R), optional

    Returns
    -------
    Tensor, shape (N, ..., R): ``x[..., r, :] @ weight[:, r] + bias[:, r]``.
    """
    n, r, din = weight.shape
    flat = x.reshape(n, -1, r * din)
    if bias is None:
        out = torch.bmm(flat, block_diagonal(weight))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, block_diagonal(weight))
    return out.view(x.shape[:-1])


class GroupLinear(StackedModule):
    """N stacks of R independent linear maps, one per module (spec §3.1 GroupLinear).

    ``out[k, ..., r] = x[k, ..., r] @ weight[k, r] + bias[k, r]``; weight and bias are
    initialised ``U(-1/sqrt(din), 1/sqrt(din))``.

    Parameters
    ----------
    num_runs : int
        N, the number of independent runs.
    num_modules : int
        R, the number of modules.
    in_features, out_features : int
        din and dout of every module.
    bias : bool
        Whether the modules have a bias. The reference allocates (and counts) an unused bias
        tensor even without one (spec §9.6); this layer allocates nothing and records the
        count it would have had in :attr:`unused_reference_bias_numel` so
        :func:`~mod_arch_core.models.registry.count_parameters` can reproduce the
        reference's logged number.
    shared_input : bool
        If True every module reads the same input ``(N, ..., din)`` (the reference tiles it R
        times); computed as one product with the modules' weights side by side.

    Shapes
    ------
    weight : (N, R, din, dout); bias : (N, R, dout).
    input (N, ..., R, din), or (N, ..., din) when ``shared_input`` -> output (N, ..., R, dout).
    """

    def __init__(
        self,
        num_runs: int,
        num_modules: int,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        shared_input: bool = False,
    ) -> None:
        super().__init__()
        self.num_runs = num_runs
        self.num_modules = num_modules
        self.in_features = in_features
        self.out_features = out_features
        self.shared_input = shared_input
        self.init_bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(num_runs, num_modules, in_features, out_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_runs, num_modules, out_features))
        else:
            self.register_parameter("bias", None)
        #: Per-run size of the bias the reference allocates but never uses (spec §9.6).
        self.unused_reference_bias_numel = 0 if bias else num_modules * out_features

    def init_per_run_(self, generators: Sequence[torch.Generator]) -> None:
        uniform_per_run_(self.weight, self.init_bound, generators)
        if self.bias is not None:
            uniform_per_run_(self.bias, self.init_bound, generators)

    def forward(self, x: Tensor) -> Tensor:
        """(N, ..., R, din) or, with ``shared_input``, (N, ..., din) -> (N, ..., R, dout)."""
        n, r, din, dout = self.num_runs, self.num_modules, self.in_features, self.out_features
        _check_last_dim(x, n, din, "GroupLinear")
        if self.shared_input:
            # Modules side by side: one (N, M, din) @ (N, din, R*dout) product.
            lead = x.shape[1:-1]
            flat = x.reshape(n, -1, din)
            weight = self.weight.permute(0, 2, 1, 3).reshape(n, din, r * dout)
            bias = None if self.bias is None else self.bias.reshape(n, r * dout)
            return affine(flat, weight, bias).view(n, *lead, r, dout)
        return group_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"num_runs={self.num_runs}, num_modules={self.num_modules}, "
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, shared_input={self.shared_input}"
        )


# Two-layer perceptrons -----------------------------------------------------------------------


class StackedMLP(nn.Module):
    """N independent MLPs Linear(din, hidden) -> ReLU -> Linear(hidden, dout) (spec §3.1).

    Input (N, ..., din) -> output (N, ..., dout).
    """

    def __init__(
        self, num_runs: int, in_features: int, hidden: int, out_features: int, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.first = StackedLinear(num_runs, in_features, hidden, bias=bias)
        self.second = StackedLinear(num_runs, hidden, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(N, ..., din) -> (N, ..., dout)."""
        return self.second(torch.relu(self.first(x)))


class GroupMLP(nn.Module):
    """R independent MLPs per run: GroupLinear -> ReLU -> GroupLinear (spec §3.2, §3.3).

    Input (N, ..., R, din), or (N, ..., din) with ``shared_input`` -> output (N, ..., R, dout).
    """

    def __init__(
        self,
        num_runs: int,
        num_modules: int,
        in_features: int,
        hidden: int,
        out_features: int,
        *,
        shared_input: bool = False,
    ) -> None:
        super().__init__()
        self.first = GroupLinear(
            num_runs, num_modules, in_features, hidden, shared_input=shared_input
        )
        self.second = GroupLinear(num_runs, num_modules, hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """(N, ..., [R,] din) -> (N, ..., R, dout)."""
        return self.second(torch.relu(self.first(x)))

    # The routed use of the modules (spec §3.2, §3.3): out = sum_m p_m module_m(x), where the
    # last output channel of a self-scored module is its score logit, not a value.

    def hidden(self, x: Tensor) -> Tensor:
        """The modules' hidden activations ``relu(first(x))``: (N, ..., R, hidden)."""
        return torch.relu(self.first(x))

    def score_channel(self, hidden: Tensor) -> Tensor:
        """The last output channel of every module (its score logit): (N, ..., R)."""
        second = self.second
        bias = None if second.bias is None else second.bias[..., -1]
        return group_linear_scores(hidden, second.weight[..., -1], bias)

    def mix(self, hidden: Tensor, probs: Tensor, *, score_channel: bool = False) -> Tensor:
        """``sum_m probs_m * second_m(hidden_m)``: (N, ..., R, hidden), (N, ..., R) -> (N, ..., dout).

        With ``score_channel`` the last output channel (the score logit) is left out. Computed
        by :func:`~mod_arch_core.models.aggregation.mixed_group_linear`, without the modules'
        (N, ..., R, dout) outputs.
        """
        weight, bias = self.second.weight, self.second.bias
        if score_channel:
            weight = weight[..., :-1]
            bias = None if bias is None else bias[..., :-1]
        return mixed_group_linear(hidden, weight, bias, probs)


# Recurrent cells -----------------------------------------------------------------------------


def lstm_update(preact: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM state update from gate pre-activations (spec §3.4 cell update).

    ``c = f * c_prev + i * g`` and ``h = o * tanh(c)``, with ``i, f, o`` sigmoids and ``g``
    a tanh of the four chunks of ``preact`` in PyTorch's ``nn.LSTMCell`` order (i, f, g, o).

    Computed by one autograd node (:class:`_LSTMGates`) that keeps only the gate values for the
    backward pass instead of every intermediate: at N = 25 runs the intermediates of the
    unrolled recurrence did not fit in memory caches and dominated the training step.

    Parameters
    ----------
    preact : Tensor, shape (..., 4h)
    c_prev : Tensor, broadcastable to (..., h)

    Returns
    -------
    h, c : Tensor, shape (..., h)
    """
    return _LSTMGates.apply(preact, c_prev)


class _LSTMGates(torch.autograd.Function):
    """The LSTM state update as one autograd node; see :func:`lstm_update`.

    Saved for backward: the sigmoids of all four chunks (the one of ``g`` is unused), ``tanh(g)``,
    ``tanh(c)`` and ``c_prev``. The backward pass uses the fused ``sigmoid_backward`` /
    ``tanh_backward`` kernels and writes the four gate gradients into one buffer.
    """

    @staticmethod
    def forward(ctx, preact: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        g = preact.chunk(4, dim=-1)[2]
        sig = torch.sigmoid(preact)
        si, sf, _, so = sig.chunk(4, dim=-1)
        tg = torch.tanh(g)
        c = torch.addcmul(sf * c_prev, si, tg)
        tc = torch.tanh(c)
        h = so * tc
        ctx.save_for_backward(sig, tg, tc, c_prev)
        return h, c

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_c: Tensor) -> tuple[Tensor, Tensor | None]:  # type: ignore[override]
        sig, tg, tc, c_prev = ctx.saved_tensors
        si, sf, _, so = sig.chunk(4, dim=-1)
        aten = torch.ops.aten
        grad_cell = aten.tanh_backward(grad_h * so, tc)  # through h = o * tanh(c)
        if grad_c is not None:
            grad_cell = grad_cell.add_(grad_c)
        grad_pre = torch.empty(sig.shape, dtype=sig.dtype, device=sig.device)
        gi, gf, gg, go = grad_pre.chunk(4, dim=-1)
        aten.sigmoid_backward.grad_input(grad_cell * tg, si, grad_input=gi)
        aten.sigmoid_backward.grad_input(grad_cell * c_prev, sf, grad_input=gf)
        aten.tanh_backward.grad_input(grad_cell * si, tg, grad_input=gg)
        aten.sigmoid_backward.grad_input(grad_h * tc, so, grad_input=go)
        grad_prev = None
        if ctx.needs_input_grad[1]:
            grad_prev = (grad_cell * sf).sum_to_size(c_prev.shape)
        return grad_pre, grad_prev


class StackedLSTMCell(nn.Module):
    """N independent ``nn.LSTMCell(input_size, hidden_size)`` cells (spec §3.4 Monolithic).

    Weights and both biases are ``U(-1/sqrt(hidden), 1/sqrt(hidden))`` as in PyTorch. The
    input projection of a whole sequence is one product (:meth:`project_inputs`); the
    recurrence is :meth:`step`.
    """

    def __init__(self, num_runs: int, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.input_map = StackedLinear(num_runs, input_size, 4 * hidden_size, init_bound=bound)
        self.hidden_map = StackedLinear(num_runs, hidden_size, 4 * hidden_size, init_bound=bound)

    def project_inputs(self, x: Tensor) -> Tensor:
        """Input part of the gate pre-activations: (N, ..., input_size) -> (N, ..., 4H)."""
        return self.input_map(x)

    def step(self, projected: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step: projected (N, B, 4H), h and c (N, B, H) -> new (h, c), each (N, B, H)."""
        return lstm_update(projected + self.hidden_map(h), c)

    def step_from_input(
        self, x: Tensor, h: Tensor | None, c: Tensor | None, *, fused: bool = False
    ) -> tuple[Tensor, Tensor]:
        """One step from the raw input: x (N, B, input_size), h and c (N, B, H) or None (zeros).

        Same numbers as :meth:`step` on :meth:`project_inputs`, but the input projection of
        this step only: a whole sequence of gate pre-activations (N, B, L, 4H) would not fit
        in cache at N = 25 runs. ``h = c = None`` is the zero initial state, whose products
        are skipped. With ``fused`` the state update is the C++ kernel
        (:func:`~mod_arch_core.models.kernels.fused_lstm_cell`, one module).
        """
        first, second = self.input_map, self.hidden_map
        projected = affine(x, first.weight, first.bias + second.bias)  # both biases at once
        preact = projected if h is None else torch.baddbmm(projected, h, second.weight)
        if fused:
            h_new, c_new, _ = fused_lstm_cell(preact, None, c, 1)
            return h_new.squeeze(-2), c_new.squeeze(-2)
        return lstm_update(preact, projected.new_zeros(()) if c is None else c)


class GroupLSTMCell(nn.Module):
    """R LSTM modules sharing the previous state, N runs at once (spec §3.4 GroupLSTMCell).

    ``i2h = Linear(E, 4Rh)`` and ``h2h = Linear(h, 4Rh)``, both without bias; module ``m``
    takes slice ``m`` (width 4h) of each. Every module updates the *shared* state
    ``(h_{t-1}, c_{t-1})`` into its own ``(h_m, c_m)``; mixing them is the caller's job.

    With ``self_scored`` each module also scores itself (the paper's Modular):
    ``logit_m = GroupLinear(R, 8h, 1)(ReLU([i2h_m(x_t), h2h_m(h_{t-1})]))``, built without
    bias as in the reference (whose unused bias tensor still counts, spec §9.6). The product
    is split into its ``i2h`` half, computed for the whole sequence in
    :meth:`project_inputs`, and its ``h2h`` half, computed in :meth:`step`; the sum is the
    same number.
    """

    def __init__(
        self,
        num_runs: int,
        num_modules: int,
        input_size: int,
        hidden_size: int,
        *,
        self_scored: bool = False,
    ) -> None:
        super().__init__()
        self.num_modules = num_modules
        self.hidden_size = hidden_size
        width = 4 * num_modules * hidden_size
        self.i2h = StackedLinear(num_runs, input_size, width, bias=False)
        self.h2h = StackedLinear(num_runs, hidden_size, width, bias=False)
        self.scorer = (
            GroupLinear(num_runs, num_modules, 8 * hidden_size, 1, bias=False)
            if self_scored
            else None
        )

    def _per_module(self, x: Tensor) -> Tensor:
        return x.view(*x.shape[:-1], self.num_modules, 4 * self.hidden_size)

    def _score_half(self, preact: Tensor, half: int) -> Tensor:
        """One half of the scorer product: (N, ..., R, 4h) -> (N, ..., R)."""
        assert self.scorer is not None
        width = 4 * self.hidden_size
        weight = self.scorer.weight[:, :, half * width : (half + 1) * width]
        return group_linear(torch.relu(preact), weight).squeeze(-1)

    def project_inputs(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Input part of every step, all steps at once.

        Parameters
        ----------
        x : Tensor, shape (N, B, L, E)

        Returns
        -------
        projected : Tensor, shape (N, B, L, R, 4h)
            ``i2h`` pre-activations per module.
        input_logits : Tensor of shape (N, B, L, R), or None without ``self_scored``
            The ``i2h`` half of the modules' score logits.
        """
        projected = self._per_module(self.i2h(x))
        input_logits = None if self.scorer is None else self._score_half(projected, 0)
        return projected, input_logits

    def score_maps(self, *, fused: bool = False) -> tuple[Tensor, Tensor]:
        """The self-scorer's two halves in the form :meth:`step_from_input` takes.

        Without ``fused``, two block-diagonal maps, each (N, R * 4h, R):
        ``relu(i2h(x)) @ maps[0] + relu(h2h(h)) @ maps[1]`` gives every module's score logit
        (the same sums as ``scorer(relu([i2h_m(x), h2h_m(h)]))``) in two matrix products over
        the modules side by side, without gathering the modules' halves into one tensor.
        With ``fused``, the halves themselves, each (N, R, 4h), for the C++ kernel.
        """
        assert self.scorer is not None
        n, r, width = self.scorer.num_runs, self.num_modules, 4 * self.hidden_size
        halves = self.scorer.weight.view(n, r, 2, width)  # (N, R, 2, 4h)
        if fused:
            return halves[:, :, 0].contiguous(), halves[:, :, 1].contiguous()
        return block_diagonal(halves[:, :, 0]), block_diagonal(halves[:, :, 1])

    def step_from_input(
        self,
        x: Tensor,
        h: Tensor | None,
        c: Tensor | None,
        score_maps: tuple[Tensor, Tensor] | None = None,
        *,
        fused: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Every module's update of the shared state at one step, from the raw input.

        Same numbers as :meth:`step` on :meth:`project_inputs`, but the input projection of
        this step only: a whole sequence of pre-activations (N, B, L, R, 4h) would not fit in
        cache at N = 25 runs.

        Parameters
        ----------
        x : Tensor, shape (N, B, E)
        h, c : Tensor of shape (N, B, h), or None for the zero initial state (whose products
            are skipped).
        score_maps : the result of :meth:`score_maps` (with the same ``fused``), required
            with ``self_scored``.
        fused : bool
            Everything after the two matrix products in one C++ node
            (:func:`~mod_arch_core.models.kernels.fused_lstm_cell`): the same function.

        Returns
        -------
        h_modules, c_modules : Tensor, shape (N, B, R, h)
        logits : Tensor of shape (N, B, R), or None without ``self_scored``
        """
        n, b = x.shape[:2]
        projected = torch.bmm(x, self.i2h.weight)  # (N, B, 4Rh)
        if fused:
            if self.scorer is None:
                preact = projected if h is None else torch.baddbmm(projected, h, self.h2h.weight)
                return fused_lstm_cell(preact, None, c, self.num_modules)
            assert score_maps is not None
            recurrent = None if h is None else torch.bmm(h, self.h2h.weight)
            return fused_lstm_cell(projected, recurrent, c, self.num_modules, score_maps)
        logits = None
        if self.scorer is not None:
            assert score_maps is not None
            logits = torch.bmm(torch.relu(projected), score_maps[0])
        if h is None:
            preact = projected
            c_prev = projected.new_zeros(())
        elif self.scorer is None:
            preact = torch.baddbmm(projected, h, self.h2h.weight)
        else:
            recurrent = torch.bmm(h, self.h2h.weight)
            logits = torch.baddbmm(logits, torch.relu(recurrent), score_maps[1])
            preact = projected + recurrent
        if h is not None:
            c_prev = c.unsqueeze(-2)
        preact = preact.view(n, b, self.num_modules, 4 * self.hidden_size)
        h_modules, c_modules = lstm_update(preact, c_prev)
        return h_modules, c_modules, logits

    def step(
        self, projected: Tensor, input_logits: Tensor | None, h: Tensor, c: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Every module's update of the shared state at one step.

        Parameters
        ----------
        projected : Tensor, shape (N, B, R, 4h)
            This step's slice of :meth:`project_inputs`.
        input_logits : Tensor of shape (N, B, R), or None
            This step's slice of the ``input_logits`` of :meth:`project_inputs`.
        h, c : Tensor, shape (N, B, h)
            The shared previous state.

        Returns
        -------
        h_modules, c_modules : Tensor, shape (N, B, R, h)
        logits : Tensor of shape (N, B, R), or None without ``self_scored``
        """
        recurrent = self._per_module(self.h2h(h))
        h_modules, c_modules = lstm_update(projected + recurrent, c.unsqueeze(-2))
        logits = None
        if self.scorer is not None:
            assert input_logits is not None
            logits = input_logits + self._score_half(recurrent, 1)
        return h_modules, c_modules, logits
