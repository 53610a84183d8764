"""Named experiment profiles: the grid of configurations, iterations and evaluation budgets.

A profile is a YAML file in ``mod_arch_core/profiles/`` read into :class:`Profile`. The profiles:

* ``smoke``: every setting, task and model at tiny sizes; seconds. Used by tests and notebook tests.
* ``quick``: every setting, task and model, R in {2, 4, 8, 16}, the smallest capacity, few seeds and
  reduced iterations; a full local regeneration in minutes on 2 CPU cores.
* ``reference``: the results the book ships; R in {2, ..., 32}, two capacities, 3 x 2 seeds.
* ``paper``: the paper's grid and protocol exactly (spec §1, §4, §5): 20,000 runs, for GPUs.

Per-setting grids. The grid axes ``num_rules``, ``capacities`` and ``search_versions`` are each a
list, the same for every setting, or a mapping setting -> list; ``iterations``, ``eval_every`` and
``batch_size`` are each an integer or a mapping setting -> integer. For example::

    num_rules: {mlp: [2, 4, 8, 16, 32], mha: [2, 4, 8, 16], rnn: [2, 4, 8, 16]}
    capacities: {mlp: [[32, 128], [64, 256]], mha: [[32, 128]], rnn: [[32, 128]]}
    search_versions: {mha: [2]}          # only MHA has search versions (spec §2.2)
    iterations: {mlp: 4000, mha: 6000, rnn: 2000}

A mapping names every setting of ``settings`` (a ``search_versions`` mapping: ``mha``, the one
setting that has them; the others may only be ``[1]``); it may also name settings that are not in
``settings``, which are then unused, so that ``--set settings=[mlp]`` works on any profile, as it
does for ``iterations``. :meth:`Profile.grid_for` returns one setting's values, and every
consumer goes through it. A list form is kept as given, so profiles written before mappings
existed load to the same configurations, in the same order, with the same hashes.

Any field can be overridden (``--set num_rules=[2,4]``, ``--set num_rules.mlp=[2,4,32]``,
``--set iterations.mlp=2000``, ``--set lr_decay.start=0.8``, or a papermill ``overrides`` dict);
:func:`apply_overrides` validates every override by name and type. A dotted override of a field
given as a list (``num_rules.mlp=[2, 4, 32]`` on ``num_rules: [2, 4]``) turns it into the mapping
that gives every other setting the list.

``lr_decay`` (default none: the paper's constant learning rate, spec §4) is the optional schedule
of :class:`mod_arch_core.training.TrainConfig`: ``{start: 0.8, factor: 0.1}`` keeps the lr
constant for the first 80% of the steps, then decays it (cosine) to 0.1 x lr at the last step.

What is checked (every message names the field and what is allowed): unknown fields, and unknown
keys of the mapping fields (``iterations.mpl``, ``num_rules.cnn``, ``model_options={modullar: ...}``,
``budget.foo``, ``lr_decay.shape``); a mapping that lacks a setting of ``settings``; list fields
(``settings``, ``tasks``, ``models``, ``num_rules``, ``capacities``, ``data_seeds``, ``seeds``,
``search_versions``) must be lists (or, for the grid axes, mappings of lists): ``num_rules=4`` is
refused with "num_rules must be a list, e.g. num_rules=[2, 4]" rather than read as ``[4]``, so that
a value that was meant as a list is never silently narrowed; a grid axis may neither be empty nor
repeat a value (``num_rules.mha=[]``, ``num_rules=[2, 2]``); routing options must be valid for
their model at every R of the grid (checked on the meta device); a YAML syntax error in a profile
file names the file, line and column.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Callable
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
    LR_DECAY_KEYS,
    PAPER_MODELS,
    SETTINGS,
    TASKS,
    canonical_name,
    check_int,
    check_known_keys,
    check_list,
    check_lr_decay,
    check_positive_float,
    check_seed,
    parse_key_value,
)

PROFILE_DIR = Path(str(resources.files("mod_arch_core") / "profiles"))


#: The grid axes that may be given per setting: a list (every setting) or a mapping setting -> list.
GRID_AXES: tuple[str, ...] = ("num_rules", "capacities", "search_versions")
#: The scalar fields that may be given per setting: an integer or a mapping setting -> integer.
PER_SETTING_INTS: tuple[str, ...] = ("iterations", "eval_every", "batch_size")
#: Examples used in the messages of the grid axes: (list form, mapping form).
_AXIS_EXAMPLES: dict[str, tuple[str, str]] = {
    "num_rules": ("[2, 4]", "{mlp: [2, 4, 32], mha: [2, 4], rnn: [2, 4]}"),
    "capacities": (
        "[[32, 128]]",
        "{mlp: [[32, 128], [64, 256]], mha: [[32, 128]], rnn: [[32, 128]]}",
    ),
    "search_versions": ("[1, 2]", "{mha: [2]}"),
}


@dataclass(frozen=True)
class SettingGrid:
    """One setting's share of a profile's grid and protocol (:meth:`Profile.grid_for`)."""

    setting: str
    num_rules: tuple[int, ...]  # R values (spec §1)
    capacities: tuple[tuple[int, int], ...]  # zipped (E, D) pairs
    search_versions: tuple[int, ...]  # (1,) for MLP and RNN, which have none (spec §2.2)
    iterations: int  # optimizer steps per run
    eval_every: int  # steps between evaluations
    batch_size: int  # examples or sequences per step


@dataclass(frozen=True)
class Profile:
    """A named grid of configurations and the protocol to train and evaluate them.

    ``num_rules``, ``capacities`` and ``search_versions`` are lists or mappings setting -> list;
    ``iterations``, ``eval_every`` and ``batch_size`` integers or mappings setting -> integer (see
    the module docstring). Read them through :meth:`grid_for`, which resolves either form.
    """

    name: str
    description: str
    settings: tuple[str, ...] = SETTINGS
    tasks: tuple[str, ...] = TASKS
    models: tuple[str, ...] = PAPER_MODELS
    num_rules: tuple[int, ...] | dict[str, tuple[int, ...]] = (2, 4, 8, 16, 32)
    # zipped (E, D) pairs, D = 4E on the paper's grid
    capacities: tuple[tuple[int, int], ...] | dict[str, tuple[tuple[int, int], ...]] = ((32, 128),)
    data_seeds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    search_versions: tuple[int, ...] | dict[str, tuple[int, ...]] = (1, 2)  # MHA only
    iterations: dict[str, int] = field(
        default_factory=lambda: {"mlp": 100_000, "mha": 500_000, "rnn": 500_000}
    )
    eval_every: dict[str, int] = field(
        default_factory=lambda: {"mlp": 5000, "mha": 5000, "rnn": 5000}
    )
    eval_batches: int = 10
    batch_size: int | dict[str, int] = 256
    seq_len: int = 10
    lr: float = 1e-4
    lr_decay: dict[str, float] | None = None  # None: constant lr (spec §4); see TrainConfig
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
        if not all((settings, tasks, names)):
            raise ValueError(
                f"profile {self.name!r} has an empty grid axis: settings, tasks, models, num_rules, "
                "capacities, data_seeds and seeds each need at least one value"
            )
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "models", names)
        for name, check in (
            ("num_rules", _check_num_rules_list),
            ("capacities", _check_capacities_list),
            ("search_versions", _check_search_versions_list),
        ):
            object.__setattr__(
                self, name, _per_setting_axis(name, getattr(self, name), settings, check)
            )
        for name in ("data_seeds", "seeds"):
            seeds = tuple(
                check_seed(s, name) for s in check_list(getattr(self, name), name, "[0, 1]")
            )
            if not seeds:
                raise ValueError(
                    f"profile {self.name!r} has an empty grid axis: {name} needs at least one seed"
                )
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"{name} must not repeat a seed, got {list(seeds)}")
            object.__setattr__(self, name, seeds)
        for name in ("iterations", "eval_every"):  # always stored as mappings, as before
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                value = dict.fromkeys(SETTINGS, value)
            object.__setattr__(self, name, _per_setting_int(name, value, settings))
        object.__setattr__(
            self, "batch_size", _per_setting_int("batch_size", self.batch_size, settings)
        )
        for name in ("eval_batches", "seq_len"):
            minimum = 2 if name == "seq_len" and "mha" in settings else 1
            check_int(getattr(self, name), name, minimum=minimum)
        check_positive_float(self.lr, "lr")
        object.__setattr__(self, "lr_decay", check_lr_decay(self.lr_decay, "lr_decay"))
        object.__setattr__(self, "model_options", self._checked_model_options())
        self.eval_budget()  # validates

    def grid_for(self, setting: str) -> SettingGrid:
        """The grid and protocol of ``setting`` (one of ``settings``), whichever form they take."""
        setting = canonical_name(setting, "setting", SETTINGS)
        if setting not in self.settings:
            raise ValueError(
                f"setting {setting!r} is not in profile {self.name!r}'s settings "
                f"{list(self.settings)}"
            )

        def pick(value: Any) -> Any:
            return value[setting] if isinstance(value, dict) else value

        return SettingGrid(
            setting=setting,
            num_rules=pick(self.num_rules),
            capacities=pick(self.capacities),
            search_versions=pick(self.search_versions) if setting == "mha" else (1,),
            iterations=self.iterations[setting],
            eval_every=self.eval_every[setting],
            batch_size=pick(self.batch_size),
        )

    def _checked_model_options(self) -> dict[str, dict[str, Any]]:
        """``model_options``: model name (one of ``models``) -> options valid for that model.

        Checked at every R that some setting of ``settings`` trains.
        """
        if not isinstance(self.model_options, dict):
            raise TypeError(
                "model_options must be a mapping model -> options, e.g. "
                f"model_options={{modular-topk: {{top_k: 2}}}}; got {self.model_options!r}"
            )
        used_by: dict[int, list[str]] = {}  # R -> the settings whose grid has it
        for setting in self.settings:
            for r in self.grid_for(setting).num_rules:
                used_by.setdefault(r, []).append(setting)
        checked = {}
        for model, options in self.model_options.items():
            name = canonical_name(model, "model in model_options", MODEL_NAMES)
            if name not in self.models:
                raise ValueError(
                    f"model_options names model {name!r}, which is not in models "
                    f"{list(self.models)}; its options would never be used"
                )
            for num_rules in sorted(used_by):
                try:
                    checked[name] = check_model_options(name, options, num_rules)
                except ValueError as error:
                    if not isinstance(self.num_rules, dict):
                        raise
                    raise ValueError(
                        f"{error} (model_options of {name!r} at R = {num_rules}, in num_rules of "
                        f"{', '.join(used_by[num_rules])})"
                    ) from None
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
        """Every configuration of the grid, in a fixed order (the order shards are cut from).

        The order is setting, task, model, R, capacity, search version (the setting's own values
        of each, :meth:`grid_for`); for a profile whose axes are lists it is the order of the
        product of those lists, as it always was.
        """
        configs = []
        for setting in self.settings:
            grid = self.grid_for(setting)
            for task, model, num_rules, (enc, dim), version in itertools.product(
                self.tasks, self.models, grid.num_rules, grid.capacities, grid.search_versions
            ):
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
                        iterations=grid.iterations,
                        batch_size=grid.batch_size,
                        seq_len=self.seq_len,
                        lr=self.lr,
                        lr_decay=None if self.lr_decay is None else dict(self.lr_decay),
                        eval_every=grid.eval_every,
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
        """JSON/YAML-ready fields (tuples become lists; per-setting mappings stay mappings)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _per_setting_axis(
    name: str,
    value: Any,
    settings: tuple[str, ...],
    check: Callable[[Any, str], tuple[Any, ...]],
) -> tuple[Any, ...] | dict[str, tuple[Any, ...]]:
    """A grid axis as a list (one tuple for every setting) or a mapping setting -> tuple.

    ``check(values, field)`` validates one list; ``field`` is ``name`` or ``name.setting``.
    """
    example, mapping_example = _AXIS_EXAMPLES[name]
    if isinstance(value, list | tuple):
        return check(value, name)
    if not isinstance(value, dict):
        raise TypeError(
            f"{name} must be a list, e.g. {name}={example}; got {value!r} "
            f"({type(value).__name__}); or, per setting, a mapping setting -> list, e.g. "
            f"{name}={mapping_example}"
        )
    check_known_keys(value, SETTINGS, name, "settings", f"{name}={mapping_example}")
    needed = ("mha",) if name == "search_versions" else SETTINGS
    missing = [s for s in settings if s in needed and s not in value]
    if missing:
        fields = ", ".join(f"{name}.{s}" for s in missing)
        rule = (
            "a mapping names mha, the one setting with search versions"
            if name == "search_versions"
            else f"a mapping names every setting of settings {list(settings)}"
        )
        raise ValueError(
            f"{name} gives no list for {fields}: {rule}, e.g. {name}={mapping_example}"
        )
    return {s: check(value[s], f"{name}.{s}") for s in SETTINGS if s in value}


