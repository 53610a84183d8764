"""Tests of the rule data (spec §2): coefficients, labels, sampling contract, validation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mod_arch_core.data import Batch, RuleTask, make_task, mha, sample_stack

# (setting, task, options): every rule family, both tasks, both MHA search versions.
CONFIGS = [
    ("mlp", "regression", {}),
    ("mlp", "classification", {}),
    ("mha", "regression", {"search_version": 1}),
    ("mha", "classification", {"search_version": 1}),
    ("mha", "regression", {"search_version": 2}),
    ("mha", "classification", {"search_version": 2}),
    ("rnn", "regression", {}),
    ("rnn", "classification", {}),
]
CONFIG_IDS = [f"{s}-{t}{'-v' + str(o['search_version']) if o else ''}" for s, t, o in CONFIGS]
SKEWED = [0.05, 0.15, 0.0, 0.8]  # R = 4, one impossible rule


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


#: Relative tolerance of the stacked-vs-alone contract on targets: two float32 ulps. Inputs and
#: rules are drawn by the same generator calls and must be bitwise equal. Targets are computed in
#: float64 and rounded to float32 once; in float64 a matrix product's rounding still depends on
#: the BLAS kernel, which depends on the batch shape (stacked or alone) and on the CPU, and a
#: difference of ~1e-16 changes the float32 result only when it straddles a rounding boundary,
#: and then by one ulp. Classification targets are thresholded and so compared exactly.
TARGET_RTOL = 2.0**-22


def assert_same_batch(a: Batch, b: Batch) -> None:
    """The sampling contract between a stacked draw and the same draw alone (see TARGET_RTOL)."""
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.rules, b.rules)
    torch.testing.assert_close(a.targets, b.targets, rtol=TARGET_RTOL, atol=0.0)


def small_task(setting: str, task: str, options: dict, data_seed: int = 0, **kw) -> RuleTask:
    return make_task(setting, task, kw.pop("num_rules", 4), data_seed, **options, **kw)


def split_inputs(task: RuleTask, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Recover the raw features (float64) and the rules from model inputs."""
    x = inputs.double().numpy()
    return x[..., : task.feature_dim], x[..., task.feature_dim :].argmax(-1)


# ----------------------------------------------------------------------------------------
# Naive oracles: plain loops over examples / tokens / steps, written from spec §2.


def naive_latent(task: RuleTask, inputs: torch.Tensor) -> np.ndarray:
    """Real-valued labels (before the classification threshold) of one batch."""
    feats, rules = split_inputs(task, inputs)
    if task.setting == "mlp":
        out = np.zeros(len(feats))
        for b in range(len(feats)):
            c = rules[b]
            out[b] = task.alpha[c] * feats[b, 0] + task.beta[c] * feats[b, 1]
        return out
    if task.setting == "mha":
        return naive_mha(task, feats, rules)
    return naive_rnn(task, feats, rules)


def naive_mha(task: RuleTask, feats: np.ndarray, rules: np.ndarray) -> np.ndarray:
    k = 4 if task.search_version == 1 else 6
    batch, length, _ = feats.shape
    out = np.zeros((batch, length))
    for b in range(batch):
        for i in range(length):
            c = rules[b, i]
            cols = feats[b, :, k * c : k * c + k]  # every token's features under rule c
            found = []
            for which in range(2):  # q then q'
                best, best_score = None, None
                for j in range(length):
                    if j == i:
                        continue
                    if task.search_version == 1:
                        score = -abs(cols[j, which] - cols[i, which])
                    else:
                        qj, qi = (
                            cols[j, 2 * which : 2 * which + 2],
                            cols[i, 2 * which : 2 * which + 2],
                        )
                        score = qj[0] * qi[0] + qj[1] * qi[1]
                    if best is None or score > best_score:  # strict: first index wins ties
                        best, best_score = j, score
                found.append(best)
            s, s_prime = found
            out[b, i] = task.alpha[c] * cols[s, k - 2] + task.beta[c] * cols[s_prime, k - 1]
    return out


def naive_rnn(task: RuleTask, feats: np.ndarray, rules: np.ndarray) -> np.ndarray:
    batch, length, d = feats.shape
    states = np.zeros((batch, length, d))
    for b in range(batch):
        s = np.zeros(d)
        for t in range(length):
            c = rules[b, t]
            s = feats[b, t] @ task.B[c] + s @ task.A[c, 0]
            states[b, t] = s
    if task.w is None:
        return states
    return states @ task.w[:, 0]


