"""Model specs: validation of updates and join-time comparison."""

from __future__ import annotations

import numpy as np
import pytest

from orchard.models import CIFAR10_CNN, MNIST_CNN, MNIST_MLP, get_model_spec
from orchard.spec import ModelSpec, SpecError, TensorSpec, all_finite

SPEC = ModelSpec("m", (TensorSpec("w", (2, 3)), TensorSpec("b", (3,))))


def good() -> list[np.ndarray]:
    return [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]


def test_registered_models_have_the_papers_sizes() -> None:
    assert CIFAR10_CNN.num_parameters == 62_006
    assert MNIST_CNN.num_parameters == 1_663_370
    assert MNIST_MLP.num_parameters == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert MNIST_MLP.names == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "fc3.weight",
        "fc3.bias",
    ]


def test_unknown_model_lists_known_ids() -> None:
    with pytest.raises(SpecError, match=r"unknown model id 'resnet'.*mnist-mlp"):
        get_model_spec("resnet")


def test_valid_update_passes() -> None:
    SPEC.validate(good())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a[:1], "has 2 tensors, got 1"),
        (lambda a: [a[0].reshape(3, 2), a[1]], "'w': expected shape \\[2, 3\\], got \\[3, 2\\]"),
        (lambda a: [a[0].astype(np.float64), a[1]], "'w': expected dtype float32, got float64"),
        (lambda a: [a[0], np.array([0, np.nan, np.inf], np.float32)], "'b': 2 of 3 values are NaN"),
    ],
)
def test_bad_updates_are_named(mutate, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match=message):
        SPEC.validate(mutate(good()))


def test_first_difference_names_the_tensor() -> None:
    assert SPEC.first_difference(SPEC) is None
    other = ModelSpec("m", (TensorSpec("w", (2, 3)), TensorSpec("b", (4,))))
    assert "tensor #1" in (SPEC.first_difference(other) or "")
    assert "b: float32[4]" in (SPEC.first_difference(other) or "")
    shorter = ModelSpec("m", SPEC.tensors[:1])
    assert "client has no more tensors" in (SPEC.first_difference(shorter) or "")
    longer = ModelSpec("m", (*SPEC.tensors, TensorSpec("extra", (1,))))
    assert "extra tensor extra" in (SPEC.first_difference(longer) or "")


def test_spec_construction_errors() -> None:
    with pytest.raises(SpecError, match="duplicate tensor names \\['w'\\]"):
        ModelSpec("m", (TensorSpec("w", (1,)), TensorSpec("w", (2,))))
    with pytest.raises(SpecError, match="dtype 'complex64' is not supported"):
        TensorSpec("w", (1,), "complex64")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_all_finite_finds_a_bad_value_in_any_block(bad: float, dtype: str) -> None:
    # Three blocks and a bit: the bad value goes first, mid-block, and last.
    size = 3 * (1 << 18) + 5
    for where in (0, (1 << 18) + 7, size - 1):
        array = np.zeros(size, dtype=dtype)
        assert all_finite(array)
        array[where] = bad
        assert not all_finite(array), (dtype, where)
        assert not all_finite(array.reshape(-1, 1)[::-1]), "a non-contiguous view is checked too"


def test_all_finite_passes_integers_and_empty_arrays() -> None:
    assert all_finite(np.arange(10, dtype=np.int64))
    assert all_finite(np.zeros(0, dtype=np.float32))
    assert all_finite(np.ones((3, 4), dtype=bool))
