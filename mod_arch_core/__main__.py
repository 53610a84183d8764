"""Command line: ``python -m mod_arch_core {train, ...} --help``.

``train`` trains one configuration for every (data seed, model seed) pair in one stacked
computation, evaluates the ``last`` and ``best`` checkpoints and writes a results folder
(``runs.parquet``, ``curves.parquet``, ``meta.json``, safetensors checkpoints).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from mod_arch_core.model_names import MODEL_NAMES, check_option_names
from mod_arch_core.validation import (
    MAX_SEEDS,
    MAX_SIZE,
    PAPER_MODELS,
    SEED_LIMIT,
    SETTINGS,
    TASKS,
    check_device_name,
    check_lr_decay,
    parse_key_value,
)


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse ``"0-4"``, ``"0,2,5"`` or ``"1"`` into a tuple of distinct seeds in ``[0, 2**32)``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError
                if high >= SEED_LIMIT or low < 0:
                    raise argparse.ArgumentTypeError(
                        f"seeds must lie in [0, 2**32 = {SEED_LIMIT}), got {text!r}"
                    )
                if high - low + 1 + len(seeds) > MAX_SEEDS:
                    raise argparse.ArgumentTypeError(
                        f"at most {MAX_SEEDS} seeds per list, got {text!r}"
                    )
                seeds.extend(range(low, high + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid seed list {text!r}: use a range '0-4', a list '0,2,5' or one seed '3'"
        ) from None
    if any(s < 0 or s >= SEED_LIMIT for s in seeds):
        raise argparse.ArgumentTypeError(
            f"seeds must lie in [0, 2**32 = {SEED_LIMIT}), got {text!r}"
        )
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    if len(seeds) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS} seeds per list, got {len(seeds)}")
    return tuple(seeds)


def _int_at_least(minimum: int, name: str, maximum: int = MAX_SIZE):
    """argparse type: an integer in ``[minimum, maximum]``; messages name ``name`` and the bounds."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be <= {maximum}, got {value}")
        return value

    return parse


def _name(allowed: Sequence[str]):
    def parse(text: str) -> str:
        key = text.strip().lower().replace("_", "-")
        if key not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
        return key

    return parse


def _lr(text: str) -> float:
    """argparse type for ``--lr``: a finite number > 0 (``nan``, ``inf``, ``0``, ``-1`` refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"lr must be a finite number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"lr must be a finite number > 0, got {text!r}")
    return value


def _lr_decay(text: str) -> dict[str, float]:
    """argparse type for ``--lr-decay START,FACTOR``: start in [0, 1), factor in (0, 1]."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        start, factor = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"lr_decay must be START,FACTOR (two numbers), e.g. 0.8,0.1; got {text!r}"
        ) from None
    try:
        decay = check_lr_decay({"start": start, "factor": factor}, "lr_decay")
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    assert decay is not None
    return decay


