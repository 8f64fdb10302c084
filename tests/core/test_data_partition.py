"""Tests of orchard.data.partition."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from orchard.data.partition import (
    PartitionError,
    PartitionSpec,
    _dirichlet_draw,
    dirichlet,
    iid,
    shards,
    train_val_split,
)


def _as_lists(parts: list[np.ndarray]) -> list[list[int]]:
    return [p.tolist() for p in parts]


def _assert_disjoint_and_complete(parts: list[np.ndarray], n: int) -> None:
    everything = np.concatenate(parts)
    assert everything.size == n, "partitions overlap or miss examples"
    assert np.array_equal(np.sort(everything), np.arange(n))
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "each partition is sorted without repeats"


def _total_variation_from_global(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over clients of the TV distance between their label mix and the global one."""
    classes = int(labels.max()) + 1
    global_mix = np.bincount(labels, minlength=classes) / labels.size
    distances = [
        0.5 * np.abs(np.bincount(labels[p], minlength=classes) / p.size - global_mix).sum()
        for p in parts
    ]
    return float(np.mean(distances))


# Golden values: the same seed must give the same split on NumPy 1.23 (MXNet
# clients) and NumPy 2.x (PyTorch clients), since each client computes its own
# share. This file runs under both environments against these literals.
GOLDEN_LABELS = np.arange(40) % 4


def test_golden_iid() -> None:
    assert _as_lists(iid(10, 3, seed=7)) == [[0, 1, 7, 8], [2, 3, 6], [4, 5, 9]]


def test_golden_shards() -> None:
    assert _as_lists(shards(GOLDEN_LABELS, 4, shards_per_client=2, seed=7)) == [
        [0, 3, 4, 7, 8, 11, 12, 15, 16, 19],
        [1, 5, 9, 13, 17, 23, 27, 31, 35, 39],
        [2, 6, 10, 14, 18, 22, 26, 30, 34, 38],
        [20, 21, 24, 25, 28, 29, 32, 33, 36, 37],
    ]


def test_golden_dirichlet() -> None:
    assert _as_lists(dirichlet(GOLDEN_LABELS, 3, alpha=0.3, seed=7, min_size=2)) == [
        [0, 3, 4, 8, 12, 16, 24, 28, 32, 35, 39],
        [9, 13, 14, 17, 18, 19, 26, 30, 33, 37],
        [1, 2, 5, 6, 7, 10, 11, 15, 20, 21, 22, 23, 25, 27, 29, 31, 34, 36, 38],
    ]


def test_golden_train_val_split() -> None:
    train, val = train_val_split(np.arange(20), seed=7)
    assert val.tolist() == [3, 8]
    assert train.tolist() == [i for i in range(20) if i not in (3, 8)]


# --- iid ---------------------------------------------------------------------


def test_iid_is_deterministic_disjoint_complete_and_balanced() -> None:
    parts = iid(1003, 10, seed=1)
    _assert_disjoint_and_complete(parts, 1003)
    assert sorted(p.size for p in parts) == [100] * 7 + [101] * 3
    assert _as_lists(iid(1003, 10, seed=1)) == _as_lists(parts)
    assert _as_lists(iid(1003, 10, seed=2)) != _as_lists(parts)


def test_iid_is_not_a_contiguous_split() -> None:
    first = iid(1000, 4, seed=0)[0]
    assert first.max() - first.min() > 500


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"num_examples": 3, "num_partitions": 5}, "too few examples"),
        ({"num_examples": 3, "num_partitions": 0}, "num_partitions must be >= 1"),
        ({"num_examples": -1, "num_partitions": 1}, "num_examples must be >= 0"),
    ],
)
def test_iid_validation(kwargs: dict[str, int], problem: str) -> None:
    with pytest.raises(PartitionError, match=problem):
        iid(seed=0, **kwargs)


# --- shards ------------------------------------------------------------------


def _reference_shards(labels: np.ndarray, num_shards: int) -> list[set[int]]:
    """Shards built independently: sort by (label, index), cut into near-equal pieces."""
    order = sorted(range(labels.size), key=lambda i: (int(labels[i]), i))
    base, extra = divmod(labels.size, num_shards)
    result, start = [], 0
    for s in range(num_shards):
        size = base + (1 if s < extra else 0)
        result.append(set(order[start : start + size]))
        start += size
    return result


