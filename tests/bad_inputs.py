"""A table of bad inputs over every public flag and public function, and their classification.

Each :class:`Case` is one bad input: a thunk that must fail with a *clear* error, i.e. a
``ValueError`` / ``TypeError`` / ``FileNotFoundError`` (or, for the command line, exit status 2 with
an ``error:`` line) whose message names ``field`` (the flag, parameter or column at fault). The
classes of outcome:

* ``clear``: the expected kind of error, naming the field;
* ``unclear``: the expected kind of error, but the message does not name the field;
* ``traceback``: any other exception (``KeyError``, ``OverflowError``, a yaml or torch error, ...);
* ``silent``: no error at all (the bad input was accepted).

``benchmarks/probe_bad_inputs.py`` runs every case and prints the counts; ``tests/test_bad_inputs.py``
asserts that every case is ``clear``. Cases are generated from small tables (flag -> bad values) so
that adding a flag or a function adds its bad inputs in one place.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLEAR_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError)
OUTCOMES: tuple[str, ...] = ("clear", "unclear", "traceback", "silent")


@dataclass(frozen=True)
class Case:
    """One bad input: ``run()`` must fail clearly, with a message that contains ``field``."""

    id: str
    field: str  # a word the message must contain (case-insensitive): the flag / argument at fault
    run: Callable[[], Any]


@dataclass(frozen=True)
class Outcome:
    case: Case
    kind: str  # one of OUTCOMES
    message: str


class CliExit(Exception):
    """The command line exited (status and what it printed on stderr)."""

    def __init__(self, status: int, stderr: str) -> None:
        super().__init__(stderr)
        self.status = status
        self.stderr = stderr


def run_cli(argv: list[str]) -> int:
    """Run ``python -m mod_arch_core ARGV`` in-process; raise :class:`CliExit` on a usage error."""
    from mod_arch_core.__main__ import main

    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            raise CliExit(code, err.getvalue()) from None
    if status != 0:
        raise CliExit(status, err.getvalue())
    return status


def names_field(field: str, text: str) -> bool:
    """Whether ``text`` names ``field``: as given, or as the argument name (``--num-rules`` and
    ``num_rules`` name the same thing)."""
    text = text.lower()
    bare = field.lower().lstrip("-")
    return any(f in text for f in {field.lower(), bare, bare.replace("-", "_")})


def classify(case: Case) -> Outcome:
    """Run ``case`` and classify what happened (see the module docstring)."""
    try:
        case.run()
    except CliExit as error:
        text = error.stderr.strip()
        if error.status == 2 and "error:" in text and "Traceback" not in text:
            named = names_field(case.field, text)
            return Outcome(case, "clear" if named else "unclear", text)
        return Outcome(case, "traceback", f"exit {error.status}: {text[-300:]}")
    except CLEAR_ERRORS as error:
        text = f"{type(error).__name__}: {error}"
        if type(error).__module__.startswith(("yaml", "torch", "pyarrow")):
            return Outcome(case, "traceback", text)
        named = names_field(case.field, str(error))
        return Outcome(case, "clear" if named else "unclear", text)
    except Exception as error:
        return Outcome(case, "traceback", f"{type(error).__name__}: {error}")
    return Outcome(case, "silent", "accepted")


# --------------------------------------------------------------------------------------
# Scratch space
# --------------------------------------------------------------------------------------

_SCRATCH: list[Path] = []


def scratch() -> Path:
    """A fresh temporary folder (removed by :func:`cleanup`)."""
    path = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    _SCRATCH.append(path)
    return path


def cleanup() -> None:
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


# --------------------------------------------------------------------------------------
# Command line: train
# --------------------------------------------------------------------------------------

#: A tiny valid ``train`` command; each case replaces one flag (trains in about a second when a bad
#: value is silently accepted).
TRAIN_BASE: dict[str, str] = {
    "--setting": "mlp",
    "--task": "regression",
    "--model": "modular",
    "--num-rules": "2",
    "--encoder-dim": "4",
    "--dim": "8",
    "--iterations": "2",
    "--eval-every": "1",
    "--eval-batches": "1",
    "--batch-size": "4",
    "--budget": "smoke",
    "--device": "cpu",
}

BIG = "99999999999999999999999"

#: flag -> bad values (each becomes a case); the flag's name must appear in the message.
TRAIN_BAD: dict[str, list[str]] = {
    "--setting": ["foo", "", "mlp2", "1"],
    "--task": ["regress", "", "0"],
    "--model": ["modullar", "", "mono", "modular-topk-entropy"],
    "--num-rules": ["1", "0", "-2", "abc", "2.5", "", BIG, "nan"],
    "--encoder-dim": ["0", "-1", "abc", "1.5", BIG],
    "--dim": ["0", "-8", "x", BIG],
    "--search-version": ["0", "3", "abc", "1.0"],
    "--data-seeds": ["-1", "a", "3-1", "0,0", "", BIG, "4294967296", "0-", "1--2"],
    "--seeds": ["-1", "b", "5-2", "1,1", "", BIG, "4294967296", "0-99999999999"],
    "--iterations": ["-1", "abc", "1e3", BIG],
    "--batch-size": ["0", "-4", "abc", BIG],
    "--lr": ["nan", "inf", "-inf", "-1", "0", "abc", "", "1e400"],
    "--lr-decay": [
        "0.8",
        "abc",
        "",
        "0.8,",
        "0.8,0.1,2",
        "1,0.1",
        "1.5,0.1",
        "-0.1,0.1",
        "0.8,0",
        "0.8,1.5",
        "0.8,-1",
        "nan,0.1",
        "0.8,inf",
        "0.8;0.1",
    ],
    "--eval-every": ["0", "-1", "abc"],
    "--eval-batches": ["0", "-1", "x"],
    "--budget": ["foo", "PAPER", ""],
    "--device": ["meta", "foo", "cuda:x", "cuda", "cuda:0", "cpu:0", "", "gpu", "mps"],
}

#: (extra/replaced flags, field) combinations that are bad only together.
TRAIN_BAD_COMBOS: list[tuple[str, dict[str, str], str]] = [
    ("search-version-2-mlp", {"--search-version": "2"}, "search-version"),
    ("search-version-2-rnn", {"--setting": "rnn", "--search-version": "2"}, "search-version"),
    ("modular-dim-not-multiple", {"--num-rules": "3", "--dim": "8"}, "dim"),
    ("mha-dim-not-multiple", {"--setting": "mha", "--num-rules": "3", "--dim": "8"}, "dim"),
    ("overlapping-seed-lists", {"--model": "monolithic", "--seeds": "0-3,2"}, "seeds"),
]

#: ``--option`` values (with the model) that are bad; field = the option or "option".
TRAIN_BAD_OPTIONS: list[tuple[str, str, str]] = [
    ("modular", "bogus=1", "bogus"),
    ("modular", "top_k=1", "top_k"),
    ("monolithic", "top_k=1", "top_k"),
    ("gt-modular", "balance_weight=0.1", "balance_weight"),
    ("modular-topk", "top_k=0", "top_k"),
    ("modular-topk", "top_k=-1", "top_k"),
    ("modular-topk", "top_k=abc", "top_k"),
    ("modular-topk", "top_k=1.5", "top_k"),
    ("modular-topk", "top_k=3", "top_k"),
    ("modular-topk", "top_k=true", "top_k"),
    ("modular-topk", "top_k=[1", "top_k"),
    ("modular-topk", "top_k", "top_k"),
    ("modular-topk", "=1", "option"),
    ("modular-top2", "top_k=1", "top_k"),
    ("modular", "balance_weight=-1", "balance_weight"),
    ("modular", "balance_weight=nan", "balance_weight"),
    ("modular", "balance_weight=abc", "balance_weight"),
    ("modular", "entropy_weight=inf", "entropy_weight"),
    ("modular-gumbel", "tau_start=0", "tau_start"),
    ("modular-gumbel", "tau_end=-1", "tau_end"),
    ("modular-gumbel", "tau_start=abc", "tau_start"),
    ("modular-gumbel", "tau_start=nan", "tau_start"),
]

_BASE_ARGV = [x for kv in TRAIN_BASE.items() for x in kv]
_REPRODUCE = ["--setting", "mlp", "--task", "regression", "--model", "modular", "--num-rules", "2"]
UNKNOWN_FLAGS: list[tuple[str, list[str], str]] = [
    ("train-bogus", ["train", *_BASE_ARGV, "--out", "x", "--bogus"], "--bogus"),
    ("train-typo", ["train", *_BASE_ARGV, "--out", "x", "--eval-evry", "3"], "--eval-evry"),
    ("train-missing-out", ["train", *_BASE_ARGV], "--out"),
    ("sweep-bogus", ["sweep", "--profile", "smoke", "--out", "x", "--bogus"], "--bogus"),
    ("no-command", ["trian"], "trian"),
    ("collect-bogus", ["collect", "x", "--bogus"], "--bogus"),
    ("reproduce-num-rules", ["reproduce", "x", *_REPRODUCE, "--num-rules", "1"], "--num-rules"),
    ("reproduce-model", ["reproduce", "x", *_REPRODUCE, "--model", "modullar"], "--model"),
    ("reproduce-device", ["reproduce", "x", *_REPRODUCE, "--device", "meta"], "--device"),
    ("reproduce-missing-folder", ["reproduce", "/nonexistent/r", *_REPRODUCE], "/nonexistent/r"),
]


def _train_argv(flags: dict[str, str], out: Path, extra: list[str] = ()) -> list[str]:
    argv = ["train"]
    for flag, value in flags.items():
        argv += [flag, value] if value is not None else []
    return [*argv, *extra, "--no-checkpoints", "--no-progress", "--out", str(out / "run")]


def train_cases() -> Iterator[Case]:
    for flag, values in TRAIN_BAD.items():
        for value in values:
            flags = {**TRAIN_BASE, flag: value}
            yield Case(
                f"train {flag}={value!r}",
                flag,
                lambda flags=flags: run_cli(_train_argv(flags, scratch())),
            )
    for name, changes, field in TRAIN_BAD_COMBOS:
        flags = {**TRAIN_BASE, **changes}
        yield Case(
            f"train {name}", field, lambda flags=flags: run_cli(_train_argv(flags, scratch()))
        )
    for model, option, field in TRAIN_BAD_OPTIONS:
        flags = {**TRAIN_BASE, "--model": model}
        yield Case(
            f"train --model {model} --option {option}",
            field,
            lambda flags=flags, option=option: run_cli(
                _train_argv(flags, scratch(), ["--option", option])
            ),
        )
    for name, argv, field in UNKNOWN_FLAGS:
        yield Case(f"cli {name}", field, lambda argv=argv: run_cli(list(argv)))


# --------------------------------------------------------------------------------------
# Command line: sweep (dry runs) and profiles
# --------------------------------------------------------------------------------------

#: ``--set`` overrides of the smoke profile that are bad; field = what the message must name.
SWEEP_BAD_SETS: list[tuple[str, str]] = [
    ("iterations.mpl=2000", "mpl"),
    ("eval_every.foo=3", "foo"),
    ("iterations.mlp.x=3", "iterations"),
    ("iterations.mlp=abc", "iterations"),
    ("iterations.mlp=-1", "iterations"),
    ("iterations=abc", "iterations"),
    ("iterations={mlp: 10}", "iterations"),
    ("iterations=[1, 2]", "iterations"),
    ("eval_every=0", "eval_every"),
    ("model_options={modullar: {top_k: 1}}", "modullar"),
    ("model_options={modular: {bogus: 1}}", "bogus"),
    ("models=[modular-topk, modular-gumbel] ; model_options={modular-topk: {top_k: 0}}", "top_k"),
    ("models=[modular-topk, modular-gumbel] ; model_options={modular-topk: {top_k: 9}}", "top_k"),
    (
        "models=[modular-topk, modular-gumbel] ; model_options={modular-gumbel: {tau_start: -1}}",
        "tau_start",
    ),
    ("model_options=[1]", "model_options"),
    ("model_options={modular: 1}", "model_options"),
    ("model_options.modullar={top_k: 1}", "modullar"),
    ("num_rules=4", "num_rules"),
    ("num_rules=[1]", "num_rules"),
    ("num_rules=[]", "num_rules"),
    ("num_rules=abc", "num_rules"),
    ("num_rules=[a]", "num_rules"),
    ("num_rules=[2.5]", "num_rules"),
    ("num_rules=null", "num_rules"),
    ("search_versions=abc", "search_versions"),
    ("search_versions=[3]", "search_versions"),
    ("search_versions=[1.5]", "search_versions"),
    ("search_versions=[]", "search_versions"),
    ("search_versions=2", "search_versions"),
    ("capacities=[8, 32]", "capacities"),
    ("capacities=[[8]]", "capacities"),
    ("capacities=[[0, 32]]", "capacities"),
    ("capacities=abc", "capacities"),
    # per-setting grids: a mapping setting -> list (profiles.GRID_AXES)
    ("num_rules={mlp: [2], mha: [2]}", "num_rules.rnn"),
    ("num_rules={mlp: [2], mha: [2], rnn: [2], cnn: [2]}", "cnn"),
    ("num_rules={mlp: [], mha: [2], rnn: [2]}", "num_rules.mlp"),
    ("num_rules={mlp: 4, mha: [2], rnn: [2]}", "num_rules.mlp"),
    ("num_rules={mlp: [a], mha: [2], rnn: [2]}", "num_rules.mlp"),
    ("num_rules={}", "num_rules"),
    ("num_rules=[2, 2]", "num_rules"),
    ("num_rules.mha=[1]", "num_rules.mha"),
    ("num_rules.mha=[]", "num_rules.mha"),
    ("num_rules.mha=4", "num_rules.mha"),
    ("num_rules.cnn=[2]", "cnn"),
    ("capacities={mlp: [[8, 32]], mha: [[8, 32]]}", "capacities.rnn"),
    ("capacities.mha=[[8]]", "capacities.mha"),
    ("capacities.rnn=[[8, 0]]", "capacities.rnn"),
    ("capacities.mlp=[]", "capacities.mlp"),
    ("search_versions={mha: [3]}", "search_versions.mha"),
    ("search_versions={mlp: [1]}", "search_versions.mha"),
    ("search_versions={mha: [1], mlp: [2]}", "search_versions.mlp"),
    ("search_versions.mha=[1, 1]", "search_versions.mha"),
    ("batch_size={mlp: 8, mha: 8}", "batch_size"),
    ("batch_size.mlp=0", "batch_size.mlp"),
    ("batch_size.cnn=8", "cnn"),
    (
        "models=[modular-topk, gt-modular] ; model_options={modular-topk: {top_k: 3}} ; "
        "num_rules={mlp: [4], mha: [2], rnn: [4]}",
        "top_k",
    ),
    # the lr decay (a deviation from spec §4): {start in [0, 1), factor in (0, 1]}
    ("lr_decay=0.8", "lr_decay"),
    ("lr_decay=[0.8, 0.1]", "lr_decay"),
    ("lr_decay={start: 0.8}", "lr_decay.factor"),
    ("lr_decay.start=0.8", "lr_decay.factor"),
    ("lr_decay={start: 1.0, factor: 0.1}", "lr_decay.start"),
    ("lr_decay={start: -0.1, factor: 0.1}", "lr_decay.start"),
    ("lr_decay={start: abc, factor: 0.1}", "lr_decay.start"),
    ("lr_decay={start: 0.8, factor: 0}", "lr_decay.factor"),
    ("lr_decay={start: 0.8, factor: 1.5}", "lr_decay.factor"),
    ("lr_decay={start: 0.8, factor: .nan}", "lr_decay.factor"),
    ("lr_decay={start: 0.8, factor: 0.1, shape: cos}", "shape"),
    ("lr_decay.shape=cos", "shape"),
    ("seeds=[-1]", "seeds"),
    ("seeds=[0, 0]", "seeds"),
    ("seeds=abc", "seeds"),
    ("seeds=[4294967296]", "seeds"),
    ("data_seeds=[a]", "data_seeds"),
    ("data_seeds=3", "data_seeds"),
    ("settings=mlp", "settings"),
    ("settings=[foo]", "settings"),
    ("settings=[]", "settings"),
    ("tasks=[regress]", "tasks"),
    ("models=[modullar]", "models"),
    ("models=modular", "models"),
    ("eval_batches=0", "eval_batches"),
    ("eval_batches=abc", "eval_batches"),
    ("batch_size=0", "batch_size"),
    ("batch_size=abc", "batch_size"),
    ("batch_size=2.5", "batch_size"),
    ("seq_len=0", "seq_len"),
    ("seq_len=1", "seq_len"),
    ("lr=0", "lr"),
    ("lr=-1", "lr"),
    ("lr=nan", "lr"),
    ("lr=.inf", "lr"),
    ("lr=abc", "lr"),
    ("budget=foo", "budget"),
    ("budget={bogus: 1}", "bogus"),
    ("budget=[1]", "budget"),
    ("description=[1]", "description"),
    ("name=[1]", "name"),
    ("bogus=1", "bogus"),
    ("num_rule=[2]", "num_rule"),
    ("num_rules=[2,", "num_rules"),
    ("lr={", "lr"),
    ("noequals", "noequals"),
    ("=1", "override"),
]

SWEEP_BAD_FLAGS: list[tuple[list[str], str]] = [
    (["--shard", "a"], "shard"),
    (["--shard", "1/0"], "shard"),
    (["--shard", "5/4"], "shard"),
    (["--shard", "-1/2"], "shard"),
    (["--shard", "0/4/2"], "shard"),
    (["--workers", "0"], "--workers"),
    (["--workers", "abc"], "--workers"),
    (["--executor", "threads"], "--executor"),
    (["--cluster", "pbs"], "--cluster"),
    (["--slurm", "mem_gb"], "--slurm"),
    (["--slurm", "=8"], "--slurm"),
    (["--slurm", "mem gb=8"], "--slurm"),
    (["--slurm", "mem_gb=[8"], "--slurm"),
    (["--slurm", "mem_gb=8"], "--slurm"),  # without --executor submitit
    (["--device", "meta"], "device"),
    (["--device", "foo"], "device"),
    (["--device", "cuda"], "device"),
]

BAD_PROFILE_FILES: dict[str, tuple[str, str]] = {
    # file name -> (contents, field the message must name)
    "syntax.yaml": ("num_rules: [2, 4\nseeds: [0]\n", "syntax.yaml"),
    "tabs.yaml": ("settings:\n\t- mlp\n", "tabs.yaml"),
    "list.yaml": ("- 1\n- 2\n", "list.yaml"),
    "empty.yaml": ("", "empty.yaml"),
    "unknown.yaml": ("description: x\nbogus_field: 1\n", "bogus_field"),
    "badvalue.yaml": ("description: x\nnum_rules: [1]\n", "num_rules"),
    "duplicate.yaml": ("description: x\nnum_rules: [2]\nnum_rules: [4]\n", "num_rules"),
}


def _sweep(extra: list[str], profile: str = "smoke") -> int:
    return run_cli(
        ["sweep", "--profile", profile, "--out", str(scratch() / "s"), "--dry-run", *extra]
    )


def sweep_cases() -> Iterator[Case]:
    for text, field in SWEEP_BAD_SETS:  # " ; " separates several --set of one case
        sets = [x for part in text.split(" ; ") for x in ("--set", part)]
        yield Case(f"sweep --set {text}", field, lambda sets=sets: _sweep(sets))
    for extra, field in SWEEP_BAD_FLAGS:
        yield Case(f"sweep {' '.join(extra)}", field, lambda extra=extra: _sweep(list(extra)))
    yield Case("sweep --profile smok", "smoke", lambda: _sweep([], "smok"))
    yield Case("sweep --profile ''", "profile", lambda: _sweep([], ""))
    yield Case("sweep --profile missing.yaml", "missing.yaml", lambda: _sweep([], "missing.yaml"))
    for name, (text, field) in BAD_PROFILE_FILES.items():

        def run(name: str = name, text: str = text) -> int:
            path = scratch() / name
            path.write_text(text)
            return _sweep([], str(path))

        yield Case(f"sweep --profile {name}", field, run)
    yield Case(
        "collect missing folder", "collect", lambda: run_cli(["collect", str(scratch() / "nope")])
    )
    yield Case(
        "collect --profile smok",
        "smok",
        lambda: run_cli(["collect", str(scratch()), "--profile", "smok"]),
    )


def profile_function_cases() -> Iterator[Case]:
    from mod_arch_core import profiles

    yield Case("load_profile(3)", "profile", lambda: profiles.load_profile(3))
    yield Case("load_profile overrides=5", "overrides", lambda: profiles.load_profile("smoke", 5))
    yield Case(
        "load_profile overrides=[1]", "override", lambda: profiles.load_profile("smoke", [1])
    )
    yield Case(
        "apply_overrides {iterations.mpl: 1}",
        "mpl",
        lambda: profiles.load_profile("smoke", {"iterations.mpl": 1}),
    )
    yield Case("parse_override(3)", "override", lambda: profiles.parse_override(3))


# --------------------------------------------------------------------------------------
# Library functions: metrics
# --------------------------------------------------------------------------------------

_U3 = np.full((3, 3), 1 / 9)
#: Bad matrices P: every P metric gets each one.
BAD_P: dict[str, Any] = {
    "negative": np.array([[0.6, -0.1], [0.25, 0.25]]),
    "nan": np.array([[np.nan, 0.25], [0.25, 0.25]]),
    "inf": np.array([[np.inf, 0.25], [0.25, 0.25]]),
    "zeros": np.zeros((2, 2)),
    "not-square": np.full((2, 3), 1 / 6),
    "1x1": np.ones((1, 1)),
    "vector": np.full(4, 0.25),
    "strings": [["a", "b"], ["c", "d"]],
    "ragged": [[0.5], [0.25, 0.25]],
    "bool": np.eye(2, dtype=bool),
    "none": None,
}

#: Bad (scores, rules, num_rules) for activation_matrix / ActivationAccumulator.update.
_GOOD_SCORES = np.full((4, 3), 1 / 3)
_GOOD_RULES = np.array([0, 1, 2, 0])
BAD_ACTIVATION: dict[str, tuple[Any, Any, Any, str]] = {
    "negative-scores": (np.array([[1.5, -0.5, 0.0]] * 4), _GOOD_RULES, 3, "scores"),
    "scores-above-one": (np.array([[2.0, 0.0, 0.0]] * 4), _GOOD_RULES, 3, "scores"),
    "inf-scores": (np.array([[np.inf, 0.0, 0.0]] * 4), _GOOD_RULES, 3, "scores"),
    "wrong-R": (_GOOD_SCORES, _GOOD_RULES, 4, "scores"),
    "rules-out-of-range": (_GOOD_SCORES, np.array([0, 1, 2, 3]), 3, "rules"),
    "negative-rules": (_GOOD_SCORES, np.array([0, 1, 2, -1]), 3, "rules"),
    "float-rules": (_GOOD_SCORES, np.array([0.0, 1.0, 2.0, 0.0]), 3, "rules"),
    "rules-shape": (_GOOD_SCORES, np.array([0, 1, 2]), 3, "rules"),
    "missing-rule": (_GOOD_SCORES, np.array([0, 1, 0, 1]), 3, "rule"),
    "num_rules-1": (np.ones((4, 1)), np.zeros(4, dtype=int), 1, "num_rules"),
    "num_rules-str": (_GOOD_SCORES, _GOOD_RULES, "3", "num_rules"),
    "num_rules-float": (_GOOD_SCORES, _GOOD_RULES, 3.0, "num_rules"),
    "string-scores": ([["a", "b", "c"]] * 4, _GOOD_RULES, 3, "scores"),
    "scalar-scores": (0.5, 0, 3, "scores"),
}

_P2 = np.array([0.5, 0.5])
#: Bad (p, q) pairs for adaptation_score; field names the argument at fault.
BAD_ADAPTATION: dict[str, tuple[Any, Any, str]] = {
    "negative-q": ([0.7, 0.3], [1.2, -0.2], "q"),
    "negative-p": ([1.2, -0.2], [0.5, 0.5], "p"),
    "q-not-summing-to-1": ([0.7, 0.3], [0.5, 0.1], "q"),
    "p-not-summing-to-1": ([3.0, 1.0], [0.5, 0.5], "p"),
    "q-above-1": ([0.7, 0.3], [2.0, 0.0], "q"),
    "nan-q": ([0.7, 0.3], [np.nan, 0.5], "q"),
    "inf-p": ([np.inf, 0.3], [0.5, 0.5], "p"),
    "shape-mismatch": ([0.7, 0.3], [1 / 3] * 3, "q"),
    "scalar": (0.5, 0.5, "p"),
    "strings": (["a", "b"], _P2, "p"),
    "none-q": (_P2, None, "q"),
}


def metric_cases() -> Iterator[Case]:
    from mod_arch_core import metrics as M

    p_functions = {
        "normalise": M.normalise,
        "collapse_avg": M.collapse_avg,
        "collapse_worst": M.collapse_worst,
        "alignment": M.alignment,
        "mutual_information": M.mutual_information,
        "inverse_mutual_information": M.inverse_mutual_information,
        "all_metrics": M.all_metrics,
    }
    for fname, function in p_functions.items():
        for pname, value in BAD_P.items():
            yield Case(f"metrics.{fname}(P={pname})", "P", lambda f=function, v=value: f(v))
    for name, (scores, rules, r, field) in BAD_ACTIVATION.items():
        yield Case(
            f"metrics.activation_matrix({name})",
            field,
            lambda s=scores, c=rules, r=r: M.activation_matrix(s, c, r),
        )

        def accumulate(s: Any = scores, c: Any = rules, r: Any = r) -> Any:
            acc = M.ActivationAccumulator(r)
            acc.update(s, c)
            return acc.matrix()

        yield Case(f"metrics.ActivationAccumulator({name})", field, accumulate)
    yield Case(
        "ActivationAccumulator(num_runs=0)",
        "num_runs",
        lambda: M.ActivationAccumulator(3, num_runs=0),
    )
    yield Case(
        "ActivationAccumulator stacked, wrong runs",
        "num_runs",
        lambda: M.ActivationAccumulator(3, num_runs=2).update(
            np.full((3, 4, 3), 1 / 3), np.zeros(4, dtype=int)
        ),
    )
    yield Case(
        "ActivationAccumulator.mean_scores empty",
        "no examples",
        lambda: M.ActivationAccumulator(3).mean_scores(),
    )
    for name, (p, q, field) in BAD_ADAPTATION.items():
        yield Case(
            f"metrics.adaptation_score({name})", field, lambda p=p, q=q: M.adaptation_score(p, q)
        )
    draws = M.dirichlet_draws(2, 3)
    yield Case(
        "adaptation_from_marginals negative q",
        "q",
        lambda: M.adaptation_from_marginals(draws, np.array([[1.5, -0.5]] * 3)),
    )
    yield Case(
        "adaptation_from_marginals q sums to 2",
        "q",
        lambda: M.adaptation_from_marginals(draws, np.ones((3, 2))),
    )
    yield Case(
        "adaptation_from_marginals bad draws",
        "draws",
        lambda: M.adaptation_from_marginals(-draws, draws),
    )
    yield Case(
        "adaptation_from_marginals shape",
        "q_per_draw",
        lambda: M.adaptation_from_marginals(draws, draws[:2]),
    )
    yield Case("adaptation_static negative q", "q", lambda: M.adaptation_static([1.5, -0.5], 2))
    yield Case("adaptation_static q sums to 3", "q", lambda: M.adaptation_static([1.0, 2.0], 2))
    yield Case("adaptation_static R=1", "num_rules", lambda: M.adaptation_static(None, 1))
    yield Case(
        "adaptation_static num_draws=0", "num_draws", lambda: M.adaptation_static(None, 2, 0)
    )
    yield Case("dirichlet_draws R=1", "num_rules", lambda: M.dirichlet_draws(1))
    yield Case("dirichlet_draws num_draws=0", "num_draws", lambda: M.dirichlet_draws(2, 0))
    yield Case("dirichlet_draws num_draws=1.5", "num_draws", lambda: M.dirichlet_draws(2, 1.5))
    yield Case("random_baseline R=1", "num_rules", lambda: M.random_baseline(1))
    yield Case("random_baseline R='4'", "num_rules", lambda: M.random_baseline("4"))
    yield Case("random_baseline num_draws=-1", "num_draws", lambda: M.random_baseline(2, -1))
    yield Case(
        "regression_loss shapes", "shape", lambda: M.regression_loss(np.zeros(3), np.zeros(4))
    )
    yield Case("regression_loss empty", "empty", lambda: M.regression_loss([], []))
    yield Case("regression_loss strings", "pred", lambda: M.regression_loss(["a"], [1.0]))
    yield Case("regression_loss string target", "target", lambda: M.regression_loss([1.0], ["a"]))
    yield Case(
        "regression_loss per_run 0-d", "per_run", lambda: M.regression_loss(1.0, 1.0, per_run=True)
    )
    yield Case("classification_error labels", "target", lambda: M.classification_error([1.0], [2]))
    yield Case(
        "classification_error string logits",
        "logits",
        lambda: M.classification_error(["a"], [1]),
    )
    yield Case("performance task", "task", lambda: M.performance([1.0], [1.0], "regress"))
    yield Case("performance task None", "task", lambda: M.performance([1.0], [1.0], None))
    yield Case("higher_is_better task", "task", lambda: M.higher_is_better("foo"))


# --------------------------------------------------------------------------------------
# Library functions: models, data, training config, results, book
# --------------------------------------------------------------------------------------

_MODEL_ARGS = {
    "setting": "mlp",
    "model": "modular",
    "num_rules": 2,
    "encoder_dim": 4,
    "dim": 8,
    "task": "regression",
}

BAD_BUILD: list[tuple[str, dict[str, Any], str]] = [
    ("setting", {"setting": "foo"}, "setting"),
    ("model", {"model": "modullar"}, "model"),
    ("num_rules=1", {"num_rules": 1}, "num_rules"),
    ("num_rules=2.0", {"num_rules": 2.0}, "num_rules"),
    ("encoder_dim=0", {"encoder_dim": 0}, "encoder_dim"),
    ("dim=0", {"dim": 0}, "dim"),
    ("dim not multiple", {"num_rules": 3, "dim": 8}, "dim"),
    ("task", {"task": "regress"}, "task"),
    ("num_runs=0", {"num_runs": 0}, "num_runs"),
    ("seeds length", {"num_runs": 2, "seeds": [0]}, "seeds"),
    ("seeds negative", {"seeds": [-1]}, "seeds"),
    ("seeds huge", {"seeds": [2**64]}, "seeds"),
    ("search_version=3", {"setting": "mha", "search_version": 3}, "search_version"),
    ("state_dim=0", {"setting": "rnn", "state_dim": 0}, "state_dim"),
    ("device foo", {"device": "foo"}, "device"),
    ("option unknown", {"bogus": 1}, "bogus"),
    ("option top_k=0", {"model": "modular-topk", "top_k": 0}, "top_k"),
    ("option top_k>R", {"model": "modular-topk", "top_k": 3}, "top_k"),
    ("option balance nan", {"balance_weight": float("nan")}, "balance_weight"),
    ("option fixed", {"model": "modular-top2", "top_k": 1}, "top_k"),
]

BAD_TRAIN_CONFIG: list[tuple[str, dict[str, Any], str]] = [
    ("seeds huge", {"seeds": (2**70,)}, "seeds"),
    ("seeds 2**32", {"seeds": (2**32,)}, "seeds"),
    ("data_seeds 2**32", {"data_seeds": (2**32,)}, "data_seeds"),
    ("seeds str", {"seeds": "0"}, "seeds"),
    ("seeds empty", {"seeds": ()}, "seeds"),
    ("lr nan", {"lr": math.nan}, "lr"),
    ("lr str", {"lr": "0.1"}, "lr"),
    ("lr_decay start 1", {"lr_decay": {"start": 1.0, "factor": 0.1}}, "lr_decay.start"),
    ("lr_decay factor 0", {"lr_decay": {"start": 0.5, "factor": 0.0}}, "lr_decay.factor"),
    ("lr_decay factor nan", {"lr_decay": {"start": 0.5, "factor": math.nan}}, "lr_decay.factor"),
    ("lr_decay missing", {"lr_decay": {"start": 0.5}}, "lr_decay.factor"),
    ("lr_decay unknown", {"lr_decay": {"start": 0.5, "factor": 0.1, "warmup": 3}}, "warmup"),
    ("lr_decay float", {"lr_decay": 0.5}, "lr_decay"),
    ("device meta", {"device": "meta"}, "device"),
    ("device foo", {"device": "foo"}, "device"),
    ("device cuda:x", {"device": "cuda:x"}, "device"),
    ("device int", {"device": 0}, "device"),
    ("model unknown", {"model": "modullar"}, "model"),
    ("model_options unknown", {"model_options": {"bogus": 1}}, "bogus"),
    ("model_options not dict", {"model_options": [1]}, "model_options"),
    ("model_options top_k=0", {"model": "modular-topk", "model_options": {"top_k": 0}}, "top_k"),
    ("search_version 2 mlp", {"search_version": 2}, "search_version"),
    ("search_version True", {"setting": "mha", "search_version": True}, "search_version"),
    ("grad_clip -1", {"grad_clip": -1.0}, "grad_clip"),
    ("grad_clip str", {"grad_clip": "none"}, "grad_clip"),
    ("iterations 1.5", {"iterations": 1.5}, "iterations"),
    ("batch_size 0", {"batch_size": 0}, "batch_size"),
    ("num_rules 1", {"num_rules": 1}, "num_rules"),
    ("state_dim 0", {"setting": "rnn", "state_dim": 0}, "state_dim"),
]


def library_cases() -> Iterator[Case]:
    from mod_arch_core import book, data, models, results, sweep, training

    for name, changes, field in BAD_BUILD:
        kwargs = {**_MODEL_ARGS, **changes}
        yield Case(f"models.build_model({name})", field, lambda kw=kwargs: models.build_model(**kw))
    for name, changes, field in BAD_TRAIN_CONFIG:
        kwargs = {
            "setting": "mlp",
            "task": "regression",
            "model": "modular",
            "num_rules": 2,
            **changes,
        }
        yield Case(
            f"training.TrainConfig({name})", field, lambda kw=kwargs: training.TrainConfig(**kw)
        )
    for device in ("meta", "foo", "cuda:x", "cuda" if not _cuda() else "cuda:99"):
        yield Case(
            f"training.resolve_device({device})",
            "device",
            lambda d=device: training.resolve_device(d),
        )
    for name, kwargs, field in [
        ("setting", {"setting": "foo"}, "setting"),
        ("task", {"task": "foo"}, "task"),
        ("num_rules", {"num_rules": 1}, "num_rules"),
        ("data_seed -1", {"data_seed": -1}, "data_seed"),
        ("data_seed 2**32", {"data_seed": 2**32}, "data_seed"),
        ("search_version mlp", {"search_version": 2}, "search_version"),
        ("search_version 3", {"setting": "mha", "search_version": 3}, "search_version"),
    ]:
        kw = {"setting": "mlp", "task": "regression", "num_rules": 2, "data_seed": 0, **kwargs}
        yield Case(f"data.make_task({name})", field, lambda kw=kw: data.make_task(**kw))
    for text in ("a", "1/0", "2/2", "-1/3", "1/2/3", ""):
        yield Case(f"sweep.parse_shard({text!r})", "shard", lambda t=text: sweep.parse_shard(t))

    # results.load on damaged folders
    for name, damage, field in RESULTS_DAMAGE:
        yield Case(
            f"results.load({name})",
            field,
            lambda damage=damage: results.load(damaged_results(damage)),
        )
    yield Case("results.load(missing)", "missing", lambda: results.load(scratch() / "nope"))

    # book: the papermill runner refuses an unknown parameter before executing anything
    yield Case(
        "book.execute_notebooks(num_rule=8)",
        "num_rule",
        lambda: book.execute_notebooks(
            ["03_metrics"], {"num_rule": 8}, out_dir=scratch(), profile="smoke", verbose=False
        ),
    )
    yield Case(
        "book.execute_notebooks(declared_only bogus)",
        "bogus",
        lambda: book.execute_notebooks(
            ["03_metrics"],
            out_dir=scratch(),
            profile="smoke",
            verbose=False,
            declared_only={"bogus": 1},
        ),
    )
    yield Case(
        "book.execute_notebooks(profile)",
        "profile",
        lambda: book.execute_notebooks(["03"], out_dir=scratch(), profile="quick", verbose=False),
    )
    yield Case("book.find_notebooks(99)", "99", lambda: book.find_notebooks(["99_nope"], ROOT))
    yield Case("book.parse_param(noequals)", "noequals", lambda: book.parse_param("noequals"))
    yield Case("book.parse_param(bad yaml)", "x", lambda: book.parse_param("x=[1"))
    yield Case(
        "book.main(--param typo)",
        "num_rule",
        lambda: _book_main_raises(
            ["execute", "--only", "03_metrics", "--profile", "smoke", "--param", "num_rule=8"]
        ),
    )


def _book_main_raises(argv: list[str]) -> None:
    from mod_arch_core import book

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = book.main([*argv])
    if status != 0:
        raise ValueError(err.getvalue())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# Damaged results folders: (name, damage(runs, curves, meta) -> (runs, curves, meta), field).
def _drop_perf(runs, curves, meta):
    return runs.drop(columns=["perf"]), curves, meta


def _drop_rows(runs, curves, meta):
    return runs.iloc[:-2], curves, meta


def _drop_curve_rows(runs, curves, meta):
    return runs, curves.iloc[:-1], meta


def _drop_curve_perf(runs, curves, meta):
    return runs, curves.drop(columns=["perf_val"]), meta


def _drop_meta_rows(runs, curves, meta):
    return runs, curves, {k: v for k, v in meta.items() if k != "rows"}


def _string_perf(runs, curves, meta):
    runs = runs.copy()
    runs["perf"] = "x"
    return runs, curves, meta


RESULTS_DAMAGE: list[tuple[str, Callable[..., Any], str]] = [
    ("dropped perf column", _drop_perf, "perf"),
    ("fewer runs rows than meta.json", _drop_rows, "rows"),
    ("fewer curve rows than meta.json", _drop_curve_rows, "rows"),
    ("dropped curves perf_val column", _drop_curve_perf, "perf_val"),
    ("meta.json without row counts", _drop_meta_rows, "rows"),
    ("perf column of strings", _string_perf, "perf"),
]

_TEMPLATE: dict[str, Any] = {}


def _template_results() -> Path:
    """A small valid results folder (a 2-run smoke training), made once per process."""
    if "path" not in _TEMPLATE:
        from mod_arch_core.evaluation import named_budget
        from mod_arch_core.experiment import run_experiment, save_experiment
        from mod_arch_core.training import TrainConfig

        config = TrainConfig(
            "mlp",
            "regression",
            "modular",
            2,
            encoder_dim=4,
            dim=8,
            seeds=(0, 1),
            iterations=2,
            eval_every=1,
            eval_batches=1,
            batch_size=4,
            device="cpu",
        )
        output = run_experiment(config, named_budget("smoke"), progress=False)
        path = Path(tempfile.mkdtemp(prefix="bad-inputs-template-")) / "results"
        save_experiment(output, path, checkpoints=False)
        _TEMPLATE["path"] = path
    return _TEMPLATE["path"]


def damaged_results(damage: Callable[..., Any]) -> Path:
    """A copy of the template results folder with ``damage`` applied and checksums refreshed."""
    import pandas as pd

    from mod_arch_core import results

    source = _template_results()
    target = scratch() / "damaged"
    shutil.copytree(source, target)
    runs = pd.read_parquet(target / results.RUNS_FILE)
    curves = pd.read_parquet(target / results.CURVES_FILE)
    meta = json.loads((target / results.META_FILE).read_text())
    runs, curves, meta = damage(runs, curves, meta)
    runs.to_parquet(target / results.RUNS_FILE)
    curves.to_parquet(target / results.CURVES_FILE)
    meta["sha256"] = {
        results.RUNS_FILE: results.sha256(target / results.RUNS_FILE),
        results.CURVES_FILE: results.sha256(target / results.CURVES_FILE),
    }
    (target / results.META_FILE).write_text(json.dumps(meta))
    return target


def analysis_cases() -> Iterator[Case]:
    import pandas as pd

    from mod_arch_core import analysis

    runs = pd.DataFrame({"checkpoint": ["last", "best"], "perf": [1.0, 2.0]})
    for value in ("foo", None, 3, "LAST"):
        yield Case(
            f"analysis.check_checkpoint({value!r})",
            "checkpoint",
            lambda v=value: analysis.check_checkpoint(v),
        )
    yield Case(
        "analysis.select_checkpoint(list)", "runs", lambda: analysis.select_checkpoint([1, 2])
    )
    yield Case(
        "analysis.select_checkpoint(no column)",
        "checkpoint",
        lambda: analysis.select_checkpoint(runs.drop(columns=["checkpoint"])),
    )
    for name, kwargs, field in [
        ("confidence 1.5", {"confidence": 1.5}, "confidence"),
        ("confidence nan", {"confidence": math.nan}, "confidence"),
        ("confidence str", {"confidence": "a"}, "confidence"),
        ("num_resamples 0", {"num_resamples": 0}, "num_resamples"),
        ("num_resamples 1.5", {"num_resamples": 1.5}, "num_resamples"),
        ("seed -1", {"seed": -1}, "seed"),
    ]:
        yield Case(
            f"analysis.bootstrap_ci({name})",
            field,
            lambda kw=kwargs: analysis.bootstrap_ci([1.0, 2.0, 3.0], **kw),
        )
    yield Case(
        "analysis.bootstrap_ci(strings)", "values", lambda: analysis.bootstrap_ci(["a", "b"])
    )


def all_cases() -> list[Case]:
    """Every bad input of the table, in a fixed order."""
    return [
        *train_cases(),
        *sweep_cases(),
        *profile_function_cases(),
        *metric_cases(),
        *library_cases(),
        *analysis_cases(),
    ]
