"""Per-phase cost of one configuration: training steps, evaluation points, final evaluation.

For one configuration of a profile (default: ``reference``, Modular, R = 4, regression, search
version 1) per setting, this measures, in process CPU time of one thread (robust to other
processes on a shared machine) and wall time:

* ``train step``: one optimizer step of the stack, data included (median of ``--steps``);
* ``eval point``: one point of the training curve (``eval_batches`` on the evaluation and the
  validation stream, plus the ``best`` bookkeeping), as :func:`mod_arch_core.training.train`
  does it ``len(eval_iterations())`` times;
* ``final``: :func:`mod_arch_core.evaluation.evaluate_result` at the profile's budget (``last``
  and ``best``), split into performance, P and Adaptation;

and extrapolates the configuration's total to the profile's iteration budget (printed as such).

``python benchmarks/bench_phases.py [--profile reference] [--settings mlp,mha,rnn] [--steps 20]``
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

from mod_arch_core import evaluation, training
from mod_arch_core.profiles import load_profile


@contextlib.contextmanager
def timed(totals: dict[str, list[float]], name: str) -> Iterator[None]:
    """Add this block's (cpu, wall) seconds to ``totals[name]``."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    totals[name][0] += time.process_time() - cpu
    totals[name][1] += time.perf_counter() - wall


def pick_config(profile_name: str, setting: str, model: str, num_rules: int):
    """The profile's configuration of ``setting`` with ``model``, ``num_rules``, regression.

    The first in the profile's order where it has several (capacities, MHA search versions), so
    that a profile training only search version 2 (as ``reference`` does) is measured too.
    """
    profile = load_profile(profile_name)
    for config in profile.configurations(device="cpu"):
        if (config.setting, config.model, config.num_rules, config.task) == (
            setting,
            model,
            num_rules,
            "regression",
        ):
            return profile, config
    raise ValueError(f"profile {profile_name!r} has no {setting}/{model}/R={num_rules} config")


def measure(profile_name: str, setting: str, model: str, num_rules: int, steps: int) -> str:
    """Phase costs of one configuration, as a few printable lines."""
    profile, config = pick_config(profile_name, setting, model, num_rules)
    budget = profile.eval_budget()
    short = training.TrainConfig.from_dict(
        {**config.to_dict(), "iterations": steps, "eval_every": steps}
    )  # eval points at 0 and at the end: two of them
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    step_times: list[float] = []
    original_step, original_eval = training.train_step, training.evaluate_batches

    def step(*args, **kwargs):
        cpu = time.process_time()
        out = original_step(*args, **kwargs)
        step_times.append(time.process_time() - cpu)
        return out

    def eval_batches(*args, **kwargs):
        with timed(totals, "eval point"):
            return original_eval(*args, **kwargs)

    training.train_step, training.evaluate_batches = step, eval_batches
    try:
        with timed(totals, "train()"):
            result = training.train(short, progress=False)
    finally:
        training.train_step, training.evaluate_batches = original_step, original_eval
    phases = {
        "perf": "evaluate_performance",
        "P": "estimate_activation_matrices",
        "adaptation": "estimate_adaptation",
    }
    originals = {name: getattr(evaluation, fn) for name, fn in phases.items()}

    def wrap(name):
        def inner(*args, **kwargs):
            with timed(totals, f"final {name}"):
                return originals[name](*args, **kwargs)

        return inner

    for name, fn in phases.items():
        setattr(evaluation, fn, wrap(name))
    try:
        with timed(totals, "final"):
            evaluation.evaluate_result(result, budget)
    finally:
        for name, fn in phases.items():
            setattr(evaluation, fn, originals[name])
    per_step = statistics.median(step_times[1:] if len(step_times) > 1 else step_times)
    per_point = totals["eval point"][0] / 2
    points = len(config.eval_iterations())
    final = totals["final"][0]
    train_total = per_step * config.num_steps
    total = train_total + per_point * points + final
    lines = [
        f"{setting} {config.model} R={config.num_rules} N={config.num_runs} "
        f"batch {config.batch_size}, {config.num_steps} steps, {points} eval points, "
        f"budget {profile.budget if isinstance(profile.budget, str) else profile_name}:",
        f"  train step {per_step * 1e3:.1f} ms cpu ({per_step / config.num_runs * 1e3:.2f} ms "
        f"per model-step); x {config.num_steps} = {train_total:.1f} s",
        f"  eval point {per_point * 1e3:.0f} ms cpu; x {points} = {per_point * points:.1f} s",
        f"  final evaluation {final:.1f} s cpu ("
        + ", ".join(f"{k} {totals[f'final {k}'][0]:.1f} s" for k in phases)
        + ")",
        f"  extrapolated configuration total {total:.1f} s cpu: training "
        f"{100 * train_total / total:.0f}%, eval points {100 * per_point * points / total:.0f}%, "
        f"final {100 * final / total:.0f}%",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="reference")
    parser.add_argument("--settings", default="mlp,mha,rnn")
    parser.add_argument("--model", default="modular")
    parser.add_argument("--num-rules", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="training steps measured")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# bench_phases: profile {args.profile}, {args.threads} thread(s), CPU time")
    for setting in [s.strip() for s in args.settings.split(",") if s.strip()]:
        print(measure(args.profile, setting, args.model, args.num_rules, args.steps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