@pytest.mark.parametrize(
    ("n", "num_partitions", "per_client", "label_seed"),
    [(2000, 100, 2, 0), (1237, 30, 3, 1), (500, 7, 1, 2)],
)
def test_each_client_gets_exactly_its_shards(
    n: int, num_partitions: int, per_client: int, label_seed: int
) -> None:
    labels = np.random.default_rng(label_seed).integers(0, 10, size=n)
    parts = shards(labels, num_partitions, shards_per_client=per_client, seed=3)
    assert len(parts) == num_partitions
    _assert_disjoint_and_complete(parts, n)
    reference = _reference_shards(labels, num_partitions * per_client)
    used: list[int] = []
    for part in parts:
        members = set(part.tolist())
        mine = [s for s, shard in enumerate(reference) if shard <= members]
        assert len(mine) == per_client
        assert set().union(*(reference[s] for s in mine)) == members
        # The client's labels are exactly those of its shards.
        shard_labels = set().union(*({int(labels[i]) for i in reference[s]} for s in mine))
        assert set(labels[part].tolist()) == shard_labels
        used.extend(mine)
    assert sorted(used) == list(range(num_partitions * per_client))


def test_balanced_mnist_like_labels_give_at_most_two_classes_per_client() -> None:
    # 10 balanced classes of 200 examples, 100 clients x 2 shards of 10 examples:
    # every shard lies inside one class, as in McMahan et al.'s MNIST setting.
    labels = np.repeat(np.arange(10), 200)
    parts = shards(labels, 100, shards_per_client=2, seed=0)
    distinct = [len(set(labels[p].tolist())) for p in parts]
    assert max(distinct) <= 2
    assert sum(d == 2 for d in distinct) > 50  # most clients see two classes, not one
    assert all(p.size == 20 for p in parts)


def test_shards_is_deterministic_under_a_seed() -> None:
    labels = np.arange(300) % 10
    assert _as_lists(shards(labels, 10, seed=5)) == _as_lists(shards(labels, 10, seed=5))
    assert _as_lists(shards(labels, 10, seed=5)) != _as_lists(shards(labels, 10, seed=6))


def test_shards_needs_an_example_per_shard() -> None:
    with pytest.raises(PartitionError, match=r"too few examples.*shards_per_client=2"):
        shards(np.zeros(7, dtype=np.int64), 4, seed=0)


@pytest.mark.parametrize(
    ("labels", "problem"),
    [(np.zeros((4, 2), dtype=np.int64), "1-D"), (np.zeros(8, dtype=np.float32), "integer")],
)
def test_labels_are_validated(labels: np.ndarray, problem: str) -> None:
    with pytest.raises(PartitionError, match=problem):
        shards(labels, 2, seed=0)


# --- dirichlet -----------------------------------------------------------------


def test_dirichlet_is_deterministic_disjoint_complete_and_respects_min_size() -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=3000)
    parts = dirichlet(labels, 20, alpha=0.3, seed=4, min_size=25)
    _assert_disjoint_and_complete(parts, labels.size)
    assert min(p.size for p in parts) >= 25
    again = dirichlet(labels, 20, alpha=0.3, seed=4, min_size=25)
    assert _as_lists(again) == _as_lists(parts)
    assert _as_lists(dirichlet(labels, 20, alpha=0.3, seed=5, min_size=25)) != _as_lists(parts)


def test_smaller_alpha_gives_more_label_skew() -> None:
    labels = np.arange(4000) % 10
    skews = [
        _total_variation_from_global(labels, dirichlet(labels, 20, alpha=alpha, seed=0, min_size=5))
        for alpha in (0.05, 0.5, 5.0, 500.0)
    ]
    assert skews == sorted(skews, reverse=True)
    assert skews[0] > 0.6  # nearly one class per client
    assert skews[-1] < 0.05  # nearly the global mix


def test_dirichlet_draw_matches_the_dirichlet_moments() -> None:
    rng = np.random.default_rng(0)
    draws = np.stack([_dirichlet_draw(rng, 2.0, 4) for _ in range(4000)])
    np.testing.assert_allclose(draws.sum(axis=1), 1.0)
    # Symmetric Dir(a) of dimension k: mean 1/k, variance (k-1) / (k^2 (k a + 1)).
    np.testing.assert_allclose(draws.mean(axis=0), 0.25, atol=0.01)
    np.testing.assert_allclose(draws.var(axis=0), 3 / (16 * 9), rtol=0.1)


def test_dirichlet_draw_survives_tiny_alpha() -> None:
    draw = _dirichlet_draw(np.random.default_rng(0), 1e-4, 50)
    assert np.all(np.isfinite(draw))
    assert draw.sum() == pytest.approx(1.0)
    assert draw.max() > 0.99  # essentially one client takes the class


