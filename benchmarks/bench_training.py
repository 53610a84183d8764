"""Training-step benchmark: one model per process step vs the stacked engine (spec §8).

For each setting (MLP Modular R=8, MHA Modular R=4, RNN Modular R=4; E=32, D=128, L=10, d=32,
regression, batch 256) it times, side by side in one process on this machine:

(a) ``reference``: one ordinary model, one Adam, numpy data per step, in the style of the
    reference implementation (:mod:`reference_style`);
(b) ``engine N=1``: :mod:`mod_arch_core.training` with one run;
(c) ``engine N=25``: the same engine with 25 runs stacked (5 data seeds x 5 model seeds).

Every timed step includes drawing its batch. The variants are interleaved round by round (a,
b, c, a, b, c, ...) so that load from other processes falls on all of them alike; the table
gives the median step time, model-steps per second and the ratios to (a). For context it gives
the arithmetic roofline: FLOPs per model-step (forward counted analytically, backward as twice
the forward) over a float32 matmul peak measured in the same run. ``--profile`` adds where the
time goes (torch.profiler) and each engine variant's *matmul floor*: its own matrix products
replayed alone at their recorded shapes, the most the engine could gain at these shapes by
fusing everything else. ``--memory`` adds the peak
resident memory of N = 25 at growing capacities, one fresh subprocess per capacity.

Run ``python benchmarks/bench_training.py --help`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_style

from mod_arch_core.data import sample_stack
from mod_arch_core.models import (
    mha_head_dim,
    mha_input_dim,
    mha_intermediate_dim,
    rnn_modular_hidden,
)
from mod_arch_core.models.kernels import kernel_mode, pure_pytorch, use_fused
from mod_arch_core.training import (
    STREAM_TRAIN,
    TrainConfig,
    build_stack,
    make_optimizer,
    retain_freed_memory,
    run_generators,
    train_step,
)

#: The three configurations of the issue "Fast training engine" §4: setting -> num_rules.
SETTINGS: dict[str, int] = {"mlp": 8, "mha": 4, "rnn": 4}
BATCH, SEQ_LEN, STATE_DIM = 256, 10, 32


# FLOPs --------------------------------------------------------------------------------------------


def forward_macs(
    setting: str, num_rules: int, encoder_dim: int, dim: int, batch: int = BATCH
) -> int:
    """Multiply-accumulates of one forward pass of one Modular run on one batch (spec §3).

    Matrix products only (elementwise work, softmax and the LSTM gates are left out); per
    example (MLP), token (MHA) or time step (RNN), times the batch (and length).
    """
    r, e, d = num_rules, encoder_dim, dim
    if setting == "mlp":
        per = 2 * (e + e * e) + (r * e + e * e)  # enc_digit on x1 and x2, enc_op
        per += 3 * e * d + d * (d + 1)  # R modules: 3E -> D/R -> D + 1
        per += r * d + d * e + e  # weighted sum, decoder
        return per * batch
    if setting == "mha":
        hd, width = mha_head_dim(r, d), mha_intermediate_dim(r, e, d)
        heads = 2 * r
        per = mha_input_dim(r, 1) * e + e * e  # token encoder
        per += 3 * e * heads * hd + e * r * hd  # q, k, v and in_
        per += 2 * heads * SEQ_LEN * hd  # q.k over the L keys and the weighted values
        per += r * (3 * hd * width + width * (e + 1))  # module output MLPs
        per += r * e + e * e + e  # weighted sum, decoder
        return per * batch * SEQ_LEN
    h = rnn_modular_hidden(r, e, d)
    per = (STATE_DIM + r) * e + e * e  # encoder
    per += e * 4 * r * h + h * 4 * r * h  # i2h, h2h
    per += 8 * h * r + 2 * r * h  # self-scores, mixing h and c
    per += h * h + h * STATE_DIM  # decoder
    return per * batch * SEQ_LEN


def step_flops(
    setting: str, num_rules: int, encoder_dim: int, dim: int, batch: int = BATCH
) -> float:
    """FLOPs of one training step of one run: forward + backward (about twice the forward)."""
    return 3 * 2 * forward_macs(setting, num_rules, encoder_dim, dim, batch)


def matmul_peak(size: int = 2048, repeats: int = 7, clock: str = "wall") -> float:
    """Float32 matmul throughput in FLOP/s (median of ``repeats``), ``size`` x ``size``.

    ``clock="cpu"`` times it in process CPU time, like the speed columns of a ``--clock cpu``
    run: on a shared machine the wall clock also counts the time other processes hold the core.
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = now()
        torch.mm(a, b, out=out)
        times.append(now() - start)
    return 2 * size**3 / statistics.median(times)


