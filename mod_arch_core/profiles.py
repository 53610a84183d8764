"""Named experiment profiles: the grid of configurations, iterations and evaluation budgets.

A profile is a YAML file in ``mod_arch_core/profiles/`` read into :class:`Profile`. The profiles:

* ``smoke``: every setting, task and model at tiny sizes; seconds. Used by tests and notebook tests.
* ``quick``: every setting, task and model, R in {2, 4, 8, 16}, the smallest capacity, few seeds and
  reduced iterations; a full local regeneration in minutes on 2 CPU cores.
* ``reference``: the results the book ships; R in {2, ..., 32}, two capacities, 3 x 2 seeds.
* ``paper``: the paper's grid and protocol exactly (spec §1, §4, §5): 20,000 runs, for GPUs.

Any field can be overridden (``--set num_rules=[2,4]``, ``--set iterations.mlp=2000``, or a papermill
``overrides`` dict); :func:`apply_overrides` validates every override by name and type.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mod_arch_core.evaluation import BUDGETS, EvalBudget
from mod_arch_core.training import TrainConfig
from mod_arch_core.validation import PAPER_MODELS, SETTINGS, TASKS, canonical_name, check_int

PROFILE_DIR = Path(str(resources.files("mod_arch_core") / "profiles"))


@dataclass(frozen=True)
class Profile:
    """A named grid of configurations and the protocol to train and evaluate them."""

    name: str
    description: str
    settings: tuple[str, ...] = SETTINGS
    tasks: tuple[str, ...] = TASKS
    models: tuple[str, ...] = PAPER_MODELS
    num_rules: tuple[int, ...] = (2, 4, 8, 16, 32)
    capacities: tuple[tuple[int, int], ...] = ((32, 128),)  # zipped (E, D) pairs, D = 4E
    data_seeds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    search_versions: tuple[int, ...] = (1, 2)  # MHA only
    iterations: dict[str, int] = field(
        default_factory=lambda: {"mlp": 100_000, "mha": 500_000, "rnn": 500_000}
    )
    eval_every: dict[str, int] = field(
        default_factory=lambda: {"mlp": 5000, "mha": 5000, "rnn": 5000}
    )
    eval_batches: int = 10
    batch_size: int = 256
    seq_len: int = 10
    lr: float = 1e-4
    budget: str | dict[str, Any] = "paper"  # a named budget or EvalBudget fields
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model name

    def __post_init__(self) -> None:
        settings = tuple(canonical_name(s, "settings", SETTINGS) for s in self.settings)
        tasks = tuple(canonical_name(t, "tasks", TASKS) for t in self.tasks)
        from mod_arch_core import models as model_package

        allowed_models = tuple(getattr(model_package, "MODEL_NAMES", PAPER_MODELS))
        names = tuple(canonical_name(m, "models", allowed_models) for m in self.models)
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "models", names)
        object.__setattr__(
            self, "num_rules", tuple(check_int(r, "num_rules", minimum=2) for r in self.num_rules)
        )
        capacities = []
        for pair in self.capacities:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValueError(f"capacities must be [E, D] pairs, got {pair!r}")
            capacities.append(
                (
                    check_int(pair[0], "capacity E", minimum=1),
                    check_int(pair[1], "capacity D", minimum=1),
                )
            )
        object.__setattr__(self, "capacities", tuple(capacities))
        for name in ("data_seeds", "seeds"):
            object.__setattr__(
                self, name, tuple(check_int(s, name, minimum=0) for s in getattr(self, name))
            )
        versions = tuple(int(v) for v in self.search_versions)
        if not set(versions) <= {1, 2} or not versions:
            raise ValueError(
                f"search_versions must be a non-empty subset of [1, 2], got {list(versions)}"
            )
        object.__setattr__(self, "search_versions", versions)
        for name in ("iterations", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, int):
                value = dict.fromkeys(SETTINGS, value)
            missing = [s for s in settings if s not in value]
            if missing:
                raise ValueError(f"{name} needs a value for settings {missing}, got {value}")
            object.__setattr__(
                self,
                name,
                {
                    s: check_int(v, f"{name}.{s}", minimum=1 if name == "eval_every" else 0)
                    for s, v in value.items()
                },
            )
        if not all(
            (
                self.settings,
                self.tasks,
                self.models,
                self.num_rules,
                self.capacities,
                self.data_seeds,
                self.seeds,
            )
        ):
            raise ValueError(f"profile {self.name!r} has an empty grid axis")
        self.eval_budget()  # validates

    def eval_budget(self) -> EvalBudget:
        """The evaluation budget: a named one or explicit fields."""
        if isinstance(self.budget, str):
            if self.budget not in BUDGETS:
                raise ValueError(
                    f"unknown budget {self.budget!r}; allowed: {', '.join(BUDGETS)} or a mapping"
                )
            return BUDGETS[self.budget]
        fields = dict(self.budget)
        if "lengths" in fields:
            fields["lengths"] = tuple(fields["lengths"])
        return EvalBudget(**fields)

    def configurations(self, device: str = "auto") -> list[TrainConfig]:
        """Every configuration of the grid, in a fixed order (the order shards are cut from)."""
        configs = []
        for setting, task, model, num_rules, (enc, dim) in itertools.product(
            self.settings, self.tasks, self.models, self.num_rules, self.capacities
        ):
            versions = self.search_versions if setting == "mha" else (1,)
            for version in versions:
                configs.append(
                    TrainConfig(
                        setting=setting,
                        task=task,
                        model=model,
                        num_rules=num_rules,
                        encoder_dim=enc,
                        dim=dim,
                        search_version=version,
                        data_seeds=self.data_seeds,
                        seeds=self.seeds,
                        iterations=self.iterations[setting],
                        batch_size=self.batch_size,
                        seq_len=self.seq_len,
                        lr=self.lr,
                        eval_every=self.eval_every[setting],
                        eval_batches=self.eval_batches,
                        device=device,
                        model_options=dict(self.model_options.get(model, {})),
                    )
                )
        return configs

    def num_runs(self) -> int:
        """Total trained runs: configurations x data seeds x model seeds."""
        return len(self.configurations()) * len(self.data_seeds) * len(self.seeds)

    def total_steps(self) -> int:
        """Optimizer steps summed over every run (the paper's: about 8e9, spec §8)."""
        per_config = [c.num_steps for c in self.configurations()]
        return sum(per_config) * len(self.data_seeds) * len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["capacities"] = [list(c) for c in self.capacities]
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(
    name_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None
) -> Profile:
    """Load a shipped profile by name (or a YAML file by path) and apply ``overrides``."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(
                f"unknown profile {str(name_or_path)!r}; available: {', '.join(available_profiles())}"
            )
    elif not path.exists():
        raise FileNotFoundError(f"profile file {path} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"profile file {path} must hold a mapping, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    data = apply_overrides(data, overrides or {})
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"profile {path.stem!r}: unknown fields {unknown}; allowed: {sorted(known)}"
        )
    return Profile(**data)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is YAML (``[2, 4]``, ``2000``, ``cpu``)."""
    if "=" not in text:
        raise ValueError(f"malformed override {text!r}: expected KEY=VALUE, e.g. num_rules=[2,4]")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"malformed override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ValueError(
            f"malformed override {text!r}: value is not valid YAML ({error})"
        ) from error
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """Return a copy of profile ``data`` with ``overrides`` applied.

    ``overrides`` is a mapping or a list of ``KEY=VALUE`` strings. Dotted keys reach into mappings
    (``iterations.mlp=2000``); a key that the profile does not have is an error naming the known keys.
    """
    data = copy.deepcopy(data)
    items = (
        [parse_override(o) for o in overrides]
        if isinstance(overrides, list)
        else list(overrides.items())
    )
    known = {f.name for f in dataclasses.fields(Profile)}
    for key, value in items:
        head, _, rest = key.partition(".")
        if head not in known:
            raise ValueError(
                f"unknown profile field {head!r} in override {key!r}; known: {sorted(known)}"
            )
        if rest:
            target = data.get(head)
            if isinstance(target, int) and head in ("iterations", "eval_every"):
                target = dict.fromkeys(SETTINGS, target)
            if not isinstance(target, dict):
                raise ValueError(f"override {key!r}: field {head!r} is not a mapping")
            target = dict(target)
            target[rest] = value
            data[head] = target
        else:
            data[head] = value
    return data