def assert_labels_match(task: RuleTask, batch: Batch) -> None:
    """Targets equal the naive float64 oracle rounded to float32.

    MLP/MHA labels are elementwise in float64: bit-exact. RNN labels are a float64 recursion of
    matrix products whose summation order differs from the oracle's loop (~1e-16 apart), so they
    agree within :data:`TARGET_RTOL`, and classes agree wherever the latent is not within 1e-9 of 0.
    """
    latent = naive_latent(task, batch.inputs)
    targets = batch.targets.double().numpy()
    exact = task.setting != "rnn"
    if not task.is_classification:
        if exact:
            np.testing.assert_array_equal(targets, latent.astype(np.float32))
        else:
            np.testing.assert_allclose(
                targets, latent.astype(np.float32), rtol=TARGET_RTOL, atol=0.0
            )
        return
    expected = (latent >= 0).astype(np.float64)
    assert set(np.unique(targets)) <= {0.0, 1.0}
    if exact:
        np.testing.assert_array_equal(targets, expected)
    else:
        disagree = targets != expected
        assert np.all(np.abs(latent[disagree]) < 1e-9)


# ----------------------------------------------------------------------------------------
# Coefficients (spec §2.1-2.3, §2.5).


def test_reference_coefficients_seed0():
    task = make_task("mlp", "regression", 4, 0)
    np.testing.assert_allclose(task.alpha, [1.76405, 0.40016, 0.97874, 2.24089], atol=5e-6)
    np.testing.assert_allclose(task.beta, [1.86756, -0.97728, 0.95009, -0.15136], atol=5e-6)
    assert task.alpha.dtype == np.float64 and task.A is None and task.w is None


@pytest.mark.parametrize("data_seed", [0, 3])
@pytest.mark.parametrize("num_rules", [2, 8])
def test_mlp_and_mha_share_alpha_beta(data_seed, num_rules):
    ref = make_task("mlp", "classification", num_rules, data_seed)
    for version in (1, 2):
        other = make_task("mha", "regression", num_rules, data_seed, search_version=version)
        np.testing.assert_array_equal(other.alpha, ref.alpha)
        np.testing.assert_array_equal(other.beta, ref.beta)


def test_rnn_coefficients_follow_reference_recipe():
    reg = make_task("rnn", "regression", 4, 2)
    cls = make_task("rnn", "classification", 4, 2)
    rng = np.random.RandomState(2)
    A = rng.randn(4, 1, 32, 32) / np.sqrt(32)
    B = rng.randn(4, 32, 32) / np.sqrt(32)
    w = rng.randn(32, 1)
    for task in (reg, cls):
        np.testing.assert_array_equal(task.A, A)
        np.testing.assert_array_equal(task.B, B)
        assert task.alpha is None and task.beta is None
    assert reg.w is None
    np.testing.assert_array_equal(cls.w, w)


def test_coefficients_are_read_only_and_cached_tensors():
    task = make_task("rnn", "classification", 3, 1, state_dim=6)
    with pytest.raises(ValueError, match="read-only"):
        task.A[0, 0, 0, 0] = 1.0
    tensors = task.coefficients()
    assert set(tensors) == {"A", "B", "w"}
    assert tensors["A"].dtype == torch.float64 and tensors["A"].shape == (3, 1, 6, 6)
    assert task.coefficients() is tensors
    assert task.coefficients(dtype=torch.float32)["B"].dtype == torch.float32


def test_task_identity_names_and_pickle():
    a = make_task("MHA", "Regression", 4, 1, search_version=2)
    b = make_task("mha", "regression", 4, 1, search_version=2)
    assert a == b and hash(a) == hash(b)
    assert a != make_task("mha", "regression", 4, 2, search_version=2)
    assert (a.setting, a.task, a.options) == ("mha", "regression", {"search_version": 2})
    c = pickle.loads(pickle.dumps(a))
    assert c == a
    np.testing.assert_array_equal(c.alpha, a.alpha)
    mlp = make_task("mlp", "regression", 4, 0)
    assert (mlp.search_version, mlp.state_dim, mlp.order) == (None, None, None)


@pytest.mark.parametrize(
    ("setting", "task", "options", "dims"),
    [
        ("mlp", "regression", {}, (6, 1, False, None)),
        ("mha", "classification", {"search_version": 1}, (20, 1, True, 10)),
        ("mha", "regression", {"search_version": 2}, (28, 1, True, 10)),
        ("rnn", "regression", {}, (36, 32, True, 10)),
        ("rnn", "classification", {}, (36, 1, True, 10)),
    ],
)
def test_task_properties(setting, task, options, dims):
    t = make_task(setting, task, 4, 0, **options)
    assert (t.input_dim, t.output_dim, t.is_sequence, t.default_seq_len) == dims


