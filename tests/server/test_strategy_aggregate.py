"""Aggregates: FedAvg's weighted mean, Yin et al.'s median and trimmed mean, metrics."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from orchard.folding import CAST_BUFFER, CAST_BUFFER_FROM, FLOAT64_BLOCK, add_cast
from orchard.typing import Metrics, NDArrays
from orchard_server.strategy import (
    AggregationError,
    CoordinateMedian,
    TrimmedMean,
    WeightedMean,
    median,
    trimmed_mean,
    weighted_average_loss,
    weighted_average_metrics,
    weighted_mean,
)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# --------------------------------------------------------------------------- weighted mean


def test_weighted_mean_by_hand() -> None:
    # (1 * 2 + 3 * 4) / (1 + 3) = 14 / 4 = 3.5 ; (1 * 10 + 3 * -2) / 4 = 4 / 4 = 1.0
    results = [([f32(2.0), f32(10.0)], 1), ([f32(4.0), f32(-2.0)], 3)]
    got = weighted_mean(results)
    assert [a.tolist() for a in got] == [[3.5], [1.0]]
    assert [a.dtype for a in got] == [np.float32, np.float32]


def test_weighted_mean_keeps_each_dtype_and_rounds_integers_half_to_even() -> None:
    aggregator = WeightedMean()
    aggregator.add([np.array([1, 2], np.int32), np.array(0.5), np.array([True, False])], 1)
    aggregator.add([np.array([2, 3], np.int32), np.array(1.5), np.array([True, True])], 1)
    ints, scalar, mask = aggregator.result()
    # (1 + 2) / 2 = 1.5 -> 2 and (2 + 3) / 2 = 2.5 -> 2: NumPy rounds half to even.
    assert ints.dtype == np.int32
    assert ints.tolist() == [2, 2]
    assert isinstance(scalar, np.ndarray)
    assert scalar.shape == ()
    assert scalar.dtype == np.float64
    assert float(scalar) == 1.0
    # mean of True/True is 1 -> True; mean of False/True is 0.5 -> 0 -> False
    assert mask.dtype == np.bool_
    assert mask.tolist() == [True, False]


def test_weighted_mean_counts_and_totals() -> None:
    aggregator = WeightedMean()
    assert aggregator.incremental
    assert aggregator.count == 0
    aggregator.add([f32(1.0)], 5)
    aggregator.add([f32(2.0)], 0)  # a client with no data counts, but weighs nothing
    assert aggregator.count == 2
    assert aggregator.total_examples == 5
    assert aggregator.result()[0].tolist() == [1.0]


def test_equal_weights_fold_plain_sums_until_a_weight_differs() -> None:
    aggregator = WeightedMean()
    aggregator.add([f32(1.0, 8.0)], 600)
    aggregator.add([f32(3.0, 0.0)], 600)
    assert aggregator.result()[0].tolist() == [2.0, 4.0]  # (1 + 3) / 2, (8 + 0) / 2
    # A different weight: the sums become weighted, and the result is the weighted mean.
    aggregator.add([f32(5.0, 2.0)], 1200)
    # (600 * 1 + 600 * 3 + 1200 * 5) / 2400 = 3.5 ; (600 * 8 + 1200 * 2) / 2400 = 3.0
    assert aggregator.result()[0].tolist() == [3.5, 3.0]
    aggregator.add([f32(9.0, 9.0)], 600)
    expected = f32((600 + 1800 + 6000 + 5400) / 3000, (4800 + 2400 + 5400) / 3000)
    np.testing.assert_array_equal(aggregator.result()[0], expected)
    assert aggregator.total_examples == 3000


def test_a_first_update_of_weight_zero_weighs_nothing_once_others_come() -> None:
    aggregator = WeightedMean()
    aggregator.add([f32(100.0)], 0)
    aggregator.add([f32(100.0)], 0)
    with pytest.raises(AggregationError, match="num_examples=0"):
        aggregator.result()
    aggregator.add([f32(2.0)], 4)
    assert aggregator.result()[0].tolist() == [2.0]


def test_weighted_mean_does_not_keep_the_update_arrays() -> None:
    update = [f32(2.0, 4.0)]
    aggregator = WeightedMean()
    aggregator.add(update, 1)
    update[0][:] = 1000.0  # the caller reuses its receive buffer
    aggregator.add([f32(4.0, 6.0)], 1)
    assert aggregator.result()[0].tolist() == [3.0, 5.0]


def test_fold_and_mean_are_exact_across_blocks() -> None:
    # Tensors of two whole blocks and a partial one: every element is folded once,
    # in place, with the same float64 arithmetic as the whole-tensor expression.
    size = 2 * FLOAT64_BLOCK + 7
    rng = np.random.default_rng(5)
    updates: list[NDArrays] = [
        [rng.standard_normal(size, dtype=np.float32), rng.integers(-50, 50, size)] for _ in range(3)
    ]
    weights = [3, 600, 41]
    aggregator = WeightedMean()
    for update, weight in zip(updates, weights, strict=True):
        aggregator.add(update, weight)
    got = aggregator.result()

    total = sum(weights)
    for index, dtype in enumerate((np.float32, np.int64)):
        sums = np.zeros(size)
        for update, weight in zip(updates, weights, strict=True):
            sums = sums + np.float64(weight) * update[index].astype(np.float64)
        mean = sums / total
        expected = (mean if dtype == np.float32 else np.rint(mean)).astype(dtype)
        assert got[index].dtype == dtype
        np.testing.assert_array_equal(got[index], expected)


def test_equal_weight_fold_is_exact_across_cast_buffers() -> None:
    # Equal weights take the plain-sum path; a tensor this large is cast through
    # CAST_BUFFER-sized buffers: whole buffers and a partial one, every element
    # added once.
    size = CAST_BUFFER_FROM + CAST_BUFFER + 7
    rng = np.random.default_rng(9)
    updates = [rng.standard_normal(size, dtype=np.float32) for _ in range(3)]
    aggregator = WeightedMean()
    for update in updates:
        aggregator.add([update], 10)
    sums = np.zeros(size)
    for update in updates:
        sums = sums + update.astype(np.float64)
    np.testing.assert_array_equal(aggregator.result()[0], (sums / 3).astype(np.float32))


@pytest.mark.parametrize("size", [100_000, CAST_BUFFER_FROM])
def test_equal_weight_fold_casts_through_a_buffer_below_half_a_tensor(size: int) -> None:
    # The sums exist already; folding the next update may add NumPy's casting
    # buffer and nothing model-sized. A small tensor keeps NumPy's default
    # buffer (64 KiB): the large one would be a float64 copy of it.
    update = np.ones(size, dtype=np.float32)
    aggregator = WeightedMean()
    aggregator.add([update], 5)
    tracemalloc.start()
    try:
        aggregator.add([update], 5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= max(update.nbytes // 2, 64 * 1024) + 4096


def test_equal_weight_fold_puts_numpy_buffer_size_back() -> None:
    # Tensors large enough to take CAST_BUFFER: smaller ones never change the setting.
    size = CAST_BUFFER_FROM
    previous = np.setbufsize(12_288)
    try:
        aggregator = WeightedMean()
        aggregator.add([np.ones(size, dtype=np.float32)], 5)
        aggregator.add([np.ones(size, dtype=np.float32)], 5)
        assert np.getbufsize() == 12_288
        with pytest.raises(ValueError, match="broadcast"):  # NumPy refuses the add
            add_cast(np.zeros(size + 1), np.ones(size, dtype=np.float32))
        assert np.getbufsize() == 12_288
    finally:
        np.setbufsize(previous)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    num_clients=st.integers(min_value=1, max_value=6),
)
def test_incremental_weighted_mean_equals_the_batch_formula(
    data: st.DataObject, num_clients: int
) -> None:
    shape = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="shape")
    arrays = data.draw(
        st.lists(
            hnp.arrays(np.float64, shape, elements=st.floats(-1e6, 1e6, allow_subnormal=False)),
            min_size=num_clients,
            max_size=num_clients,
        ),
        label="updates",
    )
    weights = data.draw(
        st.one_of(
            st.lists(st.integers(1, 10_000), min_size=num_clients, max_size=num_clients),
            # One weight for all (plain sums), or runs of one that later change.
            st.integers(1, 10_000).map(lambda w: [w] * num_clients),
            st.lists(st.sampled_from([3, 600]), min_size=num_clients, max_size=num_clients),
        ),
        label="weights",
    )
    results = [([a], w) for a, w in zip(arrays, weights, strict=True)]

    incremental = WeightedMean()
    for update, weight in results:
        incremental.add(update, weight)
    got = np.asarray(incremental.result()[0], dtype=np.float64)

    # The batch formula, written independently: sum_i n_i x_i / sum_i n_i.
    expected = np.average(np.stack(arrays), axis=0, weights=np.array(weights, dtype=np.float64))
    scale = max(1.0, float(np.abs(np.stack(arrays)).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * scale)
    # The pure function is the same computation.
    np.testing.assert_array_equal(weighted_mean(results)[0], got)
    # Arrival order changes nothing beyond float64 rounding.
    reordered = np.asarray(weighted_mean(list(reversed(results)))[0], dtype=np.float64)
    np.testing.assert_allclose(reordered, got, rtol=1e-12, atol=1e-12 * scale)


def test_weighted_mean_errors() -> None:
    with pytest.raises(AggregationError, match="before any update"):
        WeightedMean().result()
    zero = WeightedMean()
    zero.add([f32(1.0)], 0)
    with pytest.raises(AggregationError, match="num_examples=0"):
        zero.result()
    with pytest.raises(AggregationError, match="before any update"):
        weighted_mean([])


@pytest.mark.parametrize(
    ("bad_update", "num_examples", "message"),
    [
        ([f32(1.0, 2.0), f32(1.0)], 1, r"update 2: tensor 0 has shape \(2,\) where the first"),
        ([f32(1.0)], 1, "update 2 has 1 tensors where the first update had 2"),
        ([f32(1.0), np.array([1.0])], 1, "tensor 1 has dtype float64 where the first"),
        ([f32(math.nan), f32(1.0)], 1, "tensor 0 contains NaN or infinite"),
        ([f32(1.0), f32(math.inf)], 1, "tensor 1 contains NaN or infinite"),
        ([f32(1.0), f32(1.0)], -1, "num_examples must be at least 0"),
        ([f32(1.0), f32(1.0)], True, "num_examples must be an integer"),
        ([f32(1.0), f32(1.0)], 2.0, "num_examples must be an integer"),
        ([f32(1.0), [1.0]], 1, "tensor 1 is a list, not a numpy array"),
        ([f32(1.0), np.array([1j])], 1, "complex128; only float, int, uint and bool"),
    ],
)
@pytest.mark.parametrize("factory", [WeightedMean, CoordinateMedian, lambda: TrimmedMean(0.1)])
def test_bad_updates_are_refused_and_leave_the_aggregator_unchanged(
    factory: object, bad_update: NDArrays, num_examples: int, message: str
) -> None:
    aggregator = factory()  # type: ignore[operator]
    aggregator.add([f32(2.0), f32(3.0)], 4)
    with pytest.raises(AggregationError, match=message):
        aggregator.add(bad_update, num_examples)
    assert aggregator.count == 1
    assert [a.tolist() for a in aggregator.result()] == [[2.0], [3.0]]


@pytest.mark.parametrize("factory", [WeightedMean, CoordinateMedian, lambda: TrimmedMean(0.1)])
def test_assume_finite_skips_only_the_value_scan(factory: object) -> None:
    aggregator = factory()  # type: ignore[operator]
    aggregator.add([f32(2.0), f32(3.0)], 4, assume_finite=True)
    # The caller vouched for the values: an infinity is not looked for...
    aggregator.add([f32(2.0), f32(math.inf)], 4, assume_finite=True)
    assert aggregator.count == 2
    assert aggregator.result()[1].tolist() == [math.inf]
    # ...but the layout still is, and nothing changes on a refusal.
    with pytest.raises(AggregationError, match="tensor 1 has dtype float64"):
        aggregator.add([f32(1.0), np.array([1.0])], 1, assume_finite=True)
    with pytest.raises(AggregationError, match="update 3 has 1 tensors"):
        aggregator.add([f32(1.0)], 1, assume_finite=True)
    assert aggregator.count == 2


def test_parameters_must_be_a_list() -> None:
    with pytest.raises(AggregationError, match="must be a list of numpy arrays"):
        WeightedMean().add(f32(1.0), 1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- order statistics

# Five clients, one tensor of two coordinates, with a wild outlier in each column.
OUTLIER_UPDATES = [
    np.array([1.0, 10.0]),
    np.array([2.0, 20.0]),
    np.array([3.0, -1e6]),
    np.array([1e6, 30.0]),
    np.array([5.0, 40.0]),
]


def test_median_ignores_outliers() -> None:
    # column 0 sorted: 1, 2, 3, 5, 1e6 -> 3 ; column 1 sorted: -1e6, 10, 20, 30, 40 -> 20
    got = median([([u], 1) for u in OUTLIER_UPDATES])
    assert got[0].tolist() == [3.0, 20.0]
    # By design the weights play no part (Yin et al.: unweighted).
    reweighted = median(
        [([u], w) for u, w in zip(OUTLIER_UPDATES, [1, 1, 1000, 1000, 1], strict=True)]
    )
    assert reweighted[0].tolist() == [3.0, 20.0]


def test_median_of_an_even_count_averages_the_middle_pair() -> None:
    got = median([([f32(v)], 1) for v in (4.0, 1.0, 3.0, 2.0)])
    assert got[0].tolist() == [2.5]
    assert got[0].dtype == np.float32


def test_median_of_integers_is_rounded() -> None:
    got = median([([np.array([v], np.int64)], 1) for v in (1, 2, 5, 6)])
    assert got[0].tolist() == [4]  # (2 + 5) / 2 = 3.5 -> 4 (half to even)
    assert got[0].dtype == np.int64


def test_trimmed_mean_drops_the_tails() -> None:
    # beta 0.2 of 5 values: cut int(1.0) = 1 from each end.
    # column 0 keeps 2, 3, 5 -> 10/3 ; column 1 keeps 10, 20, 30 -> 20
    got = trimmed_mean([([u], 1) for u in OUTLIER_UPDATES], beta=0.2)
    assert got[0].tolist() == pytest.approx([10.0 / 3.0, 20.0], rel=1e-15)


def test_trimmed_mean_cut_is_floored_and_beta_zero_is_the_plain_mean() -> None:
    values = [([np.array([v])], 1) for v in (1.0, 2.0, 3.0, 100.0)]
    # int(0.2 * 4) = 0: nothing is cut, (1 + 2 + 3 + 100) / 4 = 26.5
    assert trimmed_mean(values, beta=0.2)[0].tolist() == [26.5]
    assert trimmed_mean(values, beta=0.0)[0].tolist() == [26.5]
    # int(0.25 * 4) = 1: keeps 2 and 3 -> 2.5
    assert trimmed_mean(values, beta=0.25)[0].tolist() == [2.5]
    # beta just below 0.5 on 10 values cuts 4 per side and keeps the middle two
    ten = [([np.array([float(v)])], 1) for v in (9, 0, 8, 1, 7, 2, 6, 3, 5, 4)]
    assert trimmed_mean(ten, beta=0.49)[0].tolist() == [4.5]


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, math.nan, True])
def test_trimmed_mean_beta_must_leave_something(beta: float) -> None:
    with pytest.raises(AggregationError, match="beta"):
        TrimmedMean(beta)


def test_order_statistic_classes_match_the_functions_and_store_copies() -> None:
    med, trim = CoordinateMedian(), TrimmedMean(0.2)
    assert not med.incremental
    assert not trim.incremental
    for update in OUTLIER_UPDATES:
        buffer = [update.copy()]
        med.add(buffer, 1)
        trim.add(buffer, 1)
        buffer[0][:] = 0.0  # reusing the buffer must not change what was stored
    assert med.count == trim.count == 5
    results = [([u], 1) for u in OUTLIER_UPDATES]
    np.testing.assert_array_equal(med.result()[0], median(results)[0])
    np.testing.assert_array_equal(trim.result()[0], trimmed_mean(results, 0.2)[0])


def test_order_statistics_need_an_update() -> None:
    with pytest.raises(AggregationError, match="CoordinateMedian"):
        CoordinateMedian().result()
    with pytest.raises(AggregationError, match="TrimmedMean"):
        TrimmedMean(0.1).result()


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=1, max_size=9),
)
def test_median_and_trimmed_mean_match_sorted_definitions(values: list[float]) -> None:
    results = [([np.array([v])], 1) for v in values]
    ordered = sorted(values)
    n = len(ordered)
    mid = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    assert median(results)[0].tolist() == [pytest.approx(mid, rel=1e-15, abs=1e-12)]
    cut = int(0.3 * n)
    kept = ordered[cut : n - cut]
    expected = math.fsum(kept) / len(kept)
    assert trimmed_mean(results, 0.3)[0].tolist() == [pytest.approx(expected, abs=1e-9)]


# --------------------------------------------------------------------------- metrics


def test_weighted_average_metrics_by_hand() -> None:
    results: list[tuple[int, Metrics]] = [
        (1, {"accuracy": 0.5, "loss": 2, "converged": True, "note": "ok", "raw": b"x"}),
        (3, {"accuracy": 0.9}),
    ]
    # accuracy: (1 * 0.5 + 3 * 0.9) / 4 = 3.2 / 4 = 0.8 ; loss only from the first client
    got = weighted_average_metrics(results)
    assert got == {"accuracy": pytest.approx(0.8, rel=1e-15), "loss": 2.0}
    assert list(got) == ["accuracy", "loss"]


def test_weighted_average_metrics_edge_cases() -> None:
    assert weighted_average_metrics([]) == {}
    # A metric seen only on zero examples has no average and is left out.
    assert weighted_average_metrics([(0, {"x": 1.0}), (2, {"acc": 1.0})]) == {"acc": 1.0}
    # Non-finite values are skipped: the diverged client does not poison the average.
    assert weighted_average_metrics(
        [(1, {"acc": math.nan, "loss": math.inf}), (2, {"acc": 0.5}), (3, {"acc": 1.0})]
    ) == {"acc": pytest.approx((2 * 0.5 + 3 * 1.0) / 5, rel=1e-15)}
    with pytest.raises(AggregationError, match="num_examples must be at least 0"):
        weighted_average_metrics([(-2, {"acc": 1.0})])


def test_weighted_average_loss() -> None:
    assert weighted_average_loss([(1, 2.0), (3, 4.0)]) == 3.5  # (2 + 12) / 4
    with pytest.raises(AggregationError, match="no results"):
        weighted_average_loss([])
    with pytest.raises(AggregationError, match="num_examples=0"):
        weighted_average_loss([(0, 1.0), (0, 2.0)])
    with pytest.raises(AggregationError, match="finite number"):
        weighted_average_loss([(1, math.inf)])
    with pytest.raises(AggregationError, match="finite number"):
        weighted_average_loss([(1, "low")])  # type: ignore[list-item]


def test_averages_near_the_float_range_do_not_overflow() -> None:
    # 1e308 * weight overflowed to inf when sums were formed before dividing.
    assert weighted_average_metrics([(3, {"m": 1e308}), (5, {"m": 1e308})])["m"] == pytest.approx(
        1e308
    )
    assert weighted_average_loss([(3, 1e308), (5, 1e308)]) == pytest.approx(1e308)


# --------------------------------------------------------------------------- partial sums


def _partial_sums(updates: list[NDArrays], weights: list[int]) -> tuple[list[np.ndarray], int]:
    """Weighted float64 sums, as a simulation worker's partial holds them."""
    sums = [np.zeros(a.shape) for a in updates[0]]
    for update, weight in zip(updates, weights, strict=True):
        for running, array in zip(sums, update, strict=True):
            np.add(running, weight * array.astype(np.float64), out=running)
    return sums, sum(weights)


