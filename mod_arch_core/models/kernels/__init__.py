"""Fused CPU kernels for the recurrent cell, built from C++ source on first use.

Eager PyTorch makes one pass over memory per elementwise op. In the RNN training step those
passes (the sum of the input and recurrent pre-activations, four gate nonlinearities, the cell
update, the Modular scores' ReLUs and products, and all their gradients) were three quarters
of the time (benchmarks/README.md, "Where the RNN step goes"). :func:`fused_lstm_cell` does
all of them in one pass forward and one backward (``lstm_cell.cpp``), and :func:`fused_mix`
mixes the modules' new states with the routing's probabilities; the matrix products stay
``torch.bmm``.

The extension is compiled with ``torch.utils.cpp_extension.load`` (gcc, about 30 s, once per
machine and checkout; cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``). Whether it is used is set by the environment
variable ``MOD_ARCH_KERNELS``:

* ``auto`` (default): build it if a compiler is there; otherwise warn once and use the
  pure-PyTorch path of :mod:`~mod_arch_core.models.layers`, which computes the same function;
* ``on``: build it or raise;
* ``off``: never build it (pure PyTorch).

The kernel is used only for float32 tensors on the CPU; CUDA and float64 (``gradcheck``) take
the PyTorch path. Numbers agree with that path to float32 rounding (the kernel's ``exp`` is
glibc's vector ``expf`` and its ``tanh`` is ``1 - 2 / (1 + exp(2x))``, not ATen's), and are bitwise reproducible on one machine: run k of a
stack equals the same run alone.

``python -m mod_arch_core.models.kernels`` builds it and says where (``make venv`` runs it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

__all__ = [
    "KERNEL_MODES",
    "fused_lstm_cell",
    "fused_mix",
    "kernel_mode",
    "kernels",
    "pure_pytorch",
    "use_fused",
]

KERNEL_MODES = ("auto", "on", "off")
_SOURCES = [Path(__file__).with_name(f) for f in ("bindings.cpp", "lstm_cell.cpp")]


def kernel_mode() -> str:
    """The validated value of ``MOD_ARCH_KERNELS`` (default ``auto``)."""
    mode = os.environ.get("MOD_ARCH_KERNELS", "auto").strip().lower() or "auto"
    if mode not in KERNEL_MODES:
        raise ValueError(
            f"MOD_ARCH_KERNELS={os.environ['MOD_ARCH_KERNELS']!r} is not one of "
            f"{', '.join(KERNEL_MODES)}"
        )
    return mode


def _compile_flags() -> list[str]:
    # No peeling for alignment: a row's elements then take the same vector or scalar path
    # whatever its address, so a run computes the same bits alone and in a stack.
    flags = [
        "-O3",
        "-fopenmp",
        "-fno-math-errno",
        "-fno-trapping-math",
        "--param=vect-max-peeling-for-alignment=0",
    ]
    if platform.machine() in ("x86_64", "AMD64") and torch.backends.cpu.get_cpu_capability() in (
        "AVX2",
        "AVX512",
    ):
        # Every machine of this project has AVX2 and FMA; AVX-512 is not assumed, so one
        # build serves both kinds of CPU.
        flags += ["-mavx2", "-mfma", "-DMOD_ARCH_VECTOR_MATH"]
    return flags


def _find_ninja() -> None:
    """Put the ``ninja`` of this environment on PATH (a venv's bin is there only when active)."""
    if shutil.which("ninja") is not None:
        return
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # the PyPI wheel, a dependency of this package

        candidates.insert(0, Path(ninja.BIN_DIR))
    except ImportError:
        pass
    for folder in candidates:
        if (folder / "ninja").exists():
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def _build_name(flags: list[str]) -> str:
    """The extension's name, one per checkout, source text, flags and torch version.

    torch keeps one build folder per name; two checkouts sharing a name would rebuild it in turn
    whenever each of them is used (the sources' paths are part of the build commands).
    """
    digest = hashlib.sha256(f"{torch.__version__} {' '.join(flags)}".encode())
    for source in _SOURCES:
        digest.update(str(source).encode())
        digest.update(source.read_bytes())
    return f"mod_arch_kernels_{digest.hexdigest()[:12]}"


@cache
def _build() -> ModuleType:
    from torch.utils.cpp_extension import load

    _find_ninja()
    flags = _compile_flags()
    return load(
        name=_build_name(flags),
        sources=[str(source) for source in _SOURCES],
        extra_cflags=flags,
        # ATen's parallel_for is OpenMP inlined into this library; libgomp.so.1 is torch's own.
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


@cache
def kernels() -> ModuleType | None:
    """The compiled extension, or None when ``MOD_ARCH_KERNELS`` is ``off`` or the build failed
    in ``auto`` mode (with one warning saying why)."""
    mode = kernel_mode()
    if mode == "off":
        return None
    try:
        return _build()
    except Exception as error:  # a missing compiler, headers, or ninja
        if mode == "on":
            raise RuntimeError(
                f"MOD_ARCH_KERNELS=on but the fused kernels could not be built: {error}"
            ) from error
        warnings.warn(
            f"the fused LSTM kernel could not be built ({type(error).__name__}: {error}); "
            "using the pure-PyTorch path (set MOD_ARCH_KERNELS=off to silence this)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


_disabled = threading.local()


@contextlib.contextmanager
def pure_pytorch() -> Iterator[None]:
    """Within this block the models take the pure-PyTorch path (e.g. to time or compare the two).

    >>> with pure_pytorch():
    ...     use_fused(torch.zeros(1))
    False
    """
    previous = getattr(_disabled, "on", False)
    _disabled.on = True
    try:
        yield
    finally:
        _disabled.on = previous


def use_fused(*tensors: Tensor | None) -> bool:
    """Whether :func:`fused_lstm_cell` can take these tensors: float32 on the CPU, kernels built,
    not inside :func:`pure_pytorch`."""
    if getattr(_disabled, "on", False):
        return False
    present = [t for t in tensors if t is not None]
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in present):
        return False
    return kernels() is not None


class _FusedLSTMCell(torch.autograd.Function):
    """One autograd node for the whole cell update; saves only its inputs."""

    @staticmethod
    def forward(ctx, proj, recur, c_prev, w0, w1, num_modules):  # type: ignore[override]
        ext = kernels()
        assert ext is not None
        h, c, logits = ext.lstm_cell_forward(proj, recur, c_prev, w0, w1, num_modules)
        ctx.num_modules = num_modules
        ctx.save_for_backward(proj, recur, c_prev, w0, w1)
        if w0 is None:
            ctx.mark_non_differentiable(logits)
        return h, c, logits

    @staticmethod
    def backward(ctx, grad_h, grad_c, grad_logits):  # type: ignore[override]
        ext = kernels()
        assert ext is not None
        proj, recur, c_prev, w0, w1 = ctx.saved_tensors
        grads = ext.lstm_cell_backward(
            _contiguous(grad_h),
            _contiguous(grad_c),
            _contiguous(grad_logits) if w0 is not None else None,
            proj,
            recur,
            c_prev,
            w0,
            w1,
            ctx.num_modules,
        )
        needs = ctx.needs_input_grad[:5]  # the last input, num_modules, has none
        return (*(g if need else None for g, need in zip(grads, needs, strict=True)), None)


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def fused_lstm_cell(
    proj: Tensor,
    recur: Tensor | None,
    c_prev: Tensor | None,
    num_modules: int,
    score_weights: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """R LSTM modules updating one shared state, and their self-scores, as one node (spec §3.4).

    Parameters
    ----------
    proj : Tensor, shape (N, B, R * 4h)
        The input half of the gate pre-activations (with any biases), modules side by side in
        ``nn.LSTMCell``'s gate order (i, f, g, o).
    recur : Tensor of shape (N, B, R * 4h), or None
        The recurrent half; None for the zero initial state.
    c_prev : Tensor of shape (N, B, h), or None for zeros
        The shared previous cell state.
    num_modules : int
        R.
    score_weights : (w0, w1), each (N, R, 4h), optional
        The self-scorer's input and recurrent halves (the paper's Modular): module m's logit is
        ``relu(proj_m) @ w0_m + relu(recur_m) @ w1_m``.

    Returns
    -------
    h_modules, c_modules : Tensor, shape (N, B, R, h)
    logits : Tensor of shape (N, B, R), or None without ``score_weights``
    """
    w0, w1 = score_weights if score_weights is not None else (None, None)
    h, c, logits = _FusedLSTMCell.apply(
        proj.contiguous(),
        _contiguous(recur),
        _contiguous(c_prev),
        _contiguous(w0),
        _contiguous(w1),
        num_modules,
    )
    return h, c, (logits if score_weights is not None else None)


class _FusedMix(torch.autograd.Function):
    """``h = sum_m p_m h_m`` and ``c = sum_m p_m c_m`` as one node; saves its inputs."""

    @staticmethod
    def forward(ctx, h_modules, c_modules, probs):  # type: ignore[override]
        ext = kernels()
        assert ext is not None
        ctx.save_for_backward(h_modules, c_modules, probs)
        h, c = ext.mix_forward(h_modules, c_modules, probs)
        return h, c

    @staticmethod
    def backward(ctx, grad_h, grad_c):  # type: ignore[override]
        ext = kernels()
        assert ext is not None
        h_modules, c_modules, probs = ctx.saved_tensors
        grad_hm, grad_cm, grad_p = ext.mix_backward(
            _contiguous(grad_h), _contiguous(grad_c), h_modules, c_modules, probs
        )
        return grad_hm, grad_cm, grad_p


def fused_mix(h_modules: Tensor, c_modules: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
    """The routed state of the RNN setting, ``sum_m p_m h_m`` and ``sum_m p_m c_m`` (spec §3.4).

    Parameters
    ----------
    h_modules, c_modules : Tensor, shape (N, B, R, h)
        Every module's new state (:func:`fused_lstm_cell`).
    probs : Tensor, shape (N, B, R)
        The routing's probabilities.

    Returns
    -------
    h, c : Tensor, shape (N, B, h)
        The same numbers as :func:`~mod_arch_core.models.aggregation.weighted_sum` of each, to
        float32 rounding.
    """
    return _FusedMix.apply(h_modules.contiguous(), c_modules.contiguous(), probs.contiguous())