def _device(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked without torch)."""
    try:
        return check_device_name(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None


def _slurm_parameter(text: str) -> tuple[str, Any]:
    """argparse type: one ``KEY=VALUE`` submitit parameter (a Python identifier as key)."""
    try:
        key, value = parse_key_value(text, what="--slurm", example="slurm_partition=gpu")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"--slurm key {key!r} is not a submitit parameter name (letters, digits, _), e.g. "
            "slurm_partition=gpu, timeout_min=120, mem_gb=8"
        )
    return key, value


def _option(text: str) -> tuple[str, Any]:
    """argparse type: one ``KEY=VALUE`` routing option, the value read as YAML."""
    try:
        return parse_key_value(text, what="--option", example="top_k=2")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _model_names() -> tuple[str, ...]:
    """Every model name, from the torch-free :mod:`mod_arch_core.model_names`."""
    return MODEL_NAMES


def _check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across ``train`` flags, done before torch is imported (usage errors, exit 2)."""
    if args.search_version != 1 and args.setting != "mha":
        parser.error(
            f"argument --search-version: applies to --setting mha only; got "
            f"--search-version {args.search_version} with --setting {args.setting}"
        )
    options: dict[str, Any] = {}
    for key, value in args.options:
        if key in options:
            parser.error(f"argument --option: {key} is given twice")
        options[key] = value
    try:
        check_option_names(args.model, options)
    except ValueError as error:
        parser.error(f"argument --option: {error}")
    args.options = options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mod_arch_core",
        description="Train, evaluate and sweep the models of 'Is a Modular Architecture Enough?'.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = commands.add_parser(
        "train",
        help="train one configuration for many seeds at once and evaluate it",
        description="Train one configuration (setting, task, model, rules, capacity) for every "
        "(data seed, model seed) pair in one stacked computation, evaluate the last and best "
        "checkpoints (performance, P, collapse, specialisation) and write a results folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument(
        "--setting",
        required=True,
        type=_name(SETTINGS),
        help=f"architecture: {', '.join(SETTINGS)}",
    )
    t.add_argument(
        "--task", required=True, type=_name(TASKS), help=f"task type: {', '.join(TASKS)}"
    )
    t.add_argument(
        "--model",
        required=True,
        type=_name(_model_names()),
        help=f"model: {', '.join(_model_names())}",
    )
    t.add_argument(
        "--num-rules",
        required=True,
        type=_int_at_least(2, "num_rules"),
        help="R, number of rules = number of modules (>= 2)",
    )
    t.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        type=_option,
        metavar="KEY=VALUE",
        help="routing option of the model (YAML value), e.g. top_k=2, balance_weight=0.1, "
        "entropy_weight=0.01, tau_start=2.0 (repeatable; see models.registry.MODELS)",
    )
    t.add_argument(
        "--encoder-dim",
        type=_int_at_least(1, "encoder_dim"),
        default=32,
        help="E: MLP encoder / MHA token width / RNN encoder width",
    )
    t.add_argument(
        "--dim",
        type=_int_at_least(1, "dim"),
        default=128,
        help="D (= 4E on the paper grid): MLP width / MHA attention width / LSTM hidden",
    )
    t.add_argument(
        "--search-version",
        type=_int_at_least(1, "search_version"),
        choices=(1, 2),
        default=1,
        help="MHA only: 1 nearest scalar query, 2 cosine",
    )
    t.add_argument(
        "--data-seeds", type=parse_seeds, default=(0,), help="task seeds, e.g. 0-4 or 0,3"
    )
    t.add_argument(
        "--seeds",
        type=parse_seeds,
        default=(0,),
        help="model seeds (weights and data stream), e.g. 0-4",
    )
    t.add_argument(
        "--iterations",
        type=_int_at_least(0, "iterations"),
        default=None,
        help="optimizer steps (default: the paper's 100k MLP, 500k MHA/RNN)",
    )
    t.add_argument(
        "--batch-size",
        type=_int_at_least(1, "batch_size"),
        default=256,
        help="examples or sequences per step",
    )
    t.add_argument("--lr", type=_lr, default=1e-4, help="Adam learning rate (> 0)")
    t.add_argument(
        "--lr-decay",
        type=_lr_decay,
        default=None,
        metavar="START,FACTOR",
        help="decay the lr (cosine) from fraction START of the steps to FACTOR x lr at the last "
        "step, e.g. 0.8,0.1; START in [0, 1), FACTOR in (0, 1]; not given: constant lr, the paper's",
    )
    t.add_argument(
        "--eval-every",
        type=_int_at_least(1, "eval_every"),
        default=5000,
        help="steps between evaluations (curve, best checkpoint)",
    )
    t.add_argument(
        "--eval-batches",
        type=_int_at_least(1, "eval_batches"),
        default=10,
        help="fresh batches per evaluation",
    )
    t.add_argument(
        "--budget",
        choices=("paper", "quick", "smoke"),
        default="quick",
        help="evaluation sample budget (paper = spec §5)",
    )
    t.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument(
        "--no-checkpoints", action="store_true", help="do not write safetensors checkpoints"
    )
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when interactive)",
    )
    t.add_argument(
        "--out", required=True, help="results folder to write: new or empty (see --overwrite)"
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing results folder at --out (swapped in once the new one is written)",
    )
    t.set_defaults(func=_cmd_train)

    s = commands.add_parser(
        "sweep",
        help="run (or resume) every configuration of a profile",
        description="Run every missing configuration of a named profile into OUT, one results folder "
        "per configuration (written atomically). Re-running the same command after an interruption "
        "finishes only what is missing. Then run `collect` to merge the tables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument(
        "--profile",
        required=True,
        help="profile name (smoke, quick, reference, paper) or a YAML file",
    )
    s.add_argument(
        "--out",
        required=True,
        help="results folder of the sweep: new, empty, or a sweep of the same profile to resume",
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the contents of --out first if it holds anything else than this sweep",
    )
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile field, e.g. num_rules=[2,4], num_rules.mlp=[2,4,32], "
        "iterations.mlp=2000 or lr_decay.start=0.8 (repeatable)",
    )
    s.add_argument(
        "--executor",
        choices=("serial", "process", "submitit"),
        default="process",
        help="where configurations run",
    )
    s.add_argument(
        "--workers",
        type=_int_at_least(1, "workers"),
        default=None,
        help="parallel workers (process: default min(cores, 2); submitit: array parallelism)",
    )
    s.add_argument(
        "--shard", default=None, help="run only shard i of n, e.g. 0/4 (deterministic split)"
    )
    s.add_argument(
        "--cluster",
        default=None,
        choices=("slurm", "local", "debug"),
        help="submitit cluster (default: auto-detect)",
    )
    s.add_argument(
        "--slurm",
        dest="submitit_parameters",
        action="append",
        type=_slurm_parameter,
        default=[],
        metavar="KEY=VALUE",
        help="submitit parameter of each array task (YAML value), e.g. slurm_partition=gpu, "
        "timeout_min=120, mem_gb=8, gpus_per_node=1, cpus_per_task=4 (repeatable)",
    )
    s.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument(
        "--checkpoints",
        action="store_true",
        help="also save safetensors checkpoints per configuration",
    )
    s.add_argument("--no-collect", action="store_true", help="do not merge the tables at the end")
    s.add_argument("--dry-run", action="store_true", help="list the configurations and exit")
    s.set_defaults(func=_cmd_sweep)

    c = commands.add_parser(
        "collect",
        help="merge a sweep's configuration folders into two tidy tables",
        description="Verify every configuration folder under OUT/configs (checksums, schema) and merge "
        "them into OUT/runs.parquet and OUT/curves.parquet with OUT/meta.json.",
    )
    c.add_argument("out", help="results folder of the sweep")
    c.add_argument(
        "--allow-mixed",
        action="store_true",
        help="merge results of different profiles, versions or commits",
    )
    c.add_argument(
        "--profile",
        default=None,
        help="also check that every configuration of this profile is present",
    )
    c.set_defaults(func=_cmd_collect)

    r = commands.add_parser(
        "reproduce",
        help="re-train one configuration of a results folder and compare with its rows",
        description="Re-train one configuration of a results folder (e.g. the shipped "
        "results/reference) at its profile's settings and compare the fresh rows with the stored "
        "ones: bitwise when this machine's hardware fingerprint and torch version are the ones "
        "recorded, otherwise within seed noise (per metric, |Welch t| <= 6). Exit status 1 if "
        "the rows are not reproduced.",
    )
    r.add_argument("folder", help="results folder, e.g. results/reference")
    r.add_argument("--setting", required=True, type=_name(SETTINGS), help=", ".join(SETTINGS))
    r.add_argument("--task", required=True, type=_name(TASKS), help=", ".join(TASKS))
    r.add_argument("--model", required=True, type=_name(PAPER_MODELS), help=", ".join(PAPER_MODELS))
    r.add_argument("--num-rules", required=True, type=_int_at_least(2, "num_rules"), help="R")
    r.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    r.set_defaults(func=_cmd_reproduce)
    return parser