def copy_bandwidth(megabytes: int, repeats: int = 7) -> float:
    """Memory bandwidth of a float32 copy of ``megabytes`` (read + write), bytes/s, median."""
    src = torch.randn(megabytes * 2**18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times)


#: The matrix-product kernels: aten name -> (the op, its number of tensor operands).
GEMM_REPLAY: dict[str, tuple[Callable[..., torch.Tensor], int]] = {
    "aten::bmm": (torch.bmm, 2),
    "aten::mm": (torch.mm, 2),
    "aten::baddbmm": (torch.baddbmm, 3),
    "aten::addmm": (torch.addmm, 3),
}
GEMM_OPS = set(GEMM_REPLAY)
COPY_OPS = {"aten::copy_", "aten::cat", "aten::stack", "aten::clone", "aten::fill_", "aten::zero_"}


def _gemm_inputs(name: str, shapes: Sequence) -> list[torch.Tensor] | None:
    """Fresh contiguous operands for one recorded matrix-product call (None: not replayable)."""
    tensors = [s for s in shapes if isinstance(s, list | tuple) and len(s) > 0]
    whole = all(isinstance(x, int) for s in tensors for x in s)
    if len(tensors) != GEMM_REPLAY[name][1] or not whole:
        return None
    return [torch.randn(*s) for s in tensors]


def _gemm_flops(inputs: list[torch.Tensor]) -> int:
    """2 x (batch) x M x K x N of a product whose last two operands are (.., M, K), (.., K, N)."""
    a, b = inputs[-2].shape, inputs[-1].shape
    return 2 * math.prod(a) * b[-1]


@dataclass
class MatmulFloor:
    """A step's matrix products replayed alone (:func:`matmul_floor`)."""

    seconds: float  # per step
    dearest: list[tuple[float, str]]  # (seconds per step, "op shapes at GFLOP/s"), dearest first


def matmul_floor(
    calls: dict[tuple[str, tuple], int], steps: int, clock: str = "wall", repeats: int = 20
) -> MatmulFloor:
    """A step's matrix products alone, each replayed at its recorded shapes.

    ``calls`` maps (op, input shapes) to how often the profiled ``steps`` called it. Every
    distinct call is timed ``repeats`` times on fresh contiguous operands (warm in cache, as
    a perfect fusion of everything else would leave them) and weighted by its count: the time
    a step would take if everything but its matrix products cost nothing. A floor of the
    engine at these shapes, not of the arithmetic (the ``roofline`` row).
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    parts = []
    for (name, shapes), count in calls.items():
        inputs = _gemm_inputs(name, shapes)
        if inputs is None:
            continue
        op = GEMM_REPLAY[name][0]
        op(*inputs)  # warm-up
        start = now()
        for _ in range(repeats):
            op(*inputs)
        seconds = (now() - start) / repeats
        shape = " x ".join(str(tuple(t.shape)) for t in inputs[-2:])
        rate = _gemm_flops(inputs) / max(seconds, 1e-9) / 1e9
        parts.append((seconds * count / steps, f"{name[6:]} {shape} at {rate:.0f} GFLOP/s"))
    parts.sort(reverse=True)
    return MatmulFloor(sum(t for t, _ in parts), parts[:3])


def _freeze(shapes: list) -> tuple:
    return tuple(tuple(s) if isinstance(s, list) else s for s in shapes)


def profile_variant(variant: Variant, steps: int = 2, clock: str = "wall") -> str:
    """Where a variant's step time goes: shares of matrix products, copies and the rest.

    Also the bytes of the input operands (in-place outputs included) of the other kernels
    (elementwise, reductions, copies): an estimate of their memory traffic, and the rate at which
    they move it (compare with the copy bandwidth of the same run).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            variant.step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    copy = sum(e.self_cpu_time_total for e in events if e.key in COPY_OPS)
    read = 0  # bytes of the input operands of the non-matmul leaf kernels
    calls: dict[tuple[str, tuple], int] = {}
    leaves = 0  # aten kernels called (leaf ops: each one dispatch, one pass)
    for event in prof.events():
        if event.name in GEMM_OPS:
            key = (event.name, _freeze(event.input_shapes))
            calls[key] = calls.get(key, 0) + 1
        if event.name.startswith("aten::") and not event.cpu_children:
            leaves += 1  # leaf kernels only, so nothing is counted twice
            if event.name not in GEMM_OPS:
                for shape in event.input_shapes:
                    if isinstance(shape, list | tuple) and all(isinstance(x, int) for x in shape):
                        read += 4 * math.prod(shape)
    other_seconds = (total - gemm) / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    floor = matmul_floor(calls, steps, clock)
    variant.floor = floor
    return (
        f"  {variant.name}: matrix products {100 * gemm / total:.0f}%, copies/fills "
        f"{100 * copy / total:.0f}%, elementwise and the rest {100 * (total - gemm - copy) / total:.0f}%"
        f" of aten time, {leaves / steps:.0f} aten kernels per step; the non-matmul kernels'"
        f" operands: {read / steps / 1e9:.2f} GB per step "
        f"at {read / other_seconds / 1e9:.1f} GB/s; top: "
        + ", ".join(f"{e.key[6:]} {100 * e.self_cpu_time_total / total:.0f}%" for e in top)
        + f"; its matrix products alone at their shapes ({clock} clock): "
        f"{floor.seconds * 1e3:.2f} ms per step, dearest: "
        + ", ".join(f"{label} {1e3 * t:.2f} ms" for t, label in floor.dearest)
    )


