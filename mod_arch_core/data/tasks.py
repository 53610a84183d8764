"""The shared contract of the rule-based data: tasks, batches and (stacked) sampling.

Spec §2: every example (MLP), token (MHA) or time step (RNN) gets a rule ``c`` drawn
from ``{0..R-1}`` (uniformly, or from ``prob``); the model sees the raw features and the
one-hot of ``c``; the label is a rule-specific function of the input. A *task* is fixed
by ``(setting, task, num_rules, data_seed, options)``: the data seed draws the rule
coefficients with its own ``np.random.RandomState`` exactly as the reference code does
(spec §2.1-2.3, reference values in §2.5).

Sampling uses explicit ``torch.Generator`` objects, never a global stream. The training
engine trains N runs at once, so the one sampling mechanism works on a stack of N tasks
(:func:`sample_stack`); :meth:`RuleTask.sample` is the same code path with N = 1.
Runs given the same generator object share one raw draw of features and rules, as in
the reference, where the data stream depends only on the model seed (spec §1 "Seeds").

The per-setting mathematics lives in one module per rule family
(:mod:`~mod_arch_core.data.mlp`, :mod:`~mod_arch_core.data.mha`,
:mod:`~mod_arch_core.data.rnn`); this module owns everything they share: validation,
the rule draw, the OoD scaling, the one-hot inputs, the classification threshold and the
stacking.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import torch

from mod_arch_core.data import mha, mlp, rnn
from mod_arch_core.validation import check_int, check_num_rules, check_setting, check_task

#: One module per rule family (spec §2.1-2.3). Each module defines ``RULES_FIRST``,
#: ``DEFAULT_SEQ_LEN``, ``MIN_SEQ_LEN``, ``LABEL_DTYPE``, ``feature_dim(task)``,
#: ``output_dim(task)``, ``draw_coefficients(task)``, ``draw_features(task, generator,
#: batch_size, seq_len, device)`` and ``latent_targets(task, features, rules, group,
#: coefficients)``.
FAMILIES: dict[str, ModuleType] = {"mlp": mlp, "mha": mha, "rnn": rnn}

#: Options of :func:`make_task`: the settings each applies to and its default there.
OPTION_DEFAULTS: dict[str, tuple[str, int]] = {
    "search_version": ("mha", 1),
    "state_dim": ("rnn", 32),
    "order": ("rnn", 1),
}

#: Default dtype of :meth:`RuleTask.coefficients` (the reference's numpy float64). Each
#: family evaluates its labels in its own ``LABEL_DTYPE``; returned targets are float32.
LABEL_DTYPE = torch.float64

#: Tolerance on ``sum(prob) == 1``.
PROB_ATOL = 1e-6


class Batch(NamedTuple):
    """One batch of rule data (spec §2), optionally with a leading run axis ``N``.

    Attributes
    ----------
    inputs : torch.Tensor, float32
        ``[raw features, onehot(rule)]``: MLP ``([N,] B, 2+R)``, MHA ``([N,] B, L, 5R)``
        (search v1) or ``([N,] B, L, 7R)`` (v2), RNN ``([N,] B, L, d+R)``.
    targets : torch.Tensor, float32
        MLP ``([N,] B)``, MHA ``([N,] B, L)``, RNN ``([N,] B, L, d)`` (regression) or
        ``([N,] B, L)`` (classification). Classification targets are ``1[y >= 0]`` in {0, 1}.
    rules : torch.Tensor, int64
        The rule of every example / token / step: MLP ``([N,] B)``, MHA/RNN ``([N,] B, L)``.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    rules: torch.Tensor

    def run(self, k: int) -> Batch:
        """Return run ``k`` of a stacked batch (drops the leading run axis)."""
        return Batch(self.inputs[k], self.targets[k], self.rules[k])