# ----------------------------------------------------------------------------------------
# Labels against the naive oracles.


@pytest.mark.parametrize("prob", [None, SKEWED], ids=["uniform", "skewed"])
@pytest.mark.parametrize("ood", [False, True], ids=["id", "ood"])
@pytest.mark.parametrize(("setting", "task", "options"), CONFIGS, ids=CONFIG_IDS)
def test_labels_match_naive_loops(setting, task, options, ood, prob):
    t = small_task(setting, task, options, data_seed=3)
    seq_len = None if setting == "mlp" else 6
    batch = t.sample(24, gen(7), ood=ood, prob=prob, seq_len=seq_len)
    assert_labels_match(t, batch)


@pytest.mark.parametrize("version", [1, 2])
def test_mha_shortest_sequence_retrieves_the_other_token(version):
    t = make_task("mha", "regression", 3, 0, search_version=version)
    batch = t.sample(16, gen(1), seq_len=2)
    assert_labels_match(t, batch)


def test_mha_search_ties_take_the_first_index():
    # One rule (R = 1 block of columns), three tokens; token 0 is equidistant from 1 and 2.
    feats = torch.tensor(
        [[[0.0, 5.0, 10.0, 20.0], [1.0, 0.0, 11.0, 21.0], [-1.0, 0.0, 12.0, 22.0]]]
    )
    rules = torch.zeros(1, 3, dtype=torch.long)
    s, s_prime, v, v_prime = mha.search(feats, rules, search_version=1)
    assert s.tolist() == [[1, 0, 0]]
    assert s_prime.tolist() == [[1, 2, 1]]  # q' = [5, 0, 0]: token 1 ties with 2 -> first
    assert v.tolist() == [[11.0, 10.0, 10.0]] and v_prime.tolist() == [[21.0, 22.0, 21.0]]
    # Version 2: cosine with 2-d keys; token 0 = (1, 0) is equally close to (0, 1), (0, -1).
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    feats2 = torch.cat([keys, keys, torch.zeros(3, 2)], dim=-1)[None]
    s2, _, _, _ = mha.search(feats2, rules, search_version=2)
    assert s2.tolist() == [[1, 0, 0]]