# The three variants ---------------------------------------------------------------------------


@dataclass
class Variant:
    """A named training step of ``runs`` model-runs; seconds per step, wall clock and CPU."""

    name: str
    runs: int
    step: Callable[[], object]
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    #: Its matrix products alone (:func:`matmul_floor`), once profiled.
    floor: MatmulFloor | None = None

    def median(self, clock: str = "wall") -> float:
        return statistics.median(self.wall if clock == "wall" else self.cpu)


def seed_grid(num_runs: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(data_seeds, seeds) of a stack of ``num_runs``: 25 = 5 x 5 (the issue's), 6 = 3 x 2 (the
    ``reference`` profile's), otherwise ``num_runs`` data seeds x one model seed."""
    shapes = {25: (5, 5), 6: (3, 2)}
    data, model = shapes.get(num_runs, (num_runs, 1))
    return tuple(range(data)), tuple(range(model))


def engine_variant(
    setting: str, num_runs: int, encoder_dim: int, dim: int, batch: int = BATCH
) -> Variant:
    """The stacked engine with ``num_runs`` runs (:func:`seed_grid`) at batch ``batch``."""
    data_seeds, seeds = seed_grid(num_runs)
    config = TrainConfig(
        setting=setting,
        task="regression",
        model="modular",
        num_rules=SETTINGS[setting],
        encoder_dim=encoder_dim,
        dim=dim,
        data_seeds=data_seeds,
        seeds=seeds,
        batch_size=batch,
        seq_len=SEQ_LEN,
        state_dim=STATE_DIM,
        device="cpu",
    )
    device = torch.device("cpu")
    tasks, model = build_stack(config, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    generators = run_generators(config, STREAM_TRAIN, device)
    seq_len = None if setting == "mlp" else SEQ_LEN
    alive = torch.ones(config.num_runs, dtype=torch.bool)

    def step() -> object:
        data = sample_stack(tasks, batch, generators, seq_len=seq_len, device=device)
        return train_step(
            model, optimizer, data, task="regression", clip=config.clip_norm, alive=alive
        )

    return Variant(f"engine N={config.num_runs}", config.num_runs, step)


def pure_pytorch_variant(variant: Variant) -> Variant:
    """``variant`` with the RNN cell on the pure-PyTorch path (``kernels.pure_pytorch``)."""

    def step() -> object:
        with pure_pytorch():
            return variant.step()

    return Variant(variant.name.replace("engine", "eager"), variant.runs, step)


def reference_variant(setting: str, encoder_dim: int, dim: int, batch: int = BATCH) -> Variant:
    """One model, one process-style loop (:mod:`reference_style`) at batch ``batch``."""
    run = reference_style.make_reference_run(
        setting, SETTINGS[setting], encoder_dim, dim, batch_size=batch, seq_len=SEQ_LEN
    )
    return Variant("reference", 1, run.step)


def time_variants(variants: list[Variant], steps: int, warmup: int, rounds: int) -> None:
    """Warm every variant up, then ``rounds`` interleaved rounds of ``steps`` timed steps."""
    for variant in variants:
        for _ in range(warmup):
            variant.step()
    for _ in range(rounds):
        for variant in variants:
            for _ in range(steps):
                start, start_cpu = time.perf_counter(), time.process_time()
                variant.step()
                variant.wall.append(time.perf_counter() - start)
                variant.cpu.append(time.process_time() - start_cpu)


# Peak memory ----------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` of ``/proc/self/status``.

    (``getrusage``'s ``ru_maxrss`` survives ``exec`` on Linux, so a subprocess would report its
    parent's peak when that is larger.)
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(setting: str, encoder_dim: int, num_runs: int) -> None:
    """Print this process's peak RSS (MB) after 2 training steps of N runs (subprocess entry)."""
    variant = engine_variant(setting, num_runs, encoder_dim, 4 * encoder_dim)
    start = time.perf_counter()
    for _ in range(2):
        variant.step()
    print(f"PEAK {peak_rss_mb():.0f} {time.perf_counter() - start:.2f}")


def measure_memory(
    settings: list[str], capacities: list[int], args: argparse.Namespace
) -> list[str]:
    """Peak RSS of N runs per setting and capacity, each in a fresh subprocess."""
    lines = []
    baseline = _probe_rss(["--memory-baseline"], args.memory_timeout)
    lines.append(f"baseline (python + torch + package imported): {baseline}")
    for setting in settings:
        for e in capacities:
            cmd = ["--memory-probe", setting, str(e), "--n-runs", str(max(args.n_runs))]
            cmd += ["--threads", str(args.threads), "--memory-limit-gb", str(args.memory_limit_gb)]
            result = _probe_rss(cmd, args.memory_timeout)
            lines.append(f"{setting:4s} E={e:<4d} D={4 * e:<5d} N={max(args.n_runs)}: {result}")
            if not result.endswith("s"):  # failed or timed out: larger capacities will too
                break
    return lines


def _probe_rss(extra: list[str], timeout: float) -> str:
    cmd = [sys.executable, str(Path(__file__).resolve()), *extra]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"stopped: more than {timeout:.0f} s for 2 steps"
    for line in done.stdout.splitlines():
        if line.startswith("PEAK"):
            _, peak, seconds = line.split()
            return f"peak RSS {float(peak) / 1024:.2f} GB, 2 steps in {float(seconds):.1f} s"
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"failed (exit {done.returncode}): {tail[:120]}"


# Main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (a, b, c, ...)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--settings", default="mlp,mha,rnn", help="comma-separated subset")
    parser.add_argument(
        "--n-runs", default="1,6,25", help="comma-separated stack sizes of the engine variants"
    )
    parser.add_argument("--batches", default="64,256", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (this machine: 2)")
    parser.add_argument("--encoder-dim", type=int, default=32, help="E; D = 4E")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="clock of the speed columns; 'cpu' (process CPU time, with --threads 1) is robust "
        "to other processes sharing the cores",
    )
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak RSS of N runs by capacity"
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the peak-memory table (implies --memory)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile 2 steps of (a) and (c) per setting"
    )
    parser.add_argument(
        "--capacities", default="32,64,128,256", help="encoder dims E for --memory (D = 4E)"
    )
    parser.add_argument("--memory-timeout", type=float, default=300.0, help="seconds per probe")
    parser.add_argument(
        "--memory-limit-gb", type=float, default=12.0, help="address-space cap of each probe"
    )
    parser.add_argument("--memory-probe", nargs=2, metavar=("SETTING", "E"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("n_runs", "batches"):
        try:
            setattr(args, name, [int(v) for v in str(getattr(args, name)).split(",") if v.strip()])
        except ValueError:
            parser.error(f"--{name.replace('_', '-')} must be comma-separated integers")
        if not getattr(args, name) or min(getattr(args, name)) < 1:
            parser.error(f"--{name.replace('_', '-')} must list integers >= 1")
    for name in ("steps", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(args.settings) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; allowed: {', '.join(SETTINGS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as train() does; process-wide, so it applies to all variants
    if args.memory_baseline:
        print(f"PEAK {peak_rss_mb():.0f} 0")
        return 0
    if args.memory_probe:
        limit = int(args.memory_limit_gb * 2**30)  # fail with MemoryError, never swap or OOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        setting, e = args.memory_probe
        memory_probe(setting, int(e), max(args.n_runs))
        return 0

    if args.memory_only:
        print(f"# peak memory, engine N={max(args.n_runs)}, 2 training steps per fresh process")
        capacities = [int(c) for c in args.capacities.split(",")]
        print("\n".join(measure_memory(args.settings, capacities, args)))
        return 0
    e, d = args.encoder_dim, 4 * args.encoder_dim
    print(f"# bench_training  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} threads")  # fmt: skip
    print(f"# load average before: {_load()}")
    built = "built" if use_fused() else f"not used (MOD_ARCH_KERNELS={kernel_mode()})"
    print(f"# fused RNN kernels: {built}; 'eager' rows: the same engine in pure PyTorch")
    peak = matmul_peak(clock=args.clock)
    print(f"# float32 matmul peak (2048^3, {args.clock} clock): {peak / 1e9:.0f} GFLOP/s")
    print(
        f"# copy bandwidth (read + write): {copy_bandwidth(8) / 1e9:.0f} GB/s at 8 MB, "
        f"{copy_bandwidth(256) / 1e9:.0f} GB/s at 256 MB"
    )
    print(f"# E={e}, D={d}, batches {args.batches}, L={SEQ_LEN}, d={STATE_DIM}, regression, "
          f"Modular; {args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up steps")  # fmt: skip

    header = (
        f"{'setting':8s} {'batch':>5s} {'variant':12s} {'ms/step':>9s} {'cpu ms/step':>11s} "
        f"{'ms/model-step':>14s} {'model-steps/s':>14s} {'vs ref':>7s} {'GFLOP/s':>8s}"
    )
    print(header)
    print("-" * len(header), flush=True)
    profiles = []
    for setting, batch in itertools.product(args.settings, args.batches):
        rows = []
        r = SETTINGS[setting]
        variants = [reference_variant(setting, e, d, batch)]
        variants += [engine_variant(setting, n, e, d, batch) for n in args.n_runs]
        if setting == "rnn" and use_fused():
            # The same engine with the recurrent cell in pure PyTorch: the fused kernel's share.
            variants += [pure_pytorch_variant(engine_variant(setting, n, e, d, batch))
                         for n in args.n_runs]  # fmt: skip
        time_variants(variants, args.steps, args.warmup, args.rounds)
        base = variants[0].median(args.clock)
        if args.profile:
            profiles.append(f"{setting}, batch {batch}:")
            profiles += [profile_variant(v, clock=args.clock) for v in variants]
            profiles += [
                f"  {v.name}: matmul floor {v.floor.seconds / v.runs * 1e3:.3f} ms per model-step"
                f" = {base / (v.floor.seconds / v.runs):.1f}x the reference-style loop: the most"
                " this engine could reach if all but its matrix products cost nothing"
                for v in variants[1:]
                if v.floor
            ]
        flops = step_flops(setting, r, e, d, batch)
        for variant in variants:
            per_model = variant.median(args.clock) / variant.runs
            rows.append(
                f"{setting:8s} {batch:5d} {variant.name:12s} {variant.median() * 1e3:9.1f} "
                f"{variant.median('cpu') * 1e3:11.1f} {per_model * 1e3:14.3f} "
                f"{1 / per_model:14.1f} {base / per_model:6.1f}x {flops / per_model / 1e9:8.1f}"
            )
        roofline = flops / peak
        rows.append(
            f"{setting:8s} {batch:5d} {'roofline':12s} {'':9s} {'':11s} {roofline * 1e3:14.3f} "
            f"{1 / roofline:14.1f} {base / roofline:6.1f}x   ({flops / 1e6:.0f} MFLOP/model-step)"
        )
        print("\n".join(rows), flush=True)  # one block per setting and batch, as it finishes
    print(f"# load average after: {_load()}")
    print(
        f"# per-model-step columns and ratios use the {args.clock} clock; 'vs ref' is the"
        " reference-style loop's time per model-step over the row's"
    )
    if args.threads > 1:
        print(
            f"# the reference-style loop is one process on {args.threads} threads, which its small"
            " ops barely use; the reference runs one process per run, so per core the like-for-like"
            " ratios are those of --threads 1 (benchmarks/README.md, 'Per core')"
        )
    if profiles:
        print("\n# where the time goes (torch.profiler, self CPU time of aten ops, 2 steps)")
        print("\n".join(profiles))

    if args.memory:
        print(f"\n# peak memory, engine N={max(args.n_runs)}, 2 training steps per fresh process")
        for line in measure_memory(
            args.settings, [int(c) for c in args.capacities.split(",")], args
        ):
            print(line)
    return 0


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
