"""Stacked multi-run training: one configuration, many seeds, one batched computation.

The paper trains every (model, rules, capacity, data seed, model seed) as its own process
(spec §8: about 8e9 optimizer steps). Here the unit of work is a *configuration* (setting, task,
model, num_rules, capacity) trained for N = len(data_seeds) x len(seeds) runs at once: every
parameter carries a leading run axis (see :mod:`mod_arch_core.models.layers`), each run has its own
task instance (data seed) and its own data stream (model seed), and one Adam optimises the stack.
Runs stay independent: each run's loss is its own mean, the total is their sum, so run k's
gradient is exactly d loss_k / d theta_k; Adam is elementwise; gradient clipping is per run.

Protocol (spec §4), the defaults of :class:`TrainConfig`: Adam lr 1e-4, batch 256, L1 loss
(regression) / BCE-with-logits (classification), gradient-norm clipping 1.0 for the RNN only,
evaluation every ``eval_every`` steps on fresh batches, ``last`` and ``best`` checkpoints.

Deliberate differences from the reference loop (documented in the book's errata):

* evaluation batches come from a stream of their own (seeded from the model seed), so changing
  ``eval_every`` never changes the training data; the reference draws them from the training stream;
* the ``best`` checkpoint holds exactly the weights that were validated (the reference saves them one
  update later, spec §9.5), and the weights after the final update are evaluated too.

An optional learning-rate decay (``TrainConfig.lr_decay``, :func:`scheduled_lr`) is a deviation
from the paper, whose protocol is a constant Adam lr of 1e-4 with no scheduler (spec §4). The CPU
profiles train at a constant lr of 1e-3 for a few thousand steps, where the ``last`` checkpoint
is a noisy point of the trajectory (one shipped MLP run: best 0.0167, last 0.0657; issue 13);
decaying the lr over the final part of training makes the last checkpoint a stable point. It is
off by default, and then nothing about training changes (the same numbers, the same hashes).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mod_arch_core.data import make_task, sample_stack
from mod_arch_core.models import MODEL_NAMES, build_model, check_model_options, count_parameters
from mod_arch_core.validation import (
    MAX_SIZE,
    PAPER_MODELS,
    canonical_name,
    check_device_name,
    check_int,
    check_lr_decay,
    check_positive_float,
    check_seed,
    check_setting,
    check_task,
)

#: Optimizer steps per setting in the paper's protocol (spec §4).
PAPER_ITERATIONS: dict[str, int] = {"mlp": 100_000, "mha": 500_000, "rnn": 500_000}

#: Offsets that separate a model seed's independent random streams (training data, evaluation
#: data, validation data) so that none of them depends on how often another one is used.
STREAM_TRAIN, STREAM_EVAL, STREAM_VAL = 0, 1, 2


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``: ``"auto"`` picks CUDA when available, else CPU.

    Allowed: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (``validation.check_device_name``);
    ``meta`` and other torch device types are refused, as is CUDA when it is not available.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        device = str(device)
    resolved = torch.device(check_device_name(device))
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {device!r}: there are {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return resolved


def stream_generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` for one of a model seed's independent streams.

    The generator depends only on ``(seed, stream)``, never on the other runs of a stack, which is
    what makes a stacked run equal to the same run trained alone.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))
    return generator


def scheduled_lr(lr: float, step: int, num_steps: int, lr_decay: dict[str, float] | None) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``num_steps``.

    ``lr_decay=None`` is the paper's constant lr (spec §4): ``lr`` at every step. With
    ``{start: S, factor: F}``, step t has training fraction ``t / (num_steps - 1)`` (the last step
    is fraction 1); up to fraction S the lr is exactly ``lr``, then it follows a half cosine from
    ``lr`` down to exactly ``F * lr`` at the last step (a constant-then-cooldown schedule, with a
    cosine cooldown as in SGDR, Loshchilov and Hutter 2017).

    Why cosine rather than linear: its slope is zero where the decay begins, so the curve has no
    kink at S, and zero again at the end, so the final steps all run close to ``F * lr`` and the
    last checkpoint averages several small updates instead of ending on one larger step, which is
    what makes it a stable point. Up to S the run is bitwise the constant-lr run, so the curve up to
    S is the constant-lr curve; after S it depends on ``num_steps`` (a longer run is no longer a
    continuation of a shorter one, which the calibration method of :mod:`mod_arch_core.calibration`
    assumes: calibrate budgets at a constant lr).
    """
    if lr_decay is None:
        return lr
    fraction = step / (num_steps - 1) if num_steps > 1 else 1.0
    start, factor = lr_decay["start"], lr_decay["factor"]
    if fraction <= start:
        return lr
    progress = min(1.0, (fraction - start) / (1.0 - start))
    return lr * (factor + (1.0 - factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def describe_lr(lr: float, lr_decay: dict[str, float] | None) -> str:
    """The learning-rate schedule of :func:`scheduled_lr` in words, for the book's prose.

    ``describe_lr(1e-3, None)`` -> "0.001, constant"; with ``{start: 0.75, factor: 0.1}``:
    "0.001 for the first 75% of the steps, then a half-cosine decay to 0.1 × 0.001 = 0.0001 at
    the last step".
    """
    lr = check_positive_float(lr, "lr")
    lr_decay = check_lr_decay(lr_decay, "lr_decay")
    if lr_decay is None:
        return f"{lr:g}, constant"
    start, factor = lr_decay["start"], lr_decay["factor"]
    return (
        f"{lr:g} for the first {start:.0%} of the steps, then a half-cosine decay to "
        f"{factor:g} × {lr:g} = {factor * lr:g} at the last step"
    )


@dataclass(frozen=True)
class TrainConfig:
    """One configuration of the study, trained for every (data seed, model seed) pair at once.

    Defaults are the paper's protocol (spec §4); every number is a parameter.
    """

    setting: str  # "mlp" | "mha" | "rnn" (spec §2)
    task: str  # "regression" | "classification"
    model: str  # "monolithic" | "modular" | "modular-op" | "gt-modular" (spec §3)
    num_rules: int  # R, also the number of modules (spec §1)
    encoder_dim: int = 32  # E (MLP encoder / MHA token width / RNN encoder), spec §1
    dim: int = 128  # D = 4E on the paper's grid (MLP width / MHA attention / LSTM hidden)
    search_version: int = 1  # MHA search: 1 = nearest scalar query, 2 = cosine (spec §2.2)
    state_dim: int = 32  # RNN state dimension d; the paper uses 32, not the argparse 1 (spec §9.8)
    data_seeds: tuple[int, ...] = (0,)  # each fixes a task instance (rule coefficients)
    seeds: tuple[int, ...] = (0,)  # each fixes initial weights and the data stream
    iterations: int | None = None  # None: the paper's 100k (MLP) / 500k (MHA, RNN)
    batch_size: int = 256  # examples (MLP) or sequences (MHA, RNN) per step, spec §4
    seq_len: int = 10  # training sequence length for MHA and RNN, spec §2
    lr: float = 1e-4  # Adam, default betas, no weight decay, no schedule (spec §4)
    # None: constant lr (spec §4). {start, factor}: cosine decay from fraction start of the steps
    # to factor x lr at the last one, a deviation for the CPU profiles (scheduled_lr)
    lr_decay: dict[str, float] | None = None
    grad_clip: float | str | None = "auto"  # "auto": 1.0 for the RNN only (spec §4)
    eval_every: int = 5000  # steps between evaluations of the curve and of "best"
    eval_batches: int = 10  # fresh batches per curve point and per validation (spec §4)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    model_options: dict[str, Any] = field(default_factory=dict)  # extra build_model options

    def __post_init__(self) -> None:
        object.__setattr__(self, "setting", check_setting(self.setting))
        object.__setattr__(self, "task", check_task(self.task))
        object.__setattr__(self, "model", canonical_name(self.model, "model", MODEL_NAMES))
        for name in ("data_seeds", "seeds"):
            values = getattr(self, name)
            if isinstance(values, int | np.integer):
                values = (values,)
            if not isinstance(values, Sequence) or isinstance(values, str | bytes):
                raise TypeError(f"{name} must be a sequence of integers, got {values!r}")
            values = tuple(check_seed(v, name) for v in values)
            if not values:
                raise ValueError(f"{name} must name at least one seed, got an empty list")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat a seed, got {list(values)}")
            object.__setattr__(self, name, values)
        big = MAX_SIZE
        check_int(self.num_rules, "num_rules", minimum=2, maximum=big)
        check_int(self.encoder_dim, "encoder_dim", minimum=1, maximum=big)
        check_int(self.dim, "dim", minimum=1, maximum=big)
        check_int(self.batch_size, "batch_size", minimum=1, maximum=big)
        check_int(self.seq_len, "seq_len", minimum=2 if self.setting == "mha" else 1, maximum=big)
        check_int(self.eval_every, "eval_every", minimum=1, maximum=big)
        check_int(self.eval_batches, "eval_batches", minimum=1, maximum=big)
        if self.iterations is not None:
            check_int(self.iterations, "iterations", minimum=0, maximum=big)
        if isinstance(self.search_version, bool) or self.search_version not in (1, 2):
            raise ValueError(f"search_version must be 1 or 2, got {self.search_version!r}")
        if self.setting != "mha" and self.search_version != 1:
            raise ValueError(
                f"search_version applies to setting 'mha' only (1: nearest scalar query, "
                f"2: cosine); got search_version={self.search_version} for setting {self.setting!r}"
            )
        check_positive_float(self.lr, "lr")
        object.__setattr__(self, "lr_decay", check_lr_decay(self.lr_decay, "lr_decay"))
        if isinstance(self.grad_clip, str) and self.grad_clip != "auto":
            raise ValueError(
                f"grad_clip must be 'auto', None or a number > 0, got {self.grad_clip!r}"
            )
        if self.grad_clip not in ("auto", None):
            check_positive_float(self.grad_clip, "grad_clip")
        object.__setattr__(
            self,
            "model_options",
            check_model_options(self.model, self.model_options, self.num_rules),
        )
        if self.setting == "rnn":
            check_int(self.state_dim, "state_dim", minimum=1)
        resolve_device(self.device)

    # Derived values -------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Optimizer steps: ``iterations``, or the paper's per-setting default."""
        return PAPER_ITERATIONS[self.setting] if self.iterations is None else self.iterations

    @property
    def clip_norm(self) -> float | None:
        """Gradient-norm clip per run: 1.0 for the RNN under ``"auto"`` (spec §4)."""
        if self.grad_clip == "auto":
            return 1.0 if self.setting == "rnn" else None
        return None if self.grad_clip is None else float(self.grad_clip)

    @property
    def runs(self) -> list[tuple[int, int]]:
        """The (data_seed, seed) pair of every run, in stack order (seed-major, as SLURM ids)."""
        return [(d, s) for s in self.seeds for d in self.data_seeds]

    @property
    def num_runs(self) -> int:
        return len(self.data_seeds) * len(self.seeds)

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): ``lr``, or ``lr_decay``'s schedule."""
        return scheduled_lr(self.lr, step, self.num_steps, self.lr_decay)

    def eval_iterations(self) -> list[int]:
        """Iterations at which the curve is logged: 0, eval_every, ..., and the final one."""
        points = list(range(0, self.num_steps, self.eval_every))
        if not points or points[-1] != self.num_steps:
            points.append(self.num_steps)
        return points

    def task_options(self) -> dict[str, Any]:
        """Options of :func:`mod_arch_core.data.make_task` that apply to this setting."""
        if self.setting == "mha":
            return {"search_version": self.search_version}
        if self.setting == "rnn":
            return {"state_dim": self.state_dim}
        return {}

    def key(self) -> dict[str, Any]:
        """The identifying fields of the configuration (no seeds, no device)."""
        return {
            "setting": self.setting,
            "task": self.task,
            "model": self.model,
            "num_rules": self.num_rules,
            "encoder_dim": self.encoder_dim,
            "dim": self.dim,
            "search_version": self.search_version if self.setting == "mha" else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists).

        ``lr_decay`` appears only when set, so the form (and the configuration hash,
        :func:`mod_arch_core.experiment.experiment_hash`) of a constant-lr configuration is what
        it was before the field existed.
        """
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        if data["lr_decay"] is None:
            del data["lr_decay"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        for name in ("data_seeds", "seeds"):
            data[name] = tuple(data[name])
        return cls(**data)


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained stack and its history."""

    config: TrainConfig
    model: nn.Module  # the stack after the last step ("last" checkpoint)
    best_state: dict[str, torch.Tensor]  # per-run best weights, stacked like the model's
    best_iteration: np.ndarray  # (runs,) iteration of each run's best validation
    curves: pd.DataFrame  # long table: run, data_seed, seed, iteration, perf, perf_val
    diverged_at: np.ndarray  # (runs,) first step with a non-finite loss, -1 if none
    train_seconds: float  # wall time of the training loop (evaluations included)
    n_params: int  # parameters per run (reference convention, spec §3.5)
    device: str

    def state(self, checkpoint: str) -> dict[str, torch.Tensor]:
        """Stacked state dict of the ``"last"`` or ``"best"`` checkpoint."""
        if checkpoint == "last":
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if checkpoint == "best":
            return {k: v.clone() for k, v in self.best_state.items()}
        raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")


# Losses and performance ----------------------------------------------------------------------


def per_run_loss(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """Training loss of every run (spec §4): mean L1 or mean BCE-with-logits over all outputs.

    Parameters
    ----------
    output, target : (runs, batch, ...) tensors of the same shape.

    Returns
    -------
    (runs,) tensor; summing it gives each run exactly its own gradient.
    """
    if output.shape != target.shape:
        raise ValueError(f"output shape {tuple(output.shape)} != target {tuple(target.shape)}")
    if task == "regression":
        elementwise = (output - target).abs()
    else:
        elementwise = nn.functional.binary_cross_entropy_with_logits(
            output, target, reduction="none"
        )
    return elementwise.flatten(1).mean(dim=1)


def per_run_performance(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """Performance of every run (spec §5.1): L1 loss, or classification error in % (100 - acc)."""
    if task == "regression":
        return (output - target).abs().flatten(1).mean(dim=1)
    correct = ((output >= 0).to(target.dtype) == target).to(torch.float32)
    return 100.0 * (1.0 - correct.flatten(1).mean(dim=1))


def clip_grad_norm_per_run(parameters: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each run's gradient norm to ``max_norm`` separately (``clip_grad_norm_`` per run).

    Every parameter has the run axis first; the norm of run k is taken over all of run k's
    gradients, exactly as ``torch.nn.utils.clip_grad_norm_`` would for that run alone.

    Returns
    -------
    (runs,) tensor of the norms before clipping.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = torch.stack([g.pow(2).flatten(1).sum(dim=1) for g in grads]).sum(dim=0)
    norms = squares.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms


# The engine -----------------------------------------------------------------------------------


def build_stack(config: TrainConfig, device: torch.device | None = None):
    """Tasks, stacked model and per-run generators for ``config`` (nothing trained yet)."""
    device = resolve_device(config.device) if device is None else device
    if config.model not in PAPER_MODELS and config.model not in _extra_models():
        allowed = ", ".join((*PAPER_MODELS, *_extra_models()))
        raise ValueError(f"unknown model {config.model!r}; allowed: {allowed}")
    runs = config.runs
    task_cache = {
        d: make_task(config.setting, config.task, config.num_rules, d, **config.task_options())
        for d in config.data_seeds
    }
    tasks = [task_cache[d] for d, _ in runs]
    model = build_model(
        config.setting,
        config.model,
        config.num_rules,
        config.encoder_dim,
        config.dim,
        config.task,
        num_runs=len(runs),
        seeds=[s for _, s in runs],
        device=device,
        **config.task_options(),
        **config.model_options,
    )
    return tasks, model


def _extra_models() -> tuple[str, ...]:
    from mod_arch_core import models

    return tuple(getattr(models, "MODEL_NAMES", PAPER_MODELS))


def run_generators(
    config: TrainConfig,
    stream: int,
    device: torch.device,
    runs: Sequence[tuple[int, int]] | None = None,
) -> list[torch.Generator]:
    """One generator per model seed, shared (same object) by the runs with that seed.

    Runs sharing a model seed then see the same inputs and rules, as in the reference, where the
    data stream depends on the model seed only (spec §1); their labels differ by task. ``runs``
    lists the (data_seed, seed) of every stack entry when the stack is not ``config.runs``
    (e.g. two checkpoints of the same runs evaluated at once: they draw the same data).
    """
    runs = config.runs if runs is None else runs
    by_seed = {s: stream_generator(s, stream, device) for _, s in runs}
    return [by_seed[s] for _, s in runs]


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    tasks: Sequence[Any],
    generators: Sequence[torch.Generator],
    *,
    num_batches: int,
    batch_size: int,
    task: str,
    device: torch.device,
    seq_len: int | None = None,
    ood: bool = False,
) -> torch.Tensor:
    """Mean performance of every run over ``num_batches`` fresh batches, shape (runs,)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(len(tasks), dtype=torch.float64, device=device)
    for _ in range(num_batches):
        batch = sample_stack(tasks, batch_size, generators, ood=ood, seq_len=seq_len, device=device)
        output, _ = model(batch.inputs)
        total += per_run_performance(output, batch.targets, task).double()
    model.train(was_training)
    return (total / num_batches).float()


_MALLOC_TUNED = False


def retain_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of returning it to the system (glibc).

    glibc's ``malloc`` serves blocks above 32 MB with fresh ``mmap`` pages and returns them on
    ``free``, so every training step of a large stack page-faulted its biggest activations
    (about 100 MB each for MHA at N = 25) back into existence; that cost 35% of an MHA step
    (``benchmarks/README.md``). With ``mallopt`` the blocks come from the heap, which keeps its
    peak size. Called by :func:`train`; a no-op (returning False) where glibc is not the C
    library, and after the first call.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    _MALLOC_TUNED = bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(
        mallopt(m_trim_threshold, (1 << 31) - 1)
    )
    return _MALLOC_TUNED


def make_optimizer(params: Sequence[torch.Tensor], config: TrainConfig) -> torch.optim.Adam:
    """Adam of spec §4 (lr ``config.lr``, default betas, no weight decay) over the stacked runs.

    One parameter group: every run of a stack shares the lr and its schedule (:func:`train` sets
    the group's lr before each step when ``config.lr_decay`` is set).

    The fused implementation (one kernel over all parameters) computes the same elementwise
    update as the default one; on CPU it made the optimizer step 3-6x faster at N = 25 runs
    (``benchmarks/README.md``).
    """
    return torch.optim.Adam(params, lr=config.lr, fused=True)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    *,
    task: str,
    clip: float | None,
    alive: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step of every run of the stack on ``batch`` (spec §4).

    Each run's loss is its own mean (:func:`per_run_loss`, plus the model's per-run
    ``auxiliary_loss()`` when it has one); the backward pass of their sum gives each run its own
    gradient. A run whose loss is not finite is marked dead in ``alive`` (updated in place) and
    gets zero gradients from then on; gradients are clipped per run (``clip``), then Adam steps.

    Returns
    -------
    losses : (runs,) tensor, the losses of this step.
    newly_diverged : (runs,) bool tensor of the runs that diverged at this step, or None.
    """
    output, _ = model(batch.inputs)
    losses = per_run_loss(output, batch.targets, task)
    auxiliary = model.auxiliary_loss() if hasattr(model, "auxiliary_loss") else None
    if auxiliary is not None:  # routing regularisers: (runs,), each run its own
        losses = losses + auxiliary
    finite = torch.isfinite(losses)
    newly = alive & ~finite
    newly_diverged = None
    if bool(newly.any()):
        newly_diverged = newly
        alive &= finite
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=False)
    torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
    if not bool(alive.all()):
        for p in params:
            if p.grad is not None:
                shape = (-1,) + (1,) * (p.grad.dim() - 1)
                p.grad.mul_(alive.view(shape)).nan_to_num_(0.0, 0.0, 0.0)
    if clip is not None:
        clip_grad_norm_per_run(params, clip)
    optimizer.step()
    return losses, newly_diverged


def train(
    config: TrainConfig,
    *,
    progress: bool | None = None,
    description: str | None = None,
) -> TrainResult:
    """Train every run of ``config`` in one stacked computation (spec §4).

    Parameters
    ----------
    config : the configuration and protocol.
    progress : show a tqdm bar (runs, step, loss, steps/s); ``None`` shows it only when stderr is
        a terminal, so logs, tests and rendered notebooks stay clean.
    description : text at the left of the progress bar.

    Returns
    -------
    TrainResult with the ``last`` model, per-run ``best`` weights, the training curves (one row per
    run and evaluation), per-run divergence steps and the wall time.

    Notes
    -----
    A run whose loss becomes NaN or infinite is marked diverged at that step; its gradients are
    zeroed from then on so that the other runs continue unaffected (they never share a gradient).
    """
    device = resolve_device(config.device)
    retain_freed_memory()
    tasks, model = build_stack(config, device)
    model.train()
    n_runs = config.num_runs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    train_gens = run_generators(config, STREAM_TRAIN, device)
    eval_gens = run_generators(config, STREAM_EVAL, device)
    val_gens = run_generators(config, STREAM_VAL, device)
    seq_len = config.seq_len if config.setting in ("mha", "rnn") else None
    clip = config.clip_norm

    better_sign = 1.0  # both regression loss and classification error: lower is better
    best_val = torch.full((n_runs,), math.inf, device=device)
    best_iteration = np.zeros(n_runs, dtype=np.int64)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    diverged_at = np.full(n_runs, -1, dtype=np.int64)
    alive = torch.ones(n_runs, dtype=torch.bool, device=device)
    curve_rows: list[dict[str, Any]] = []
    eval_points = set(config.eval_iterations())

    def evaluate(iteration: int) -> None:
        kwargs = dict(
            num_batches=config.eval_batches,
            batch_size=config.batch_size,
            task=config.task,
            device=device,
            seq_len=seq_len,
        )
        perf = evaluate_batches(model, tasks, eval_gens, **kwargs)
        val = evaluate_batches(model, tasks, val_gens, **kwargs)
        improved = (better_sign * val < better_sign * best_val) & alive & torch.isfinite(val)
        if bool(improved.any()):
            best_val.copy_(torch.where(improved, val, best_val))
            mask_cpu = improved.cpu().numpy()
            best_iteration[mask_cpu] = iteration
            for name, value in model.state_dict().items():
                shape = (-1,) + (1,) * (value.dim() - 1)
                best_state[name].copy_(torch.where(improved.view(shape), value, best_state[name]))
        perf_cpu, val_cpu = perf.cpu().numpy(), val.cpu().numpy()
        for k, (d, s) in enumerate(config.runs):
            curve_rows.append(
                {
                    "run": k,
                    "data_seed": d,
                    "seed": s,
                    "iteration": iteration,
                    "perf": float(perf_cpu[k]),
                    "perf_val": float(val_cpu[k]),
                }
            )

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(
        total=config.num_steps,
        disable=not show,
        desc=description or f"{config.setting}/{config.task}/{config.model} R={config.num_rules}",
        unit="step",
        leave=False,
        dynamic_ncols=True,
    )
    set_progress = getattr(model, "set_progress", None)  # e.g. a Gumbel temperature schedule
    decay = config.lr_decay is not None  # None: the lr stays the one Adam was built with
    start = time.perf_counter()
    for step in range(config.num_steps):
        if set_progress is not None:
            set_progress(step / config.num_steps)
        if decay:
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
        if step in eval_points:
            evaluate(step)
        batch = sample_stack(tasks, config.batch_size, train_gens, seq_len=seq_len, device=device)
        losses, newly = train_step(
            model, optimizer, batch, task=config.task, clip=clip, alive=alive
        )
        if newly is not None:
            diverged_at[newly.nonzero().flatten().cpu().numpy()] = step
        if show and (step % 50 == 0 or step == config.num_steps - 1):
            mean_loss = float(losses[alive].mean()) if bool(alive.any()) else float("nan")
            bar.set_postfix(runs=n_runs, loss=f"{mean_loss:.4f}", refresh=False)
        bar.update(1)
    if config.num_steps in eval_points:
        evaluate(config.num_steps)
    bar.close()
    elapsed = time.perf_counter() - start

    return TrainResult(
        config=config,
        model=model,
        best_state=best_state,
        best_iteration=best_iteration,
        curves=pd.DataFrame(curve_rows),
        diverged_at=diverged_at,
        train_seconds=elapsed,
        n_params=count_parameters(model),
        device=str(device),
    )