def _distinct(values: list[Any], name: str, example: str) -> None:
    """A grid axis is non-empty and repeats no value (a repeat would train a configuration twice)."""
    if not values:
        raise ValueError(
            f"{name} must not be empty: give at least one value, e.g. {name}={example}"
        )
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat a value, got {list(values)}")


def _check_num_rules_list(value: Any, name: str) -> tuple[int, ...]:
    """A list of R values, each an integer >= 2 (spec §1)."""
    values = [check_int(r, name, minimum=2) for r in check_list(value, name, "[2, 4]")]
    _distinct(values, name, "[2, 4]")
    return tuple(values)


def _check_capacities_list(value: Any, name: str) -> tuple[tuple[int, int], ...]:
    """A list of ``[E, D]`` pairs of positive integers."""
    pairs = []
    for pair in check_list(value, name, "[[32, 128]]"):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(
                f"{name} must be a list of [E, D] pairs, e.g. [[32, 128]]; got {pair!r}"
            )
        pairs.append(
            (check_int(pair[0], f"{name} E", minimum=1), check_int(pair[1], f"{name} D", minimum=1))
        )
    _distinct(pairs, name, "[[32, 128]]")
    return tuple(pairs)


def _check_search_versions_list(value: Any, name: str) -> tuple[int, ...]:
    """MHA search versions, a non-empty subset of [1, 2]; MLP and RNN have only version 1."""
    versions = check_list(value, name, "[1, 2]")
    allowed = [1, 2] if name in ("search_versions", "search_versions.mha") else [1]
    if not versions or any(isinstance(v, bool) or v not in allowed for v in versions):
        if allowed == [1]:
            raise ValueError(
                f"{name}: search versions apply to setting mha only; the other settings have "
                f"only version 1, so {name} may only be [1]; got {versions!r}"
            )
        raise ValueError(f"{name} must be a non-empty subset of [1, 2], got {versions!r}")
    versions = [int(v) for v in versions]
    _distinct(versions, name, "[1, 2]")
    return tuple(versions)