def test_mha_v2_keys_are_unit_vectors():
    t = make_task("mha", "regression", 3, 0, search_version=2)
    feats = t.sample(8, gen(0)).inputs[..., : t.feature_dim].reshape(8, 10, 3, 6)
    norms = torch.linalg.vector_norm(feats[..., :4].reshape(8, 10, 3, 2, 2), dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


# ----------------------------------------------------------------------------------------
# Shapes, dtypes, one-hot, OoD.


@pytest.mark.parametrize(("setting", "task", "options"), CONFIGS, ids=CONFIG_IDS)
def test_shapes_dtypes_and_onehot(setting, task, options):
    t = small_task(setting, task, options, num_rules=3)
    lead = (5,) if setting == "mlp" else (5, t.default_seq_len)
    batch = t.sample(5, gen(0))
    assert batch.inputs.shape == (*lead, t.input_dim)
    expected_targets = lead if t.output_dim == 1 else (*lead, t.output_dim)
    assert batch.targets.shape == expected_targets
    assert batch.rules.shape == lead
    assert (batch.inputs.dtype, batch.targets.dtype, batch.rules.dtype) == (
        torch.float32,
        torch.float32,
        torch.int64,
    )
    onehot = torch.nn.functional.one_hot(batch.rules, 3).float()
    assert torch.equal(batch.inputs[..., t.feature_dim :], onehot)
    if t.is_sequence:
        other = t.sample(5, gen(0), seq_len=3)
        assert other.inputs.shape == (5, 3, t.input_dim)


@pytest.mark.parametrize(("setting", "task", "options"), CONFIGS, ids=CONFIG_IDS)
def test_ood_doubles_raw_inputs_only(setting, task, options):
    t = small_task(setting, task, options)
    iid = t.sample(16, gen(4), prob=SKEWED)
    ood = t.sample(16, gen(4), prob=SKEWED, ood=True)
    f = t.feature_dim
    assert torch.equal(ood.inputs[..., :f], 2 * iid.inputs[..., :f])
    assert torch.equal(ood.inputs[..., f:], iid.inputs[..., f:])
    assert torch.equal(ood.rules, iid.rules)
    # Linear in the inputs: regression targets double; the sign (class) is unchanged.
    factor = 1 if t.is_classification else 2
    assert torch.equal(ood.targets, factor * iid.targets)


# ----------------------------------------------------------------------------------------
# Rule frequencies (spec §2.4).


@pytest.mark.parametrize(
    ("setting", "options"),
    [("mlp", {}), ("mha", {"search_version": 2}), ("rnn", {"state_dim": 2})],
)
@pytest.mark.parametrize("prob", [None, [0.1, 0.2, 0.3, 0.0, 0.4]], ids=["uniform", "skewed"])
def test_rule_frequencies_follow_prob(setting, options, prob):
    """Chi-square goodness of fit on 20,000 draws.

    The seed is fixed, so the test is deterministic; the 1e-3 threshold means a correct
    sampler would fail for only ~1 in 1000 seeds, while a wrong distribution (e.g. a
    0.05 shift in one probability) gives p-values far below 1e-10 at this sample size.
    """
    t = make_task(setting, "regression", 5, 0, **options)
    batch_size = 20_000 if setting == "mlp" else 2_000
    rules = t.sample(batch_size, gen(11), prob=prob).rules.flatten()
    counts = torch.bincount(rules, minlength=5).numpy()
    p = np.full(5, 0.2) if prob is None else np.asarray(prob)
    assert counts.sum() == 20_000
    assert np.all(counts[p == 0] == 0)
    keep = p > 0
    result = stats.chisquare(counts[keep], 20_000 * p[keep])
    assert result.pvalue > 1e-3


def test_prob_accepts_list_array_and_tensor():
    t = make_task("mlp", "regression", 4, 0)
    ref = t.sample(32, gen(2), prob=SKEWED)
    for prob in (np.array(SKEWED), torch.tensor(SKEWED), tuple(SKEWED)):
        other = t.sample(32, gen(2), prob=prob)
        assert all(torch.equal(a, b) for a, b in zip(ref, other, strict=True))


# ----------------------------------------------------------------------------------------
# Stacked sampling contract.


@pytest.mark.parametrize(("setting", "task", "options"), CONFIGS, ids=CONFIG_IDS)
def test_stack_rows_equal_single_samples(setting, task, options):
    tasks = [small_task(setting, task, options, data_seed=s) for s in (0, 1, 2, 1)]
    seeds = [10, 11, 12, 13]
    kw = {"ood": True, "prob": SKEWED}
    stacked = sample_stack(tasks, 12, [gen(s) for s in seeds], **kw)
    assert stacked.inputs.shape[0] == 4
    for k, (task_k, seed) in enumerate(zip(tasks, seeds, strict=True)):
        assert_same_batch(stacked.run(k), task_k.sample(12, gen(seed), **kw))
    # Position in the stack does not matter.
    reversed_stack = sample_stack(tasks[::-1], 12, [gen(s) for s in seeds[::-1]], **kw)
    assert_same_batch(reversed_stack.run(0), stacked.run(3))


@pytest.mark.parametrize(("setting", "task", "options"), CONFIGS, ids=CONFIG_IDS)
def test_shared_generator_shares_inputs_not_labels(setting, task, options):
    tasks = [small_task(setting, task, options, data_seed=s) for s in (0, 1, 2)]
    shared, own = gen(5), gen(6)
    stacked = sample_stack(tasks, 16, [shared, shared, own])
    assert torch.equal(stacked.inputs[0], stacked.inputs[1])
    assert torch.equal(stacked.rules[0], stacked.rules[1])
    assert not torch.equal(stacked.targets[0], stacked.targets[1])
    for k, seed in enumerate((5, 5, 6)):
        assert_same_batch(stacked.run(k), tasks[k].sample(16, gen(seed)))
    # The shared generator advanced exactly once, as after one single-task sample.
    reference = gen(5)
    tasks[0].sample(16, reference)
    assert torch.equal(torch.rand(3, generator=shared), torch.rand(3, generator=reference))


@settings(max_examples=15, deadline=None)
@given(
    data=st.data(),
    config=st.sampled_from(CONFIGS),
    num_runs=st.integers(1, 5),
)
def test_stack_contract_for_any_sharing_pattern(data, config, num_runs):
    setting, task, options = config
    data_seeds = data.draw(st.lists(st.integers(0, 4), min_size=num_runs, max_size=num_runs))
    gen_ids = data.draw(st.lists(st.integers(0, 2), min_size=num_runs, max_size=num_runs))
    tasks = [small_task(setting, task, options, data_seed=s, num_rules=3) for s in data_seeds]
    pool = [gen(100 + i) for i in range(3)]
    stacked = sample_stack(tasks, 6, [pool[i] for i in gen_ids])
    for k in range(num_runs):
        assert_same_batch(stacked.run(k), tasks[k].sample(6, gen(100 + gen_ids[k])))


# ----------------------------------------------------------------------------------------
# Determinism.


@pytest.mark.parametrize(("setting", "task", "options"), CONFIGS[::2], ids=CONFIG_IDS[::2])
def test_same_seed_same_batch_different_seed_different(setting, task, options):
    t = small_task(setting, task, options)
    a, b, c = t.sample(8, gen(0)), t.sample(8, gen(0)), t.sample(8, gen(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.inputs, c.inputs)
    assert not torch.equal(a.targets, c.targets)
    other_task = small_task(setting, task, options, data_seed=1)
    assert not torch.equal(a.targets, other_task.sample(8, gen(0)).targets)


# ----------------------------------------------------------------------------------------
# Bad input: every error names the argument.


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("cnn", "regression", 4, 0), {}, ValueError, "setting"),
        (("mlp", "ranking", 4, 0), {}, ValueError, "task"),
        (("mlp", "regression", 1, 0), {}, ValueError, "num_rules"),
        (("mlp", "regression", 2.0, 0), {}, TypeError, "num_rules"),
        (("mlp", "regression", 4, -1), {}, ValueError, "data_seed"),
        (("mlp", "regression", 4, 2**32), {}, ValueError, "data_seed"),
        (("mha", "regression", 4, 0), {"search_version": 3}, ValueError, "search_version"),
        (("mlp", "regression", 4, 0), {"search_version": 2}, ValueError, "search_version"),
        (("mha", "regression", 4, 0), {"state_dim": 16}, ValueError, "state_dim"),
        (("rnn", "regression", 4, 0), {"order": 2}, ValueError, "order"),
        (("rnn", "regression", 4, 0), {"state_dim": 0}, ValueError, "state_dim"),
    ],
)
def test_make_task_rejects_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_task(*args, **kwargs)