def _check_shard(parser: argparse.ArgumentParser, text: str) -> None:
    """``--shard i/n`` with integers 0 <= i < n (same rule as ``sweep.parse_shard``)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        parser.error(f"argument --shard: must look like i/n with integers, e.g. 0/4; got {text!r}")
    if count < 1 or not 0 <= index < count:
        parser.error(f"argument --shard: {text!r} needs 0 <= i < n and n >= 1")


def _cmd_train(args: argparse.Namespace) -> int:
    from mod_arch_core.folders import check_train_out, write_folder

    check_train_out(args.out, overwrite=args.overwrite)  # before any work (and torch's import)
    from mod_arch_core.evaluation import named_budget
    from mod_arch_core.experiment import run_experiment, save_experiment
    from mod_arch_core.training import TrainConfig

    config = TrainConfig(
        model_options=args.options,
        setting=args.setting,
        task=args.task,
        model=args.model,
        num_rules=args.num_rules,
        encoder_dim=args.encoder_dim,
        dim=args.dim,
        search_version=args.search_version,
        data_seeds=args.data_seeds,
        seeds=args.seeds,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        device=args.device,
    )
    output = run_experiment(config, named_budget(args.budget), progress=args.progress)
    path = write_folder(
        args.out,
        lambda tmp: save_experiment(output, tmp, checkpoints=not args.no_checkpoints),
        overwrite=args.overwrite,
    )
    summary = output.runs.groupby("checkpoint")[
        ["perf", "perf_ood", "collapse_avg", "alignment"]
    ].mean()
    print(f"{config.num_runs} runs x {config.num_steps} steps in {output.seconds:.1f} s -> {path}")
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    diverged = output.runs[
        (output.runs["checkpoint"] == "last") & (output.runs["diverged_at"] >= 0)
    ]
    if len(diverged):
        steps = ", ".join(
            f"data seed {r.data_seed} seed {r.seed} at step {r.diverged_at}"
            for r in diverged.itertuples()
        )
        print(
            f"{len(diverged)} of {config.num_runs} runs diverged ({steps}); their rows are kept "
            "with NaN metrics at 'last' (means above are over the other runs)"
        )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from mod_arch_core.folders import check_out_path

    check_out_path(args.out)  # before any work; the folder's contents are checked by run_sweep
    if args.submitit_parameters and args.executor != "submitit":
        raise ValueError(
            f"--slurm sets submitit parameters; it needs --executor submitit, got {args.executor}"
        )
    from mod_arch_core.profiles import load_profile
    from mod_arch_core.sweep import collect, is_done, parse_shard, plan, run_sweep

    profile = load_profile(args.profile, args.overrides)
    shard = parse_shard(args.shard)
    if args.dry_run:
        jobs = plan(profile, args.out, shard, args.device)
        for job in jobs:
            print(("done     " if is_done(job) else "pending  ") + job.label)
        print(f"{len(jobs)} configurations, {profile.num_runs()} runs in the whole profile")
        return 0
    summary = run_sweep(
        profile,
        args.out,
        executor=args.executor,
        workers=args.workers,
        shard=shard,
        device=args.device,
        checkpoints=args.checkpoints,
        submitit_cluster=args.cluster,
        submitit_parameters=dict(args.submitit_parameters),
        overwrite=args.overwrite,
    )
    print(summary)
    if summary.failures:
        print(
            f"{summary.failures} configuration(s) failed; their tracebacks are above. Re-run the same "
            "command to retry only those.",
            file=sys.stderr,
        )
        return 1
    if not args.no_collect and shard == (0, 1):
        merged = collect(args.out)
        print(f"collected {len(merged.runs)} rows into {merged.path}")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from mod_arch_core.profiles import load_profile
    from mod_arch_core.sweep import collect

    if args.profile is not None:
        load_profile(args.profile)  # an unknown profile name fails before the folder is read
    merged = collect(args.out, allow_mixed=args.allow_mixed, profile=args.profile)
    print(
        f"collected {len(merged.runs)} run rows and {len(merged.curves)} curve rows into {merged.path}"
    )
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from mod_arch_core.reproduce import rerun

    comparison = rerun(
        args.folder,
        setting=args.setting,
        task=args.task,
        model=args.model,
        num_rules=args.num_rules,
        device=args.device,
    )
    print(comparison)
    return 0 if comparison.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        _check_train_args(parser, args)
    if getattr(args, "shard", None) is not None:
        _check_shard(parser, args.shard)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
