"""The PyTorch modules match the framework-neutral specs and cross the wire bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchard import serde
from orchard.models import get_model_spec
from orchard.spec import SpecError
from orchard_pytorch.models import (
    MODEL_IDS,
    build_model,
    get_parameters,
    model_spec_of,
    set_parameters,
)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cifar10_cnn_has_the_tutorials_62006_parameters() -> None:
    # 3*6*25+6 + 6*16*25+16 + 400*120+120 + 120*84+84 + 84*10+10
    expected = 456 + 2416 + 48120 + 10164 + 850
    assert expected == 62_006
    assert _count(build_model("cifar10-cnn")) == expected


def test_mnist_cnn_has_mcmahan_et_als_1663370_parameters() -> None:
    # 1*32*25+32 + 32*64*25+64 + 3136*512+512 + 512*10+10
    expected = 832 + 51264 + 1606144 + 5130
    assert expected == 1_663_370
    assert _count(build_model("mnist-cnn")) == expected


def test_mnist_mlp_has_784_128_64_10_parameters() -> None:
    assert _count(build_model("mnist-mlp")) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_state_dict_equals_the_registered_spec(model_id: str) -> None:
    model = build_model(model_id)
    assert model_spec_of(model) == get_model_spec(model_id)
    arrays = get_parameters(model)
    get_model_spec(model_id).validate(arrays)
    assert all(a.dtype == np.float32 for a in arrays)


@pytest.mark.parametrize(
    ("model_id", "shape"),
    [("cifar10-cnn", (2, 3, 32, 32)), ("mnist-cnn", (2, 1, 28, 28)), ("mnist-mlp", (2, 1, 28, 28))],
)
def test_forward_gives_ten_logits(model_id: str, shape: tuple[int, ...]) -> None:
    out = build_model(model_id)(torch.zeros(shape))
    assert out.shape == (2, 10)


def test_unknown_model_id_lists_the_known_ones() -> None:
    with pytest.raises(
        SpecError, match=r"model id 'resnet' has no PyTorch implementation.*cifar10-cnn"
    ):
        build_model("resnet")


def test_seed_fixes_initial_weights_without_touching_the_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = get_parameters(build_model("cifar10-cnn", seed=7))
    after = torch.rand(1)
    b = get_parameters(build_model("cifar10-cnn", seed=7))
    c = get_parameters(build_model("cifar10-cnn", seed=8))
    assert torch.equal(before, after)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_get_parameters_returns_copies() -> None:
    model = build_model("mnist-mlp", seed=0)
    arrays = get_parameters(model)
    original = arrays[0].copy()
    arrays[0][...] = 0.0
    assert np.array_equal(get_parameters(model)[0], original)
    assert np.abs(original).sum() > 0


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_parameters_round_trip_bit_exactly_through_the_wire(model_id: str) -> None:
    spec = get_model_spec(model_id)
    sender = build_model(model_id, seed=1)
    arrays = get_parameters(sender)
    header = serde.parameters_header(spec.names, arrays)
    chunks = list(serde.iter_chunks(arrays, chunk_bytes=4096))
    names, received = serde.arrays_from_parts(header, chunks)
    assert list(names) == spec.names
    receiver = build_model(model_id, seed=2)
    set_parameters(receiver, received)
    for name, original, tensor in zip(
        spec.names, arrays, receiver.state_dict().values(), strict=True
    ):
        back = tensor.numpy()
        assert back.dtype == np.float32, name
        # Bit-exact: compare the raw bytes, not values within a tolerance.
        assert original.tobytes() == back.tobytes(), name


def test_set_parameters_accepts_big_endian_arrays() -> None:
    arrays = get_parameters(build_model("mnist-mlp", seed=3))
    swapped = [a.astype(">f4") for a in arrays]
    model = build_model("mnist-mlp", seed=4)
    set_parameters(model, swapped)
    assert np.array_equal(get_parameters(model)[0], arrays[0])


def test_set_parameters_names_the_tensor_with_the_wrong_shape() -> None:
    arrays = get_parameters(build_model("cifar10-cnn"))
    arrays[2] = np.zeros((16, 6, 3, 3), dtype=np.float32)
    with pytest.raises(SpecError, match=r"conv2\.weight.*\[16, 6, 5, 5\].*\[16, 6, 3, 3\]"):
        set_parameters(build_model("cifar10-cnn"), arrays)


def test_set_parameters_refuses_float64() -> None:
    arrays = [a.astype(np.float64) for a in get_parameters(build_model("mnist-mlp"))]
    with pytest.raises(SpecError, match=r"fc1\.weight.*float32.*float64"):
        set_parameters(build_model("mnist-mlp"), arrays)


def test_set_parameters_refuses_a_missing_tensor() -> None:
    arrays = get_parameters(build_model("mnist-mlp"))[:-1]
    with pytest.raises(SpecError, match="has 6 tensors, got 5"):
        set_parameters(build_model("mnist-mlp"), arrays)


def test_set_parameters_refuses_another_models_parameters() -> None:
    arrays = get_parameters(build_model("cifar10-cnn"))
    with pytest.raises(SpecError, match="'mnist-mlp' has 6 tensors, got 10"):
        set_parameters(build_model("mnist-mlp"), arrays)


def test_set_parameters_refuses_nan() -> None:
    arrays = get_parameters(build_model("mnist-mlp"))
    arrays[1][3] = np.nan
    model = build_model("mnist-mlp", seed=1)
    before = get_parameters(model)
    with pytest.raises(SpecError, match=r"fc1\.bias.*NaN"):
        set_parameters(model, arrays)
    assert all(np.array_equal(a, b) for a, b in zip(get_parameters(model), before, strict=True))