@pytest.mark.parametrize(
    ("setting", "kwargs", "error", "match"),
    [
        ("mha", {"seq_len": 1}, ValueError, "seq_len must be >= 2"),
        ("rnn", {"seq_len": 0}, ValueError, "seq_len must be >= 1"),
        ("mlp", {"seq_len": 5}, ValueError, "seq_len"),
        ("mlp", {"prob": [0.5, 0.5]}, ValueError, "prob must have shape"),
        ("mlp", {"prob": [0.5, 0.6, -0.1, 0.0]}, ValueError, "prob must be non-negative"),
        ("mlp", {"prob": [0.3, 0.3, 0.3, 0.3]}, ValueError, "prob must sum to 1"),
        ("mlp", {"prob": [np.nan, 0.5, 0.25, 0.25]}, ValueError, "prob must be finite"),
        ("mlp", {"prob": "uniform"}, (TypeError, ValueError), "prob"),
        ("mlp", {"ood": "yes"}, TypeError, "ood"),
        ("mlp", {"device": "meta"}, ValueError, "device"),
    ],
)
def test_sample_rejects_bad_arguments(setting, kwargs, error, match):
    t = make_task(setting, "regression", 4, 0)
    with pytest.raises(error, match=match):
        t.sample(4, gen(0), **kwargs)


def test_sample_rejects_bad_batch_size_and_rng():
    t = make_task("mlp", "regression", 4, 0)
    with pytest.raises(ValueError, match="batch_size"):
        t.sample(0, gen(0))
    with pytest.raises(TypeError, match=r"rng must be a torch\.Generator"):
        t.sample(4, np.random.RandomState(0))


def test_sample_stack_rejects_bad_arguments():
    a = make_task("mha", "regression", 4, 0)
    with pytest.raises(ValueError, match="tasks must share"):
        sample_stack([a, make_task("mha", "regression", 3, 1)], 4, [gen(0), gen(1)])
    with pytest.raises(ValueError, match="tasks must share"):
        sample_stack([a, make_task("mha", "classification", 4, 1)], 4, [gen(0), gen(1)])
    with pytest.raises(ValueError, match="tasks must share"):
        sample_stack(
            [a, make_task("mha", "regression", 4, 1, search_version=2)], 4, [gen(0), gen(1)]
        )
    with pytest.raises(ValueError, match="rngs must hold one generator per task"):
        sample_stack([a, a], 4, [gen(0)])
    with pytest.raises(TypeError, match=r"rngs\[1\]"):
        sample_stack([a, a], 4, [gen(0), 1])
    with pytest.raises(TypeError, match=r"tasks\[0\]"):
        sample_stack(["mha"], 4, [gen(0)])
    with pytest.raises(ValueError, match="tasks must hold at least one"):
        sample_stack([], 4, [])
