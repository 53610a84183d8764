"""Named experiment profiles: the grid of configurations, iterations and evaluation budgets.

A profile is a YAML file in ``mod_arch_core/profiles/`` read into :class:`Profile`. The profiles:

* ``smoke``: every setting, task and model at tiny sizes; seconds. Used by tests and notebook tests.
* ``quick``: every setting, task and model, R in {2, 4, 8, 16}, the smallest capacity, few seeds and
  reduced iterations; a full local regeneration in minutes on 2 CPU cores.
* ``reference``: the results the book ships; R in {2, ..., 32}, two capacities, 3 x 2 seeds.
* ``paper``: the paper's grid and protocol exactly (spec §1, §4, §5): 20,000 runs, for GPUs.

Any field can be overridden (``--set num_rules=[2,4]``, ``--set iterations.mlp=2000``, or a papermill
``overrides`` dict); :func:`apply_overrides` validates every override by name and type.

What is checked (every message names the field and what is allowed): unknown fields, and unknown
keys of the mapping fields (``iterations.mpl``, ``model_options={modullar: ...}``, ``budget.foo``);
list fields (``settings``, ``tasks``, ``models``, ``num_rules``, ``capacities``, ``data_seeds``,
``seeds``, ``search_versions``) must be lists: ``num_rules=4`` is refused with "num_rules must be
a list, e.g. num_rules=[2, 4]" rather than read as ``[4]``, so that a value that was meant as a
list is never silently narrowed; routing options must be valid for their model at every R of
the grid (checked on the meta device); a YAML syntax error in a profile file names the file, line
and column.
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
from mod_arch_core.model_names import MODEL_NAMES
from mod_arch_core.models import check_model_options
from mod_arch_core.training import TrainConfig
from mod_arch_core.validation import (
    PAPER_MODELS,
    SETTINGS,
    TASKS,
    canonical_name,
    check_int,
    check_list,
    check_positive_float,
    check_seed,
    parse_key_value,
)

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
        for name in ("name", "description"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        settings = tuple(
            canonical_name(s, "settings", SETTINGS)
            for s in check_list(self.settings, "settings", "[mlp, mha]")
        )
        tasks = tuple(
            canonical_name(t, "tasks", TASKS)
            for t in check_list(self.tasks, "tasks", "[regression]")
        )
        names = tuple(
            canonical_name(m, "models", MODEL_NAMES)
            for m in check_list(self.models, "models", "[modular, monolithic]")
        )
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "models", names)
        object.__setattr__(
            self,
            "num_rules",
            tuple(
                check_int(r, "num_rules", minimum=2)
                for r in check_list(self.num_rules, "num_rules", "[2, 4]")
            ),
        )
        capacities = []
        for pair in check_list(self.capacities, "capacities", "[[32, 128]]"):
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValueError(
                    f"capacities must be a list of [E, D] pairs, e.g. [[32, 128]]; got {pair!r}"
                )
            capacities.append(
                (
                    check_int(pair[0], "capacities E", minimum=1),
                    check_int(pair[1], "capacities D", minimum=1),
                )
            )
        object.__setattr__(self, "capacities", tuple(capacities))
        for name in ("data_seeds", "seeds"):
            seeds = tuple(
                check_seed(s, name) for s in check_list(getattr(self, name), name, "[0, 1]")
            )
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"{name} must not repeat a seed, got {list(seeds)}")
            object.__setattr__(self, name, seeds)
        versions = check_list(self.search_versions, "search_versions", "[1, 2]")
        if not versions or any(isinstance(v, bool) or v not in (1, 2) for v in versions):
            raise ValueError(
                f"search_versions must be a non-empty subset of [1, 2], got {versions!r}"
            )
        object.__setattr__(self, "search_versions", tuple(int(v) for v in versions))
        for name in ("iterations", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                value = dict.fromkeys(SETTINGS, value)
            if not isinstance(value, dict):
                raise TypeError(
                    f"{name} must be an integer or a mapping setting -> integer, e.g. "
                    f"{name}={{mlp: 2000, mha: 600, rnn: 500}}; got {value!r}"
                )
            unknown = sorted(str(k) for k in value if k not in SETTINGS)
            if unknown:
                raise ValueError(
                    f"{name} has unknown settings {unknown}; allowed: {', '.join(SETTINGS)}"
                )
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
        for name in ("eval_batches", "batch_size", "seq_len"):
            minimum = 2 if name == "seq_len" and "mha" in settings else 1
            check_int(getattr(self, name), name, minimum=minimum)
        check_positive_float(self.lr, "lr")
        object.__setattr__(self, "model_options", self._checked_model_options())
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
            raise ValueError(
                f"profile {self.name!r} has an empty grid axis: settings, tasks, models, num_rules, "
                "capacities, data_seeds and seeds each need at least one value"
            )
        self.eval_budget()  # validates

    def _checked_model_options(self) -> dict[str, dict[str, Any]]:
        """``model_options``: model name (one of ``models``) -> options valid for that model."""
        if not isinstance(self.model_options, dict):
            raise TypeError(
                "model_options must be a mapping model -> options, e.g. "
                f"model_options={{modular-topk: {{top_k: 2}}}}; got {self.model_options!r}"
            )
        checked = {}
        for model, options in self.model_options.items():
            name = canonical_name(model, "model in model_options", MODEL_NAMES)
            if name not in self.models:
                raise ValueError(
                    f"model_options names model {name!r}, which is not in models "
                    f"{list(self.models)}; its options would never be used"
                )
            for num_rules in self.num_rules:
                checked[name] = check_model_options(name, options, num_rules)
        return checked

    def eval_budget(self) -> EvalBudget:
        """The evaluation budget: a named one or explicit fields."""
        if isinstance(self.budget, str):
            if self.budget not in BUDGETS:
                raise ValueError(
                    f"unknown budget {self.budget!r}; allowed: {', '.join(BUDGETS)} or a mapping"
                )
            return BUDGETS[self.budget]
        if not isinstance(self.budget, dict):
            raise TypeError(
                f"budget must be a name ({', '.join(BUDGETS)}) or a mapping of EvalBudget fields, "
                f"got {self.budget!r}"
            )
        fields = dict(self.budget)
        known = [f.name for f in dataclasses.fields(EvalBudget)]
        unknown = sorted(str(k) for k in fields if k not in known)
        if unknown:
            raise ValueError(f"budget has unknown fields {unknown}; allowed: {', '.join(known)}")
        if "lengths" in fields:
            fields["lengths"] = tuple(
                check_list(fields["lengths"], "budget.lengths", "[3, 10, 30]")
            )
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
    if not isinstance(name_or_path, str | Path) or not str(name_or_path).strip():
        raise ValueError(
            f"profile must be a profile name ({', '.join(available_profiles())}) or a YAML file, "
            f"got {name_or_path!r}"
        )
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(
                f"unknown profile {str(name_or_path)!r}; available: {', '.join(available_profiles())}"
            )
    elif not path.is_file():
        raise FileNotFoundError(
            f"profile file {path} does not exist (named profiles: {', '.join(available_profiles())})"
        )
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"profile file {path} must hold a mapping of profile fields, got {type(data).__name__}"
        )
    data.setdefault("name", path.stem)
    if overrides is not None and not isinstance(overrides, dict | list | tuple):
        raise TypeError(
            f"overrides must be a mapping or a list of KEY=VALUE strings, got {overrides!r}"
        )
    data = apply_overrides(
        data, list(overrides) if isinstance(overrides, tuple) else overrides or {}
    )
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"profile {path.stem!r}: unknown fields {unknown}; allowed: {sorted(known)}"
        )
    return Profile(**data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"field {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; a syntax error names the file, line and column."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"profile file {where}: invalid YAML: {problem}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is YAML (``[2, 4]``, ``2000``, ``cpu``)."""
    return parse_key_value(text, what="override", example="num_rules=[2,4]")


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
            allowed = _nested_keys(head)
            if allowed is None:
                raise ValueError(
                    f"override {key!r}: field {head!r} is not a mapping; dotted keys reach into "
                    "iterations, eval_every, budget and model_options"
                )
            if head == "model_options":
                rest = canonical_name(rest, f"model in override {key!r}", MODEL_NAMES)
            if rest not in allowed:
                raise ValueError(
                    f"override {key!r}: unknown key {rest!r} of {head}; allowed: {', '.join(allowed)}"
                )
            target = data.get(head, {})
            if head == "budget" and isinstance(target, str):
                target = dataclasses.asdict(BUDGETS.get(target, EvalBudget()))
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


def _nested_keys(head: str) -> tuple[str, ...] | None:
    """Keys a dotted override ``HEAD.KEY`` may name, or None if ``head`` is not a mapping field."""
    if head in ("iterations", "eval_every"):
        return SETTINGS
    if head == "model_options":
        return MODEL_NAMES
    if head == "budget":
        return tuple(f.name for f in dataclasses.fields(EvalBudget))
    return None
