"""Every bad input gets a clear error (issue 11, section 3).

Three layers:

* the table of ``tests/bad_inputs.py`` (every public flag and function, several hundred bad
  inputs): each must be a *clear* error, one that names the field at fault;
* property-based tests (hypothesis) over the classes of bad input: out-of-range integers for every
  integer flag, seeds beyond the RNG, unknown ``--set`` keys, non-probability scores and
  distributions;
* one test per example listed in the issue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bad_inputs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mod_arch_core import book, metrics, model_names, profiles, results
from mod_arch_core.__main__ import parse_seeds
from mod_arch_core.models import registry
from mod_arch_core.validation import SEED_LIMIT

ROOT = Path(__file__).resolve().parents[1]
CASES = bad_inputs.all_cases()
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    bad_inputs.cleanup()


def cli_error(argv: list[str]) -> str:
    """Run the CLI in-process; assert a usage error (exit 2) and return what it printed."""
    with pytest.raises(bad_inputs.CliExit) as info:
        bad_inputs.run_cli(argv)
    assert info.value.status == 2, info.value.stderr
    assert "Traceback" not in info.value.stderr
    return info.value.stderr


def sweep_error(*sets: str, profile: str = "smoke") -> str:
    argv = ["sweep", "--profile", profile, "--out", str(bad_inputs.scratch() / "s"), "--dry-run"]
    for text in sets:
        argv += ["--set", text]
    return cli_error(argv)


def train_argv(**changes: str) -> list[str]:
    flags = {**bad_inputs.TRAIN_BASE, **{f"--{k.replace('_', '-')}": v for k, v in changes.items()}}
    return bad_inputs._train_argv(flags, bad_inputs.scratch())


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def test_the_table_covers_every_train_and_sweep_flag() -> None:
    from mod_arch_core.__main__ import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    train_flags = {a.option_strings[0] for a in commands["train"]._actions if a.option_strings}
    untested = {"-h", "--out", "--no-checkpoints", "--progress", "--option", "--overwrite"}
    assert train_flags - untested <= set(bad_inputs.TRAIN_BAD), "a train flag without bad inputs"
    sweep_flags = {a.option_strings[0] for a in commands["sweep"]._actions if a.option_strings}
    covered = {flag for extra, _ in bad_inputs.SWEEP_BAD_FLAGS for flag in extra[:1]}
    boolean = {"-h", "--out", "--profile", "--set", "--checkpoints", "--no-collect", "--dry-run"}
    assert sweep_flags - boolean - {"--overwrite"} <= covered, "a sweep flag without bad inputs"
    fields = {text.split("=")[0].split(".")[0] for text, _ in bad_inputs.SWEEP_BAD_SETS}
    assert {f.name for f in profiles.dataclasses.fields(profiles.Profile)} <= fields


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case: bad_inputs.Case) -> None:
    outcome = bad_inputs.classify(case)
    assert outcome.kind == "clear", f"{outcome.kind}: {outcome.message}"


def test_the_table_is_large_and_the_classifier_tells_the_classes_apart() -> None:
    assert len(CASES) >= 400
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"

    def silent() -> None:
        return None

    def raw() -> None:
        raise KeyError("x")

    def unnamed() -> None:
        raise ValueError("bad")

    def named() -> None:
        raise ValueError("num_rules must be >= 2, got 1")

    kinds = [bad_inputs.classify(bad_inputs.Case("c", "num_rules", f)).kind for f in
             (silent, raw, unnamed, named)]  # fmt: skip
    assert kinds == ["silent", "traceback", "unclear", "clear"]


# --------------------------------------------------------------------------------------
# Property-based: classes of bad input
# --------------------------------------------------------------------------------------

INT_FLAGS = {  # flag -> (name in the message, minimum)
    "--num-rules": ("num_rules", 2),
    "--encoder-dim": ("encoder_dim", 1),
    "--dim": ("dim", 1),
    "--iterations": ("iterations", 0),
    "--batch-size": ("batch_size", 1),
    "--eval-every": ("eval_every", 1),
    "--eval-batches": ("eval_batches", 1),
}


@FAST
@given(flag=st.sampled_from(sorted(INT_FLAGS)), data=st.data())
def test_every_integer_flag_refuses_values_out_of_range(flag: str, data: st.DataObject) -> None:
    name, minimum = INT_FLAGS[flag]
    value = data.draw(
        st.one_of(st.integers(max_value=minimum - 1), st.integers(min_value=2**31)), label="value"
    )
    flags = {**bad_inputs.TRAIN_BASE, flag: str(value)}
    message = cli_error(bad_inputs._train_argv(flags, bad_inputs.scratch()))
    assert f"argument {flag}" in message and name in message


@FAST
@given(flag=st.sampled_from(sorted(INT_FLAGS)), text=st.sampled_from(["abc", "1.5", "", "1e3"]))
def test_every_integer_flag_refuses_non_integers(flag: str, text: str) -> None:
    flags = {**bad_inputs.TRAIN_BASE, flag: text}
    message = cli_error(bad_inputs._train_argv(flags, bad_inputs.scratch()))
    assert f"argument {flag}" in message and "must be an integer" in message


@given(st.integers(min_value=SEED_LIMIT, max_value=10**30))
def test_seeds_beyond_the_rng_are_refused(seed: int) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"seeds must lie in \[0, 2\*\*32"):
        parse_seeds(str(seed))
    with pytest.raises(argparse.ArgumentTypeError, match="2\\*\\*32"):
        parse_seeds(f"0-{seed}")


@given(st.lists(st.integers(0, SEED_LIMIT - 1), min_size=1, max_size=8, unique=True))
def test_valid_seed_lists_round_trip(seeds: list[int]) -> None:
    assert parse_seeds(",".join(map(str, seeds))) == tuple(seeds)


PROFILE_FIELDS = {f.name for f in profiles.dataclasses.fields(profiles.Profile)}


@FAST
@given(
    st.from_regex(r"[a-z][a-z_]{1,12}", fullmatch=True).filter(lambda k: k not in PROFILE_FIELDS)
)
def test_unknown_override_keys_are_named(key: str) -> None:
    with pytest.raises(ValueError, match=f"unknown profile field '{key}'"):
        profiles.load_profile("smoke", [f"{key}=1"])


@FAST
@given(
    head=st.sampled_from(["iterations", "eval_every", "model_options", "budget"]),
    key=st.from_regex(r"[a-z]{2,8}", fullmatch=True),
)
def test_unknown_nested_override_keys_are_named(head: str, key: str) -> None:
    allowed = profiles._nested_keys(head)
    if key in allowed:
        return
    with pytest.raises(ValueError, match=key):
        profiles.load_profile("smoke", [f"{head}.{key}=1"])


def probability_rows(r: int, n: int) -> st.SearchStrategy[np.ndarray]:
    return st.lists(
        st.lists(st.floats(0.01, 1.0), min_size=r, max_size=r), min_size=n, max_size=n
    ).map(lambda rows: (lambda a: a / a.sum(axis=-1, keepdims=True))(np.array(rows)))


@given(data=st.data(), r=st.integers(2, 5), n=st.integers(1, 6))
def test_scores_with_a_negative_entry_are_refused(data: st.DataObject, r: int, n: int) -> None:
    scores = data.draw(probability_rows(r, n))
    i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, r - 1))
    scores[i, j] = -data.draw(st.floats(0.01, 10.0))
    rules = np.arange(n) % r
    with pytest.raises(ValueError, match="scores must hold probabilities"):
        metrics.activation_matrix(scores, rules, r)
    acc = metrics.ActivationAccumulator(r)
    with pytest.raises(ValueError, match="scores"):
        acc.update(scores, rules)


@given(data=st.data(), r=st.integers(2, 6))
def test_adaptation_accepts_distributions_and_refuses_anything_else(
    data: st.DataObject, r: int
) -> None:
    p, q = data.draw(probability_rows(r, 1))[0], data.draw(probability_rows(r, 1))[0]
    assert 0.0 <= metrics.adaptation_score(p, q) <= 1.0
    bad = q.copy()
    bad[data.draw(st.integers(0, r - 1))] = data.draw(
        st.one_of(st.floats(-10, -0.01), st.floats(1.01, 10), st.just(np.nan), st.just(np.inf))
    )
    with pytest.raises(ValueError, match=r"^q must"):
        metrics.adaptation_score(p, bad)
    with pytest.raises(ValueError, match=r"^p must"):
        metrics.adaptation_score(bad, q)


@given(data=st.data(), r=st.integers(2, 5), scale=st.floats(1.01, 100))
def test_adaptation_refuses_vectors_that_do_not_sum_to_one(
    data: st.DataObject, r: int, scale: float
) -> None:
    q = data.draw(probability_rows(r, 1))[0]
    p = q / scale
    with pytest.raises(ValueError, match="summing to 1"):
        metrics.adaptation_score(p, q)


def test_scores_summing_to_one_within_float32_rounding_are_accepted() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 32)).astype(np.float32)
    scores = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    p = metrics.activation_matrix(scores, np.arange(64) % 32, 32)
    assert np.isfinite(p).all()
    metrics.adaptation_score(scores, scores[::-1])


# --------------------------------------------------------------------------------------
# The examples of the issue, one test each
# --------------------------------------------------------------------------------------


def test_sweep_set_nested_typo_is_refused() -> None:
    message = sweep_error("iterations.mpl=2000")
    assert "unknown key 'mpl' of iterations; allowed: mlp, mha, rnn" in message


def test_sweep_set_unknown_model_in_model_options_is_refused() -> None:
    message = sweep_error("model_options={modullar: {top_k: 1}}")
    assert "unknown model in model_options 'modullar'" in message and "modular-topk" in message


def test_sweep_set_unknown_option_name_is_refused() -> None:
    message = sweep_error("model_options={modular: {top_k: 1}}")
    assert "unknown option(s) ['top_k'] for model 'modular'" in message
    assert "balance_weight, entropy_weight" in message


def test_sweep_set_scalar_where_a_list_is_needed() -> None:
    message = sweep_error("num_rules=4")
    assert "num_rules must be a list, e.g. num_rules=[2, 4]; got 4" in message


def test_sweep_set_search_versions_not_a_list() -> None:
    assert "search_versions must be a list" in sweep_error("search_versions=abc")
    assert "search_versions must be a non-empty subset of [1, 2]" in sweep_error(
        "search_versions=[3]"
    )


def test_sweep_set_yaml_syntax_error_names_the_override() -> None:
    message = sweep_error("num_rules=[2,")
    assert "malformed override 'num_rules=[2,'" in message and "not valid YAML" in message


def test_profile_file_with_a_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("description: x\nnum_rules: [2, 4\nseeds: [0]\n")
    message = sweep_error(profile=str(path))
    assert f"profile file {path}:3:" in message and "invalid YAML" in message
    assert "yaml.scanner" not in message and "yaml.parser" not in message


def test_unknown_profile_lists_the_available_ones() -> None:
    message = sweep_error(profile="smok")
    assert "unknown profile 'smok'; available: " in message
    for name in profiles.available_profiles():
        assert name in message


def test_train_search_version_2_needs_mha() -> None:
    message = cli_error(train_argv(search_version="2"))
    assert "argument --search-version: applies to --setting mha only" in message


def test_train_huge_seed_is_refused() -> None:
    message = cli_error(train_argv(seeds="99999999999999999999999"))
    assert "argument --seeds: seeds must lie in [0, 2**32" in message


@pytest.mark.parametrize("device", ["meta", "foo", "mps", "cpu:0"])
def test_train_device_must_be_auto_cpu_or_cuda(device: str) -> None:
    message = cli_error(train_argv(device=device))
    assert (
        f"argument --device: {device!r} is not a device: use auto, cpu, cuda or cuda:N" in message
    )


def test_train_cuda_without_cuda_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    message = cli_error(train_argv(device="cuda"))
    assert "device 'cuda' requested but CUDA is not available" in message


@pytest.mark.parametrize("lr", ["nan", "inf", "-1", "0"])
def test_train_lr_must_be_finite_and_positive(lr: str) -> None:
    assert f"lr must be a finite number > 0, got {lr!r}" in cli_error(train_argv(lr=lr))


def test_train_option_unknown_for_the_model() -> None:
    message = cli_error([*train_argv(model="gt-modular"), "--option", "balance_weight=0.1"])
    assert (
        "argument --option: unknown option(s) ['balance_weight'] for model 'gt-modular'" in message
    )


def test_train_option_bad_value_fails_before_training() -> None:
    message = cli_error([*train_argv(model="modular-topk"), "--option", "top_k=3"])
    assert "top_k must be <= num_rules=2, got 3" in message


def test_results_load_refuses_a_row_count_other_than_meta() -> None:
    path = bad_inputs.damaged_results(bad_inputs._drop_rows)
    with pytest.raises(results.ResultsError, match=r"rows but meta\.json records"):
        results.load(path)


def test_results_load_refuses_a_dropped_perf_column() -> None:
    path = bad_inputs.damaged_results(bad_inputs._drop_perf)
    with pytest.raises(results.ResultsError, match=r"lacks the schema column\(s\) \['perf'\]"):
        results.load(path)


def test_results_load_still_reads_tables_from_before_model_options() -> None:
    def drop_options(runs, curves, meta):
        return runs.drop(columns=["model_options"]), curves, meta

    loaded = results.load(bad_inputs.damaged_results(drop_options))
    assert set(loaded.runs["model_options"]) == {"{}"}


def test_activation_matrix_refuses_negative_scores() -> None:
    scores = np.array([[1.5, -0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="scores must hold probabilities in \\[0, 1\\]"):
        metrics.activation_matrix(scores, np.array([0, 1]), 2)


def test_activation_matrix_still_passes_a_diverged_runs_nan_through() -> None:
    scores = np.full((2, 4, 2), 0.5)
    scores[1] = np.nan
    p = metrics.activation_matrix(scores, np.arange(4) % 2, 2, num_runs=2)
    assert np.isfinite(p[0]).all() and np.isnan(p[1]).all()


def test_adaptation_score_refuses_a_negative_q() -> None:
    with pytest.raises(
        ValueError, match="q must hold probabilities in \\[0, 1\\] \\(non-negative\\)"
    ):
        metrics.adaptation_score([0.5, 0.5, 0.0], [1.33, -0.33, 0.0])


def test_book_runner_refuses_an_unknown_parameter_before_executing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['num_rule'\]") as info:
        book.execute_notebooks(["03_metrics"], {"num_rule": 8}, out_dir=tmp_path, verbose=False)
    assert "profile, num_rules, num_steps, num_draws, seed, figures_dir" in str(info.value)
    assert not list(tmp_path.iterdir()), "nothing was executed"


def test_book_cli_refuses_an_unknown_param_listing_the_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["execute", "--only", "03_metrics", "--profile", "smoke", "--param", "num_rule=8"]
    assert book.main(argv) == 1
    err = capsys.readouterr().err
    assert "['num_rule']" in err and "num_rules" in err and "num_draws" in err


def test_check_parameters_compares_the_injected_cell_with_the_parameters_cell() -> None:
    params = 'profile = "book"\nnum_rules = 4  # R\nseed = 0\n'
    assert book.check_parameters(["", "import x", params, "# Parameters\nnum_rules = 8\n"]) == [
        "num_rules"
    ]
    with pytest.raises(
        ValueError, match=r"unknown parameter\(s\) \['num_rule'\]: .* profile, num_rules, seed"
    ):
        book.check_parameters(["", params, '# Parameters\nnum_rule = 8\nprofile = "smoke"\n'])
    assert book.check_parameters(["", params, "x = 1"]) == [], "interactive: nothing injected"
    assert book.check_parameters() == [], "outside a kernel it does nothing"


def test_every_chapter_checks_its_injected_parameters_first() -> None:
    import nbformat

    for path in sorted((ROOT / book.NOTEBOOK_DIR).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        index = next(
            i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])
        )
        assert "check_parameters()" in nb.cells[index + 1].source, path.name
        assert sorted(book.notebook_parameters(path)) == sorted(book.declared_parameters(path))


@pytest.mark.slow
def test_papermill_with_a_misspelled_parameter_stops_the_notebook(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "papermill", "notebooks/03_metrics.ipynb", str(tmp_path / "o.ipynb"),
           "-k", "python3", "--cwd", "notebooks", "-p", "num_rule", "8", "-p", "profile", "smoke"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 1
    assert (
        "unknown parameter(s) ['num_rule']: this notebook's parameters are profile, num_rules"
        in (proc.stdout + proc.stderr)
    )
    executed = json.loads((tmp_path / "o.ipynb").read_text())
    assert executed["metadata"]["papermill"]["exception"]


def test_cli_rejects_a_bad_flag_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from mod_arch_core.__main__ import main\n"
        "try:\n"
        "    main(['train', '--bogus'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 2, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mod_arch_core", "train", "--bogus"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "mod_arch_core.models" not in imported


def test_light_model_names_agree_with_the_registry() -> None:
    assert model_names.MODEL_NAMES == registry.MODEL_NAMES == tuple(registry.MODELS)
    for name, spec in registry.MODELS.items():
        assert model_names.MODEL_OPTIONS[name] == spec.allowed_options, name