def test_unreachable_min_size_fails_after_bounded_attempts() -> None:
    labels = np.arange(1000) % 10
    with pytest.raises(PartitionError, match=r"min_size=45.*max_attempts=5.*alpha=0\.01"):
        dirichlet(labels, 20, alpha=0.01, seed=0, min_size=45, max_attempts=5)


def test_dirichlet_rejects_too_few_examples_up_front() -> None:
    with pytest.raises(PartitionError, match=r"too few examples.*min_size=10"):
        dirichlet(np.arange(50) % 10, 10, alpha=1.0, seed=0)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_dirichlet_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(PartitionError, match="alpha must be a finite number > 0"):
        dirichlet(np.arange(100) % 10, 2, alpha=alpha, seed=0)


# --- train_val_split -----------------------------------------------------------


def test_train_val_split_is_ninety_ten_disjoint_and_complete() -> None:
    indices = np.arange(5000, 6000)
    train, val = train_val_split(indices, seed=3)
    assert (train.size, val.size) == (900, 100)
    assert np.array_equal(np.sort(np.concatenate([train, val])), indices)
    assert np.intersect1d(train, val).size == 0
    again = train_val_split(indices, seed=3)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(train_val_split(indices, seed=4)[1], val)


@pytest.mark.parametrize(
    ("n", "fraction", "expected_val"),
    [(4, 0.1, 1), (5, 0.1, 1), (15, 0.1, 2), (2, 0.9, 1), (10, 0.0, 0), (1, 0.5, 1)],
)
def test_train_val_split_sizes(n: int, fraction: float, expected_val: int) -> None:
    train, val = train_val_split(np.arange(n), val_fraction=fraction, seed=0)
    assert val.size == expected_val
    assert train.size == n - expected_val


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2.0])
def test_train_val_split_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(PartitionError, match="val_fraction must be in"):
        train_val_split(np.arange(10), val_fraction=fraction, seed=0)


# --- PartitionSpec -------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        PartitionSpec(scheme="iid", num_partitions=5, seed=1),
        PartitionSpec(scheme="shards", num_partitions=5, seed=1, shards_per_client=3),
        PartitionSpec(scheme="dirichlet", num_partitions=5, seed=1, alpha=0.5, min_size=3),
    ],
)
def test_spec_select_matches_the_function_it_names(spec: PartitionSpec) -> None:
    labels = np.arange(600) % 10
    parts = spec.partition(labels)
    if spec.scheme == "iid":
        expected = iid(600, 5, seed=1)
    elif spec.scheme == "shards":
        expected = shards(labels, 5, shards_per_client=3, seed=1)
    else:
        expected = dirichlet(labels, 5, alpha=0.5, seed=1, min_size=3)
    assert _as_lists(parts) == _as_lists(expected)
    for partition_id in range(5):
        assert np.array_equal(spec.select(labels, partition_id), expected[partition_id])


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"scheme": "random", "num_partitions": 2}, "scheme 'random' is not supported"),
        ({"scheme": "iid", "num_partitions": 0}, "num_partitions must be >= 1"),
        ({"scheme": "dirichlet", "num_partitions": 2}, "alpha is required"),
        ({"scheme": "dirichlet", "num_partitions": 2, "alpha": 0.0}, "alpha must be"),
        ({"scheme": "dirichlet", "num_partitions": 2, "alpha": -2.0}, "alpha must be"),
        ({"scheme": "iid", "num_partitions": 2, "alpha": 0.5}, "alpha=0.5 only applies"),
        ({"scheme": "shards", "num_partitions": 2, "shards_per_client": 0}, "shards_per_client"),
        ({"scheme": "iid", "num_partitions": 2, "seed": -1}, "seed must be >= 0"),
    ],
)
def test_spec_validation_names_the_option(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(PartitionError, match=problem):
        PartitionSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("partition_id", [-1, 4, 10])
def test_select_rejects_out_of_range_ids(partition_id: int) -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=4)
    with pytest.raises(PartitionError, match=r"partition_id .* out of range.*valid: 0\.\.3"):
        spec.select(np.arange(40) % 10, partition_id)


def test_spec_reports_too_few_examples() -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=50)
    with pytest.raises(PartitionError, match="too few examples"):
        spec.select(np.arange(10), 0)


def test_spec_is_frozen_and_keyword_only() -> None:
    spec = PartitionSpec(scheme="iid", num_partitions=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_partitions = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        PartitionSpec("iid", 2)  # type: ignore[call-arg]