@dataclass(frozen=True)
class RuleTask:
    """A rule-based task: the setting, the task type and the data-seeded coefficients.

    Build it with :func:`make_task`. Two tasks are equal (and hash equally) when their
    defining fields are equal; the coefficients are a function of those fields.

    Attributes
    ----------
    setting : {"mlp", "mha", "rnn"}
    task : {"regression", "classification"}
    num_rules : int
        R, the number of ground-truth rules (spec §1).
    data_seed : int
        Seed of the ``np.random.RandomState`` that draws the coefficients (spec §1).
    search_version : int or None
        MHA only (1: scalar queries, distance search; 2: 2-d unit keys, cosine search,
        spec §2.2); ``None`` for the other settings.
    state_dim, order : int or None
        RNN only: state dimension d (paper: 32) and Markov order (1); ``None`` otherwise.
    alpha, beta : np.ndarray (R,) float64 or None
        MLP and MHA coefficients (spec §2.1, §2.2); ``None`` for the RNN.
    A : np.ndarray (R, order, d, d) float64 or None
        RNN state maps, ``rng.randn(R, order, d, d) / sqrt(order*d)`` (spec §2.3).
    B : np.ndarray (R, d, d) float64 or None
        RNN input maps, ``rng.randn(R, d, d) / sqrt(d)``.
    w : np.ndarray (d, 1) float64 or None
        RNN classification read-out; ``None`` for regression and the other settings.
    """

    setting: str
    task: str
    num_rules: int
    data_seed: int
    search_version: int | None = None
    state_dim: int | None = None
    order: int | None = None
    alpha: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    beta: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    A: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    B: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    w: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _tensors: dict[Any, dict[str, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        setting = check_setting(self.setting)
        values = {
            "setting": setting,
            "task": check_task(self.task),
            "num_rules": check_num_rules(self.num_rules),
            "data_seed": _check_seed(self.data_seed),
        }
        for name, (applies_to, default) in OPTION_DEFAULTS.items():
            value = getattr(self, name)
            if applies_to != setting:
                if value is not None:
                    raise ValueError(
                        f"{name} applies only to setting {applies_to!r}; got {name}={value!r} "
                        f"for setting {setting!r}"
                    )
                continue
            values[name] = default if value is None else value
        if setting == "mha":
            values["search_version"] = _check_choice(
                values["search_version"], "search_version", (1, 2)
            )
        if setting == "rnn":
            values["state_dim"] = check_int(values["state_dim"], "state_dim", minimum=1)
            values["order"] = _check_choice(values["order"], "order", (1,))
        for name, value in values.items():
            object.__setattr__(self, name, value)
        for name, value in FAMILIES[setting].draw_coefficients(self).items():
            value = np.asarray(value, dtype=np.float64)
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle the defining fields only; coefficients are redrawn, caches dropped.
        return (RuleTask, (self.setting, self.task, self.num_rules, self.data_seed,
                           self.search_version, self.state_dim, self.order))  # fmt: skip

    @property
    def options(self) -> dict[str, int]:
        """The setting-specific options that apply to this task (may be empty)."""
        return {
            name: getattr(self, name)
            for name, (applies_to, _) in OPTION_DEFAULTS.items()
            if applies_to == self.setting
        }

    @property
    def is_classification(self) -> bool:
        """Whether targets are thresholded to ``1[y >= 0]`` (spec §2)."""
        return self.task == "classification"

    @property
    def is_sequence(self) -> bool:
        """Whether examples are sequences (MHA, RNN) rather than single vectors (MLP)."""
        return FAMILIES[self.setting].DEFAULT_SEQ_LEN is not None

    @property
    def default_seq_len(self) -> int | None:
        """Training sequence length L (10 for MHA/RNN, spec §2.2-2.3); ``None`` for MLP."""
        return FAMILIES[self.setting].DEFAULT_SEQ_LEN

    @property
    def feature_dim(self) -> int:
        """Number of raw (non one-hot) input features: MLP 2, MHA 4R / 6R, RNN d."""
        return FAMILIES[self.setting].feature_dim(self)

    @property
    def input_dim(self) -> int:
        """Model input width ``feature_dim + R``: MLP 2+R, MHA 5R / 7R, RNN d+R."""
        return self.feature_dim + self.num_rules

    @property
    def output_dim(self) -> int:
        """Target width per example / token: 1, except RNN regression (d, spec §2.3)."""
        return FAMILIES[self.setting].output_dim(self)

    def coefficients(
        self, device: torch.device | str | None = None, dtype: torch.dtype = LABEL_DTYPE
    ) -> dict[str, torch.Tensor]:
        """The coefficients that apply to this task as tensors, cached per device/dtype.

        Returns ``{"alpha", "beta"}`` (MLP, MHA) or ``{"A", "B"[, "w"]}`` (RNN) with the
        shapes of the numpy attributes. Treat the tensors as read-only.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (device, dtype)
        if key not in self._tensors:
            self._tensors[key] = {
                name: torch.from_numpy(getattr(self, name).copy()).to(device, dtype)
                for name in ("alpha", "beta", "A", "B", "w")
                if getattr(self, name) is not None
            }
        return self._tensors[key]

    def sample(
        self,
        batch_size: int,
        rng: torch.Generator,
        *,
        ood: bool = False,
        prob: Any = None,
        seq_len: int | None = None,
        device: torch.device | str | None = None,
    ) -> Batch:
        """Draw one batch of this task (spec §2); :func:`sample_stack` with N = 1.

        Parameters
        ----------
        batch_size : int
            B, the number of examples (MLP) or sequences (MHA, RNN).
        rng : torch.Generator
            The only source of randomness; it lives on the sampling device.
        ood : bool
            Multiply the raw features (never the one-hot) by 2 (spec §2, "OoD").
        prob : array-like (R,), optional
            Rule probabilities (spec §2.4); ``None`` draws rules uniformly.
        seq_len : int, optional
            L for MHA (>= 2) and RNN (>= 1), default :attr:`default_seq_len`; MLP: ``None``.
        device : torch.device or str, optional
            Must match ``rng.device``; default ``rng.device``.

        Returns
        -------
        Batch
            Shapes as documented on :class:`Batch`, without the run axis.
        """
        if not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
        batch = _sample_runs(
            (self,), batch_size, (rng,), ood=ood, prob=prob, seq_len=seq_len, device=device
        )
        return batch.run(0)


def make_task(
    setting: str,
    task: str,
    num_rules: int,
    data_seed: int,
    *,
    search_version: int = 1,
    state_dim: int = 32,
    order: int = 1,
) -> RuleTask:
    """Build the rule task of spec §2 for one data seed.

    Parameters
    ----------
    setting : {"mlp", "mha", "rnn"}
        Architecture / data family, case-insensitive.
    task : {"regression", "classification"}
    num_rules : int
        R >= 2.
    data_seed : int
        Seeds ``np.random.RandomState`` for the coefficients, in ``[0, 2**32)``.
    search_version : {1, 2}
        MHA only (spec §2.2).
    state_dim : int
        RNN only: d (spec §2.3: the paper uses 32).
    order : int
        RNN only: the Markov order; only the paper's order 1 is implemented.

    Raises
    ------
    ValueError
        On an unknown name, an invalid value, or an option that does not apply to
        ``setting`` given with a non-default value.
    """
    setting = check_setting(setting)
    given = {"search_version": search_version, "state_dim": state_dim, "order": order}
    options: dict[str, int | None] = {}
    for name, value in given.items():
        applies_to, default = OPTION_DEFAULTS[name]
        if applies_to == setting:
            options[name] = value
        elif isinstance(value, bool) or value != default:
            raise ValueError(
                f"{name} applies only to setting {applies_to!r}; got {name}={value!r} for "
                f"setting {setting!r} (leave it at its default {default})"
            )
        else:
            options[name] = None
    return RuleTask(setting, task, num_rules, data_seed, **options)


def sample_stack(
    tasks: Sequence[RuleTask],
    batch_size: int,
    rngs: Sequence[torch.Generator],
    *,
    ood: bool = False,
    prob: Any = None,
    seq_len: int | None = None,
    device: torch.device | str | None = None,
) -> Batch:
    """Draw one batch for each of N runs at once (spec §1 "Seeds", §2).

    Run ``k`` uses task ``tasks[k]`` and generator ``rngs[k]``. Each distinct generator
    object draws its raw features and rules once; runs sharing a generator share them
    (like reference runs sharing a model seed) and get the labels of their own task,
    computed for all runs in one batched computation. A run's batch never depends on
    its position in the stack or on the other runs: with one generator per run,
    ``sample_stack(...).run(k)`` equals ``tasks[k].sample(batch_size, g_k, ...)`` for a
    generator ``g_k`` in the same state.

    Parameters
    ----------
    tasks : sequence of RuleTask, length N >= 1
        Must share setting, task, num_rules and options (data seeds may differ).
    batch_size, ood, prob, seq_len, device
        As in :meth:`RuleTask.sample`.
    rngs : sequence of torch.Generator, length N
        All on the sampling device.

    Returns
    -------
    Batch
        Every tensor with a leading run axis N, e.g. MLP inputs ``(N, B, 2+R)``.
    """
    tasks = tuple(tasks)
    rngs = tuple(rngs)
    if not tasks:
        raise ValueError("tasks must hold at least one RuleTask, got an empty sequence")
    for k, task in enumerate(tasks):
        if not isinstance(task, RuleTask):
            raise TypeError(f"tasks[{k}] must be a RuleTask, got {type(task).__name__}")
    if len(rngs) != len(tasks):
        raise ValueError(
            f"rngs must hold one generator per task: got {len(rngs)} rngs for {len(tasks)} tasks"
        )
    for k, rng in enumerate(rngs):
        if not isinstance(rng, torch.Generator):
            raise TypeError(f"rngs[{k}] must be a torch.Generator, got {type(rng).__name__}")
    ref = _family_key(tasks[0])
    for k, task in enumerate(tasks[1:], start=1):
        if _family_key(task) != ref:
            raise ValueError(
                "tasks must share setting, task, num_rules and options; "
                f"tasks[0] is {_describe(tasks[0])} but tasks[{k}] is {_describe(task)}"
            )
    return _sample_runs(tasks, batch_size, rngs, ood=ood, prob=prob, seq_len=seq_len, device=device)


def draw_rules(
    generator: torch.Generator, shape: tuple[int, ...], cdf: torch.Tensor
) -> torch.Tensor:
    """Draw rules by inverting the cumulative distribution, as ``np.random.choice`` does.

    Parameters
    ----------
    generator : torch.Generator
    shape : tuple of int
        Output shape, filled in row-major order (spec §2.2: ``choice(R, n*L).reshape``).
    cdf : torch.Tensor (R,) float64
        Cumulative rule probabilities ending in exactly 1 (see :func:`rule_cdf`).

    Returns
    -------
    torch.Tensor, int64, ``shape``
        ``c = #{r : cdf[r] <= u}`` for ``u ~ U[0, 1)``; a rule of probability 0 never occurs.
    """
    u = torch.rand(shape, generator=generator, dtype=cdf.dtype, device=cdf.device)
    rules = torch.searchsorted(cdf, u, right=True)
    return rules.clamp_(max=cdf.numel() - 1)


def rule_cdf(prob: Any, num_rules: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Validate ``prob`` (spec §2.4) and return its cumulative sum, ``(R,)`` float64.

    ``prob=None`` means uniform. Otherwise it must be a length-R vector of finite,
    non-negative numbers summing to 1 within ``PROB_ATOL``; the cumulative sum is
    renormalised to end in exactly 1.
    """
    if prob is None:
        p = np.full(num_rules, 1.0 / num_rules)
    else:
        if isinstance(prob, torch.Tensor):
            prob = prob.detach().cpu().numpy()
        try:
            p = np.asarray(prob, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"prob must be a vector of {num_rules} numbers, got {prob!r}") from err
        if p.shape != (num_rules,):
            raise ValueError(
                f"prob must have shape ({num_rules},) (one entry per rule), got shape {p.shape}"
            )
        if not np.all(np.isfinite(p)):
            raise ValueError(f"prob must be finite, got {p.tolist()}")
        if np.any(p < 0):
            raise ValueError(f"prob must be non-negative, got {p.tolist()}")
        if abs(p.sum() - 1.0) > PROB_ATOL:
            raise ValueError(f"prob must sum to 1 (within {PROB_ATOL}), got sum {p.sum()!r}")
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return torch.as_tensor(cdf, dtype=torch.float64, device=device)


# ----------------------------------------------------------------------------------------
# The one sampling mechanism.


def _sample_runs(
    tasks: tuple[RuleTask, ...],
    batch_size: int,
    rngs: tuple[torch.Generator, ...],
    *,
    ood: bool,
    prob: Any,
    seq_len: int | None,
    device: torch.device | str | None,
) -> Batch:
    """Sample N runs whose tasks share a family; see :func:`sample_stack`."""
    ref = tasks[0]
    family = FAMILIES[ref.setting]
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if not isinstance(ood, bool | np.bool_):
        raise TypeError(f"ood must be a bool, got {ood!r}")
    seq_len = _check_seq_len(ref, seq_len)
    device = _check_device(device, rngs)
    cdf = rule_cdf(prob, ref.num_rules, device)
    rule_shape = (batch_size,) if seq_len is None else (batch_size, seq_len)

    # One raw draw per distinct generator, in the reference's order (spec §2.1-2.3).
    group_of: dict[int, int] = {}
    draws: list[tuple[torch.Tensor, torch.Tensor]] = []
    for rng in rngs:
        if id(rng) in group_of:
            continue
        group_of[id(rng)] = len(draws)
        if family.RULES_FIRST:
            rules = draw_rules(rng, rule_shape, cdf)
            features = family.draw_features(ref, rng, batch_size, seq_len, device)
        else:
            features = family.draw_features(ref, rng, batch_size, seq_len, device)
            rules = draw_rules(rng, rule_shape, cdf)
        if ood:
            features = features * 2.0
        draws.append((features, rules))
    features = torch.stack([f for f, _ in draws])  # (U, B, [L,] F)
    rules = torch.stack([c for _, c in draws])  # (U, B, [L])
    groups = [group_of[id(rng)] for rng in rngs]
    group = torch.tensor(groups, dtype=torch.long, device=device)

    # Runs that share a task and a draw (the model seeds of one data seed) share their labels:
    # compute them once per distinct (task, draw) pair, then give every run its copy.
    distinct, labels_of = _distinct_pairs(tasks, groups)
    coefficients = _stacked_coefficients(
        tuple(tasks[k] for k in distinct), device, family.LABEL_DTYPE
    )
    latent = family.latent_targets(ref, features, rules, group[distinct], coefficients)
    if len(distinct) != len(tasks):
        latent = latent[torch.tensor(labels_of, dtype=torch.long, device=device)]
    targets = (latent >= 0) if ref.is_classification else latent
    onehot = torch.nn.functional.one_hot(rules, ref.num_rules).to(features.dtype)
    inputs = torch.cat([features, onehot], dim=-1)
    if len(draws) != len(rngs):
        inputs, rules = inputs[group], rules[group]
    return Batch(inputs, targets.to(torch.float32), rules)


def _distinct_pairs(tasks: tuple[RuleTask, ...], groups: list[int]) -> tuple[list[int], list[int]]:
    """The first run of every distinct (task, draw) pair, and each run's pair.

    Returns ``(distinct, labels_of)``: run ``distinct[j]`` stands for pair j, and run k's labels
    are those of pair ``labels_of[k]``.
    """
    index: dict[tuple[RuleTask, int], int] = {}
    distinct, labels_of = [], []
    for run, key in enumerate(zip(tasks, groups, strict=True)):
        if key not in index:
            index[key] = len(distinct)
            distinct.append(run)
        labels_of.append(index[key])
    return distinct, labels_of


@functools.lru_cache(maxsize=8)
def _stacked_coefficients(
    tasks: tuple[RuleTask, ...], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Coefficients of N tasks stacked on a leading run axis, e.g. alpha ``(N, R)``."""
    per_task = [task.coefficients(device, dtype) for task in tasks]
    return {name: torch.stack([c[name] for c in per_task]) for name in per_task[0]}


def _check_seq_len(task: RuleTask, seq_len: Any) -> int | None:
    family = FAMILIES[task.setting]
    if family.DEFAULT_SEQ_LEN is None:
        if seq_len is not None:
            raise ValueError(
                f"seq_len does not apply to setting {task.setting!r} (no sequences); "
                f"got seq_len={seq_len!r}, allowed: None"
            )
        return None
    if seq_len is None:
        return family.DEFAULT_SEQ_LEN
    return check_int(seq_len, "seq_len", minimum=family.MIN_SEQ_LEN)


def _check_device(
    device: torch.device | str | None, rngs: tuple[torch.Generator, ...]
) -> torch.device:
    """The sampling device: every generator's device, which ``device`` must match."""
    devices = {(g.device.type, g.device.index) for g in rngs}
    if len(devices) > 1:
        raise ValueError(f"rngs must all live on one device, got {sorted(map(str, devices))}")
    gen_device = rngs[0].device
    if device is None:
        return gen_device
    device = torch.device(device)
    if device.type != gen_device.type or (
        device.index is not None
        and gen_device.index is not None
        and device.index != gen_device.index
    ):
        raise ValueError(
            f"device must match the generators' device {gen_device}, got device={device}"
        )
    return gen_device


def _check_seed(value: Any) -> int:
    seed = check_int(value, "data_seed", minimum=0)
    if seed >= 2**32:
        raise ValueError(f"data_seed must be < 2**32 (np.random.RandomState), got {seed}")
    return seed


def _check_choice(value: Any, name: str, allowed: tuple[int, ...]) -> int:
    value = check_int(value, name)
    if value not in allowed:
        hint = " (higher Markov orders are not implemented)" if name == "order" else ""
        raise ValueError(f"{name} must be one of {list(allowed)}{hint}, got {value}")
    return value


def _family_key(task: RuleTask) -> tuple[Any, ...]:
    return (task.setting, task.task, task.num_rules, tuple(sorted(task.options.items())))


def _describe(task: RuleTask) -> str:
    options = "".join(f", {k}={v}" for k, v in task.options.items())
    return f"({task.setting}, {task.task}, num_rules={task.num_rules}{options})"