@pytest.mark.parametrize("direct_first", [True, False])
def test_partial_sums_of_either_kind_give_the_mean_of_every_update(direct_first: bool) -> None:
    # Integer values: every sum is exact, so any grouping gives the same bits.
    rng = np.random.default_rng(2)
    updates: list[NDArrays] = [
        [rng.integers(-9, 9, (4, 3)).astype(np.float32), rng.integers(-9, 9, 5)] for _ in range(7)
    ]
    weights = [4, 4, 4, 6, 1, 4, 4]
    reference = WeightedMean()
    for update, weight in zip(updates, weights, strict=True):
        reference.add(update, weight)
    dtypes: list[np.dtype[np.generic]] = [np.dtype(np.float32), np.dtype(np.int64)]
    plain = [np.add(*[u[i].astype(np.float64) for u in updates[:2]]) for i in range(2)]
    weighted, total = _partial_sums(updates[2:5], weights[2:5])
    merged = WeightedMean()
    if direct_first:
        merged.add(updates[5], 4)
    merged.add_sums(plain, dtypes, count=2, total=8, shared_weight=4)
    merged.add_sums(weighted, dtypes, count=3, total=total, shared_weight=None)
    if not direct_first:
        merged.add(updates[5], 4)
    merged.add(updates[6], 4)
    assert merged.count == 7 and merged.total_examples == sum(weights)
    for got, want in zip(merged.result(), reference.result(), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_plain_partial_sums_then_an_update_of_the_same_weight() -> None:
    # Plain sums [1, 3] of two updates weighing 3 each, then [5, 7] weighing 3.
    merged = WeightedMean()
    merged.add_sums([np.array([1.0, 3.0])], [np.dtype(np.float32)], count=2, total=6,
                    shared_weight=3)  # fmt: skip
    merged.add([f32(5.0, 7.0)], 3)
    np.testing.assert_array_equal(merged.result()[0], np.array([2.0, 10 / 3], dtype=np.float32))


def test_partial_sums_of_another_layout_are_refused() -> None:
    merged = WeightedMean()
    merged.add([f32(1.0, 2.0)], 1)
    with pytest.raises(AggregationError, match="partial sums of tensors"):
        merged.add_sums([np.zeros(3)], [np.dtype(np.float32)], count=1, total=1, shared_weight=1)
    with pytest.raises(AggregationError, match="partial sums of 0 updates"):
        merged.add_sums([np.zeros(2)], [np.dtype(np.float32)], count=0, total=0, shared_weight=1)
    assert merged.count == 1 and merged.result()[0].tolist() == [1.0, 2.0]
