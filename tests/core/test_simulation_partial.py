"""A worker's partial sums: the same float64 arithmetic as the server's mean, in a segment."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from orchard.simulation.partial import HEADER_BYTES, PartialSums, partial_bytes

SHAPES = [(3, 4), (5,)]


def _updates(n: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(4)
    return [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(n)]


def _partial() -> PartialSums:
    return PartialSums(mmap.mmap(-1, partial_bytes(SHAPES)), SHAPES)


def test_plain_then_weighted_sums_are_sums_of_each_update_times_its_weight() -> None:
    # What the driver's FoldLog decides for weights 5, 5, 9, 2: plain sums while
    # every update weighs 5, then the sums scaled by 5 once, then weighted folds.
    updates = _updates(4)
    partial = _partial()
    partial.fold(1, updates[0], 1.0, None)
    partial.fold(1, updates[1], 1.0, None)
    partial.fold(1, updates[2], 9.0, 5.0)
    partial.fold(1, updates[3], 2.0, None)
    assert partial.describe() == {"sink": 1, "folds": 4, "busy": False}
    for i, sums in enumerate(partial.sums):
        x = [u[i].astype(np.float64) for u in updates]
        # The same float64 operations in the same order: the same bits.
        np.testing.assert_array_equal(sums, (x[0] + x[1]) * 5.0 + 9.0 * x[2] + 2.0 * x[3])


def test_a_new_fan_out_starts_from_zero() -> None:
    first, second = _updates(2)
    partial = _partial()
    partial.fold(1, first, 1.0, None)
    partial.fold(2, second, 3.0, None)
    assert partial.sink == 2 and partial.folds == 1
    for sums, array in zip(partial.sums, second, strict=True):
        np.testing.assert_array_equal(sums, 3.0 * array.astype(np.float64))


def test_the_header_survives_in_the_mapping_for_another_reader() -> None:
    buffer = mmap.mmap(-1, partial_bytes(SHAPES))
    PartialSums(buffer, SHAPES).fold(7, _updates(1)[0], 1.0, None)
    again = PartialSums(buffer, SHAPES)  # as the driver reads a worker's segment
    assert again.describe() == {"sink": 7, "folds": 1, "busy": False}
    assert np.frombuffer(buffer, dtype="<u8", count=3).tolist() == [7, 1, 0]
    assert partial_bytes(SHAPES) >= HEADER_BYTES + 8 * (12 + 5)


def test_a_wrong_update_is_refused_before_anything_changes() -> None:
    partial = _partial()
    with pytest.raises(ValueError, match="shape"):
        partial.fold(1, [np.zeros((4, 3), np.float32), np.zeros(5, np.float32)], 1.0, None)
    with pytest.raises(ValueError, match="1 arrays for partial sums of 2 tensors"):
        partial.fold(1, [np.zeros((3, 4), np.float32)], 1.0, None)
    assert partial.describe() == {"sink": 0, "folds": 0, "busy": False}


def test_a_segment_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="needed"):
        PartialSums(mmap.mmap(-1, HEADER_BYTES + 8), SHAPES)
