"""Profiles and sweeps: overrides, executors, kill-and-resume, corruption, collect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mod_arch_core import results
from mod_arch_core.folders import configuration_folders
from mod_arch_core.profiles import apply_overrides, available_profiles, load_profile, parse_override
from mod_arch_core.sweep import CONFIGS_DIR, collect, parse_shard, plan, run_sweep

ROOT = Path(__file__).resolve().parents[1]
#: A small slice of the smoke profile: two settings, two models, both tasks.
SMALL = ["settings=[mlp, rnn]", "models=[modular, gt-modular]", "num_rules=[2]"]
VOLATILE = ["wall_seconds", "hardware"]


def numbers(out: Path) -> pd.DataFrame:
    runs = results.load(out).runs.drop(columns=VOLATILE)
    return runs.sort_values([*results.RUN_KEYS, "checkpoint"]).reset_index(drop=True)


def test_shipped_profiles_load_and_describe_their_grid() -> None:
    assert {"smoke", "quick", "reference", "paper"} <= set(available_profiles())
    paper = load_profile("paper")
    assert paper.num_runs() == 20_000  # spec §1
    assert paper.total_steps() == 5000 * 100_000 + 10_000 * 500_000 + 5000 * 500_000  # spec §8
    smoke = load_profile("smoke")
    assert set(smoke.settings) == {"mlp", "mha", "rnn"} and len(smoke.models) == 4


def test_quick_profile_grid_is_what_the_readme_says() -> None:
    quick = load_profile("quick")
    assert quick.num_rules == (2, 4, 8, 16)
    assert quick.capacities == ((32, 128),)
    assert set(quick.models) == {"monolithic", "modular", "modular-op", "gt-modular"}
    assert set(quick.settings) == {"mlp", "mha", "rnn"} and set(quick.tasks) == {
        "regression",
        "classification",
    }
    readme = (ROOT / "README.md").read_text()
    assert f"{len(quick.configurations())} configurations" in readme
    assert f"{quick.num_runs()} runs" in readme


def test_overrides_parse_and_validate() -> None:
    assert parse_override("num_rules=[2, 4]") == ("num_rules", [2, 4])
    assert parse_override("iterations.mlp=2000") == ("iterations.mlp", 2000)
    profile = load_profile("smoke", ["num_rules=[3]", "iterations.mlp=7", "models=[GT_Modular]"])
    assert profile.num_rules == (3,) and profile.iterations["mlp"] == 7
    assert profile.models == ("gt-modular",)
    assert load_profile("smoke", {"seeds": [4]}).seeds == (4,)
    with pytest.raises(ValueError, match="malformed override 'num_rules'"):
        parse_override("num_rules")
    with pytest.raises(ValueError, match="unknown profile field 'num_rule'"):
        load_profile("smoke", ["num_rule=[2]"])
    with pytest.raises(ValueError, match="num_rules must be >= 2, got 1"):
        load_profile("smoke", ["num_rules=[1]"])
    with pytest.raises(ValueError, match="unknown models 'transformer'"):
        load_profile("smoke", ["models=[transformer]"])
    with pytest.raises(ValueError, match="unknown profile 'huge'; available: "):
        load_profile("huge")
    assert apply_overrides({"iterations": 5}, ["iterations.rnn=9"])["iterations"]["rnn"] == 9


# --------------------------------------------------------------------------------------
# Per-setting grids and the lr decay in the profile format
# --------------------------------------------------------------------------------------

#: A per-setting grid of the smoke profile: every axis in its mapping form.
PER_SETTING = [
    "num_rules={mlp: [2, 4, 8], mha: [2], rnn: [2, 4]}",
    "capacities={mlp: [[8, 32], [16, 64]], mha: [[8, 32]], rnn: [[8, 32]]}",
    "search_versions={mha: [2]}",
    "batch_size={mlp: 16, mha: 8, rnn: 4}",
]


def grid_keys(profile) -> set[tuple]:
    """(setting, task, model, R, E, D, search version, batch, steps) of every configuration."""
    return {
        (c.setting, c.task, c.model, c.num_rules, c.encoder_dim, c.dim, c.search_version,
         c.batch_size, c.num_steps)
        for c in profile.configurations(device="cpu")
    }  # fmt: skip


def test_per_setting_grid_enumerates_each_settings_own_configurations(tmp_path: Path) -> None:
    profile = load_profile("smoke", PER_SETTING)
    tasks, models = profile.tasks, profile.models
    steps = profile.iterations
    want = set()
    for setting, rules, capacities, versions, batch in (
        ("mlp", (2, 4, 8), ((8, 32), (16, 64)), (1,), 16),
        ("mha", (2,), ((8, 32),), (2,), 8),
        ("rnn", (2, 4), ((8, 32),), (1,), 4),
    ):
        grid = profile.grid_for(setting)
        assert (grid.num_rules, grid.capacities, grid.search_versions, grid.batch_size) == (
            rules,
            capacities,
            versions,
            batch,
        )
        want |= {
            (setting, t, m, r, e, d, v, batch, steps[setting])
            for t in tasks
            for m in models
            for r in rules
            for e, d in capacities
            for v in versions
        }
    configs = profile.configurations(device="cpu")
    assert grid_keys(profile) == want and len(configs) == len(want) == 2 * 4 * (6 + 1 + 2)
    assert profile.num_runs() == len(want) * len(profile.seeds) * len(profile.data_seeds)
    assert profile.total_steps() == sum(k[-1] for k in want) * 2
    assert [c.setting for c in configs] == sorted(
        (c.setting for c in configs), key=profile.settings.index
    )  # settings stay the outermost loop: shards are cut from the same order as before
    # The same profile written as a YAML file loads to the same configurations.
    path = tmp_path / "mine.yaml"
    path.write_text(
        (ROOT / "mod_arch_core" / "profiles" / "smoke.yaml").read_text().replace(
            "num_rules: [2, 4]", "num_rules: {mlp: [2, 4, 8], mha: [2], rnn: [2, 4]}"
        ).replace(
            "capacities: [[8, 32]]",
            "capacities:\n  mlp: [[8, 32], [16, 64]]\n  mha: [[8, 32]]\n  rnn: [[8, 32]]",
        ).replace("search_versions: [1, 2]", "search_versions: {mha: [2]}")
        .replace("batch_size: 32", "batch_size: {mlp: 16, mha: 8, rnn: 4}")
    )  # fmt: skip
    from_file = load_profile(path)
    assert from_file.configurations(device="cpu") == configs
    # A mapping may name settings the profile does not train (as iterations may).
    mlp_only = load_profile("smoke", [*PER_SETTING, "settings=[mlp]"])
    assert {k[0] for k in grid_keys(mlp_only)} == {"mlp"} and len(grid_keys(mlp_only)) == 48
    with pytest.raises(ValueError, match="setting 'mha' is not in profile"):
        mlp_only.grid_for("mha")


def test_list_form_profiles_load_to_the_same_configurations_and_hashes() -> None:
    """The list form is kept as it was: the same order, the same TrainConfigs, the same hashes.

    The three hashes are those of configurations of the constant-lr ``reference`` results shipped
    before per-setting grids and lr decay existed; a constant-lr configuration's hash must not
    change, or every constant-lr results folder (``calibration``, ``routing-quick``, and any a
    reader made earlier) would stop matching its profile.
    """
    from mod_arch_core.evaluation import EvalBudget
    from mod_arch_core.experiment import experiment_hash
    from mod_arch_core.training import TrainConfig

    budget = EvalBudget(
        perf_batches=4,
        perf_batch_size=256,
        prob_batches=8,
        prob_batch_size=256,
        adaptation_draws=10,
        adaptation_batches=1,
        adaptation_batch_size=256,
    )
    common = dict(data_seeds=(0, 1, 2), seeds=(0, 1), batch_size=64, lr=1e-3, eval_batches=2)
    pinned = {
        "8b34dd6f753fdd6e": TrainConfig(
            "mlp", "regression", "modular", 8, iterations=4000, eval_every=400, **common
        ),
        "901a1474c5879c90": TrainConfig(
            "mha", "classification", "gt-modular", 4, search_version=2, iterations=600,
            eval_every=60, **common,
        ),
        "4929d1db6020ba15": TrainConfig(
            "rnn", "regression", "monolithic", 16, iterations=1000, eval_every=100, **common
        ),
    }  # fmt: skip
    for chash, config in pinned.items():
        assert "lr_decay" not in config.to_dict()
        assert experiment_hash(config, budget) == chash, config.key()
    listed = load_profile("quick")  # a list-form profile
    assert isinstance(listed.num_rules, tuple) and listed.num_rules == (2, 4, 8, 16)
    spread = load_profile(
        "quick",
        {
            "num_rules": {s: [2, 4, 8, 16] for s in ("mlp", "mha", "rnn")},
            "capacities": {s: [[32, 128]] for s in ("mlp", "mha", "rnn")},
            "search_versions": {"mha": [1, 2]},
            "batch_size": {s: 64 for s in ("mlp", "mha", "rnn")},
        },
    )
    assert spread.configurations(device="cpu") == listed.configurations(device="cpu")
    assert listed.to_dict()["num_rules"] == [2, 4, 8, 16]
    assert spread.to_dict()["num_rules"]["mha"] == [2, 4, 8, 16]


def test_grid_overrides_of_both_forms() -> None:
    assert load_profile("smoke", ["num_rules=[3]"]).num_rules == (3,)  # list form stays a list
    spread = load_profile("smoke", ["num_rules.mlp=[2, 4, 32]"])  # dotted on the list form
    assert spread.num_rules == {"mlp": (2, 4, 32), "mha": (2, 4), "rnn": (2, 4)}
    again = load_profile("smoke", [*PER_SETTING, "num_rules.mha=[4]", "capacities.rnn=[[4, 16]]"])
    assert again.grid_for("mha").num_rules == (4,) and again.grid_for("mlp").num_rules == (2, 4, 8)
    assert again.grid_for("rnn").capacities == ((4, 16),)
    versions = load_profile("smoke", ["search_versions.mha=[2]"])
    assert versions.search_versions == {"mha": (2,)}
    assert {c.search_version for c in versions.configurations() if c.setting == "mha"} == {2}
    batch = load_profile("smoke", ["batch_size.rnn=8"])
    assert batch.batch_size == {"mlp": 32, "mha": 32, "rnn": 8}
    assert load_profile("smoke", ["num_rules=[2]"]).batch_size == 32
    assert apply_overrides({}, ["num_rules.rnn=[2]"])["num_rules"] == {
        "mlp": [2, 4, 8, 16, 32],
        "mha": [2, 4, 8, 16, 32],
        "rnn": [2],
    }  # a field the profile does not give: its default, spread
    decay = load_profile("smoke", ["lr_decay={start: 0.8, factor: 0.1}", "lr_decay.start=0.5"])
    assert decay.lr_decay == {"start": 0.5, "factor": 0.1}
    assert {c.lr_decay["start"] for c in decay.configurations()} == {0.5}
    assert load_profile("smoke", ["lr_decay=null"]).lr_decay is None
    assert all(c.lr_decay is None for c in load_profile("smoke").configurations())


def test_model_options_are_checked_at_every_r_that_a_trained_setting_has() -> None:
    sets = [
        "models=[modular-topk, gt-modular]",
        "model_options={modular-topk: {top_k: 3}}",
        "num_rules={mlp: [4], mha: [2], rnn: [4]}",
    ]
    with pytest.raises(ValueError, match=r"top_k must be <= num_rules=2.*R = 2.*of mha"):
        load_profile("smoke", sets)
    profile = load_profile("smoke", [*sets, "settings=[mlp, rnn]"])  # mha's R = 2 is not trained
    assert {c.model_options.get("top_k") for c in profile.configurations()} == {3, None}


#: Bad per-setting grids and lr decays, and what the message must say.
BAD_GRIDS: list[tuple[list[str], str]] = [
    (["num_rules={mlp: [2], mha: [2]}"], r"num_rules gives no list for num_rules\.rnn"),
    (["num_rules={mlp: [2], mha: [2], rnn: [2], cnn: [2]}"], r"num_rules has unknown settings \['cnn'\]"),
    (["num_rules={mlp: [], mha: [2], rnn: [2]}"], r"num_rules\.mlp must not be empty"),
    (["num_rules.mha=[]"], r"num_rules\.mha must not be empty"),
    (["num_rules={mlp: 4, mha: [2], rnn: [2]}"], r"num_rules\.mlp must be a list"),
    (["num_rules={mlp: [2.5], mha: [2], rnn: [2]}"], r"num_rules\.mlp must be an integer"),
    (["num_rules.mha=[1]"], r"num_rules\.mha must be >= 2, got 1"),
    (["num_rules.cnn=[2]"], r"unknown key 'cnn' of num_rules; allowed: mlp, mha, rnn"),
    (["num_rules=[2, 2]"], r"num_rules must not repeat a value"),
    (["num_rules.mlp=[4, 4]"], r"num_rules\.mlp must not repeat a value"),
    (["num_rules={}"], r"num_rules gives no list for num_rules\.mlp, num_rules\.mha"),
    (["num_rules=4"], r"num_rules must be a list, e.g\. num_rules=\[2, 4\]; got 4 .*mapping"),
    (["capacities={mlp: [[8, 32]], mha: [[8, 32]]}"], r"capacities\.rnn"),
    (["capacities.mha=[[8]]"], r"capacities\.mha must be a list of \[E, D\] pairs"),
    (["capacities.rnn=[[8, 0]]"], r"capacities\.rnn D must be >= 1"),
    (["capacities.mlp=[]"], r"capacities\.mlp must not be empty"),
    (["capacities=[[8, 32], [8, 32]]"], r"capacities must not repeat a value"),
    (["search_versions={mha: [3]}"], r"search_versions\.mha must be a non-empty subset of \[1, 2\]"),
    (["search_versions={mlp: [1]}"], r"search_versions gives no list for search_versions\.mha"),
    (["search_versions={mha: [1], mlp: [2]}"], r"search_versions\.mlp: .*may only be \[1\]"),
    (["search_versions={mha: [1], cnn: [1]}"], r"search_versions has unknown settings \['cnn'\]"),
    (["search_versions=[1, 1]"], r"search_versions must not repeat a value"),
    (["batch_size={mlp: 8, mha: 8}"], r"batch_size needs a value for settings \['rnn'\]"),
    (["batch_size.mlp=0"], r"batch_size\.mlp must be >= 1"),
    (["batch_size={mlp: 8, mha: 8, rnn: 8, cnn: 8}"], r"batch_size has unknown settings"),
    (["batch_size=[8]"], r"batch_size must be an integer or a mapping setting -> integer"),
    (["lr_decay=0.8"], r"lr_decay must be a mapping with start and factor"),
    (["lr_decay={start: 0.8}"], r"lr_decay needs lr_decay\.factor"),
    (["lr_decay.start=0.8"], r"lr_decay needs lr_decay\.factor"),  # smoke has no decay
    (["lr_decay={start: 1.0, factor: 0.1}"], r"lr_decay\.start must lie in \[0, 1\)"),
    (["lr_decay={start: -0.1, factor: 0.1}"], r"lr_decay\.start must lie in \[0, 1\)"),
    (["lr_decay={start: 0.5, factor: 0}"], r"lr_decay\.factor must lie in \(0, 1\]"),
    (["lr_decay={start: 0.5, factor: 1.5}"], r"lr_decay\.factor must lie in \(0, 1\]"),
    (["lr_decay={start: 0.5, factor: .nan}"], r"lr_decay\.factor must be a finite number"),
    (["lr_decay={start: '0.5', factor: 0.1}"], r"lr_decay\.start must be a number"),
    (["lr_decay={start: 0.5, factor: 0.1, shape: cos}"], r"lr_decay has unknown keys \['shape'\]"),
    (["lr_decay.shape=cos"], r"unknown key 'shape' of lr_decay; allowed: start, factor"),
]  # fmt: skip


@pytest.mark.parametrize(("sets", "match"), BAD_GRIDS, ids=[" ".join(s) for s, _ in BAD_GRIDS])
def test_bad_per_setting_grids_and_lr_decays_are_refused(sets: list[str], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        load_profile("smoke", sets)


def test_shards_partition_the_grid(tmp_path: Path) -> None:
    profile = load_profile("smoke")
    whole = [job.label for job in plan(profile, tmp_path)]
    parts = [job.label for i in range(3) for job in plan(profile, tmp_path, (i, 3))]
    assert sorted(parts) == sorted(whole) and len(set(whole)) == len(whole)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_unknown_executor_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="unknown executor 'ray'; allowed: serial, process, submitit"
    ):
        run_sweep("smoke", tmp_path, executor="ray", overrides=SMALL)


@pytest.mark.slow
def test_executors_give_identical_rows(tmp_path: Path) -> None:
    grid = [*SMALL, "tasks=[regression]"]  # one task: four configurations per executor
    serial = tmp_path / "serial"
    run_sweep("smoke", serial, executor="serial", overrides=grid, progress=False)
    collect(serial)
    reference = numbers(serial)
    assert len(reference) == 2 * 2 * 2 * 2  # settings x models x seeds x checkpoints
    for name, kwargs in (
        ("process", {"executor": "process", "workers": 2}),
        ("submitit", {"executor": "submitit", "submitit_cluster": "debug"}),
        ("submitit-local", {"executor": "submitit", "submitit_cluster": "local"}),
    ):
        out = tmp_path / name
        summary = run_sweep("smoke", out, overrides=grid, progress=False, **kwargs)
        assert summary.failures == 0, summary.table.error.tolist()
        collect(out)
        pd.testing.assert_frame_equal(
            numbers(out), reference, check_exact=False, rtol=1e-6, atol=1e-7
        )


@pytest.mark.slow
def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "mod_arch_core",
        "sweep",
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--executor",
        "serial",
        "--no-collect",
        *[arg for o in SMALL[:2] for arg in ("--set", o)],
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(configuration_folders(out)) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {f.name for f in configuration_folders(out)}
    assert 3 <= len(finished_before) < 16, "the kill should land mid-sweep"
    profile = load_profile("smoke", SMALL[:2])
    with pytest.raises(results.ResultsError, match="missing"):
        collect(out, profile=profile)
    summary = run_sweep(profile, out, executor="serial", progress=False)
    skipped = set(summary.table.loc[summary.table.status == "skipped", "configuration"])
    assert skipped == finished_before  # finished work is kept, not redone
    merged = collect(out, profile=profile)
    assert len(merged.runs) == profile.num_runs() * 2  # every run, both checkpoints, once
    assert not merged.runs.duplicated([*results.RUN_KEYS, "checkpoint"]).any()


@pytest.mark.slow
def test_corrupted_configuration_is_reported_with_its_path(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep(
        "smoke",
        out,
        executor="serial",
        overrides=["settings=[mlp]", "models=[modular]", "num_rules=[2]"],
        progress=False,
    )
    folder = next((out / CONFIGS_DIR).iterdir())
    runs_file = folder / results.RUNS_FILE
    runs_file.write_bytes(runs_file.read_bytes()[:-20])  # truncated
    with pytest.raises(
        results.ResultsError, match=rf"(?s){folder.name}.*corrupted.*re-run the same sweep"
    ):
        collect(out)


@pytest.mark.slow
def test_sweep_cli_runs_and_collects(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "mod_arch_core",
        "sweep",
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--executor",
        "serial",
        "--set",
        "settings=[mha]",
        "--set",
        "models=[modular-op]",
        "--set",
        "num_rules=[2]",
        "--set",
        "tasks=[regression]",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "collected 8 rows" in proc.stdout  # 2 search versions x 2 seeds x 2 checkpoints
    dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert dry.stdout.count("done     ") == 2
    bad = subprocess.run(
        [sys.executable, "-m", "mod_arch_core", "sweep", "--profile", "nope", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown profile 'nope'" in bad.stderr