def _per_setting_int(name: str, value: Any, settings: tuple[str, ...]) -> int | dict[str, int]:
    """An integer field, the same for every setting or a mapping setting -> integer.

    ``iterations`` and ``eval_every`` arrive here as mappings (an integer is spread over every
    setting first, as it always was); ``batch_size`` keeps an integer as given.
    """
    minimum = 0 if name == "iterations" else 1
    if isinstance(value, int) and not isinstance(value, bool):
        return check_int(value, name, minimum=minimum)
    if not isinstance(value, dict):
        raise TypeError(
            f"{name} must be an integer or a mapping setting -> integer, e.g. "
            f"{name}={{mlp: 2000, mha: 600, rnn: 500}}; got {value!r}"
        )
    unknown = sorted(str(k) for k in value if k not in SETTINGS)
    if unknown:
        raise ValueError(f"{name} has unknown settings {unknown}; allowed: {', '.join(SETTINGS)}")
    missing = [s for s in settings if s not in value]
    if missing:
        raise ValueError(f"{name} needs a value for settings {missing}, got {value}")
    return {s: check_int(v, f"{name}.{s}", minimum=minimum) for s, v in value.items()}


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
    (``iterations.mlp=2000``, ``num_rules.mlp=[2, 4, 32]``, ``lr_decay.start=0.8``); a key that the
    profile does not have is an error naming the known keys. A dotted key into a field given in
    its same-for-every-setting form (``num_rules: [2, 4]``, ``batch_size: 64``; absent: the
    field's default) first spreads that value over every setting (for ``search_versions``: over
    ``mha``, the one setting that has them), then replaces the named setting's value.
    """
    data = copy.deepcopy(data)
    items = (
        [parse_override(o) for o in overrides]
        if isinstance(overrides, list)
        else list(overrides.items())
    )
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(Profile)
        if f.default is not dataclasses.MISSING
    }
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
                    f"{', '.join(_MAPPING_FIELDS)}"
                )
            if head == "model_options":
                rest = canonical_name(rest, f"model in override {key!r}", MODEL_NAMES)
            if rest not in allowed:
                raise ValueError(
                    f"override {key!r}: unknown key {rest!r} of {head}; allowed: {', '.join(allowed)}"
                )
            if head in (*GRID_AXES, "batch_size"):
                target = data.get(head, defaults[head])
            else:
                target = data.get(head, {})
            if head == "budget" and isinstance(target, str):
                target = dataclasses.asdict(BUDGETS.get(target, EvalBudget()))
            if head == "lr_decay" and target is None:
                target = {}
            if isinstance(target, int) and head in PER_SETTING_INTS:
                target = dict.fromkeys(SETTINGS, target)
            if isinstance(target, list | tuple) and head in GRID_AXES:
                spread = ("mha",) if head == "search_versions" else SETTINGS
                target = {s: copy.deepcopy(list(target)) for s in spread}
            if not isinstance(target, dict):
                raise ValueError(f"override {key!r}: field {head!r} is not a mapping")
            target = dict(target)
            target[rest] = value
            data[head] = target
        else:
            data[head] = value
    return data


#: The fields that dotted overrides (``HEAD.KEY=VALUE``) reach into.
_MAPPING_FIELDS: tuple[str, ...] = (
    *PER_SETTING_INTS,
    *GRID_AXES,
    "lr_decay",
    "budget",
    "model_options",
)


def _nested_keys(head: str) -> tuple[str, ...] | None:
    """Keys a dotted override ``HEAD.KEY`` may name, or None if ``head`` is not a mapping field."""
    if head in (*PER_SETTING_INTS, *GRID_AXES):
        return SETTINGS
    if head == "lr_decay":
        return LR_DECAY_KEYS
    if head == "model_options":
        return MODEL_NAMES
    if head == "budget":
        return tuple(f.name for f in dataclasses.fields(EvalBudget))
    return None
