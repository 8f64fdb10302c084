"""Gluon models against the shared specs: names, shapes, order, layouts and wire round-trips."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from orchard import serde  # noqa: E402
from orchard.models import get_model_spec  # noqa: E402
from orchard.spec import SpecError  # noqa: E402
from orchard_mxnet.models import (  # noqa: E402
    MODEL_IDS,
    build_model,
    get_parameters,
    input_shape,
    model_spec_of,
    parameter_map,
    set_parameters,
)

pytestmark = pytest.mark.mxnet

CPU = mx.cpu()

#: Parameter counts worked out by hand from the layer sizes.
EXPECTED_COUNTS = {
    # conv1 32*1*5*5+32, conv2 64*32*5*5+64, fc1 512*3136+512, fc2 10*512+10
    "mnist-cnn": 832 + 51_264 + 1_606_144 + 5_130,
    # fc1 128*784+128, fc2 64*128+64, fc3 10*64+10
    "mnist-mlp": 100_480 + 8_256 + 650,
}


def _random_parameters(model_id: str, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0.0, 0.05, size=t.shape).astype(np.float32)
        for t in get_model_spec(model_id).tensors
    ]


def test_both_mnist_models_are_available() -> None:
    assert set(MODEL_IDS) == {"mnist-mlp", "mnist-cnn"}


def test_mnist_cnn_has_exactly_the_parameters_of_mcmahan_et_al() -> None:
    assert EXPECTED_COUNTS["mnist-cnn"] == 1_663_370
    net = build_model("mnist-cnn", device=CPU)
    assert sum(p.data().size for p in net.collect_params().values()) == 1_663_370


@pytest.mark.parametrize("model_id", ["mnist-mlp", "mnist-cnn"])
def test_every_gluon_parameter_is_mapped_once_in_spec_order(model_id: str) -> None:
    net = build_model(model_id, device=CPU)
    spec = get_model_spec(model_id)
    # The spec the network has: names from the map, shapes and dtypes from Gluon.
    assert model_spec_of(net) == spec
    assert list(parameter_map(net)) == spec.names
    # All of Gluon's parameters, biases included, are covered, none twice.
    gluon_params = list(net.collect_params().values())
    mapped = list(parameter_map(net).values())
    assert len(mapped) == len(gluon_params) == len(spec.tensors)
    assert {id(p) for p in mapped} == {id(p) for p in gluon_params}
    total = sum(int(np.prod(p.shape)) for p in gluon_params)
    assert total == EXPECTED_COUNTS[model_id] == spec.num_parameters
    arrays = get_parameters(net)
    assert [a.shape for a in arrays] == [t.shape for t in spec.tensors]
    assert all(a.dtype == np.float32 for a in arrays)


def test_name_map_does_not_depend_on_gluons_generated_prefixes() -> None:
    first = build_model("mnist-mlp", device=CPU)
    second = build_model("mnist-mlp", device=CPU)
    first_names = [p.name for p in first.collect_params().values()]
    second_names = [p.name for p in second.collect_params().values()]
    assert first_names != second_names  # Gluon numbered the two networks differently
    assert (
        list(parameter_map(first))
        == list(parameter_map(second))
        == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    )
    assert parameter_map(first)["fc2.bias"] is first.fc2.bias


def _relu(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(x, 0.0)
    return out


def test_mlp_forward_matches_the_spec_layout_computed_in_numpy() -> None:
    """Dense weights are (out, in): y = x @ W.T + b, as the spec says."""
    arrays = _random_parameters("mnist-mlp", seed=1)
    net = build_model("mnist-mlp", device=CPU)
    set_parameters(net, arrays)
    x = np.random.default_rng(2).random((3, 784), dtype=np.float32)
    w1, b1, w2, b2, w3, b3 = (a.astype(np.float64) for a in arrays)
    expected = _relu(_relu(x @ w1.T + b1) @ w2.T + b2) @ w3.T + b3
    actual = net(mx.nd.array(x)).asnumpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def _conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NCHW x OIHW cross-correlation with 'same' padding for odd kernels."""
    k = w.shape[2]
    padded = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
    out: np.ndarray = np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]
    return out


def _max_pool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    out: np.ndarray = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return out


def test_cnn_forward_matches_the_spec_layout_computed_in_numpy() -> None:
    """Kernels are OIHW and the feature map is flattened in C, H, W order."""
    arrays = _random_parameters("mnist-cnn", seed=3)
    net = build_model("mnist-cnn", device=CPU)
    set_parameters(net, arrays)
    x = np.random.default_rng(4).random((2, 1, 28, 28), dtype=np.float32)
    c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b = (a.astype(np.float64) for a in arrays)
    h = _max_pool2(_relu(_conv_same(x.astype(np.float64), c1w, c1b)))
    h = _max_pool2(_relu(_conv_same(h, c2w, c2b)))
    assert h.shape == (2, 64, 7, 7)
    flat = h.reshape(2, -1)  # row-major over (C, H, W)
    expected = _relu(flat @ f1w.T + f1b) @ f2w.T + f2b
    actual = net(mx.nd.array(x)).asnumpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model_id", ["mnist-mlp", "mnist-cnn"])
def test_parameters_round_trip_bit_exactly_through_the_wire_format(model_id: str) -> None:
    source = build_model(model_id, device=CPU)
    set_parameters(source, _random_parameters(model_id, seed=5))
    sent = get_parameters(source)
    names = get_model_spec(model_id).names
    header = serde.parameters_header(names, sent)
    chunks = list(serde.iter_chunks(sent, chunk_bytes=64 * 1024))
    assert len(chunks) > len(sent)  # large tensors really were split
    received_names, received = serde.arrays_from_parts(header, chunks)
    assert list(received_names) == names
    target = build_model(model_id, device=CPU, seed=99)
    set_parameters(target, received)
    back = get_parameters(target)
    for name, before, after in zip(names, sent, back, strict=True):
        assert after.dtype == np.float32, name
        assert before.tobytes() == after.tobytes(), name


def test_seeded_initialisation_is_reproducible_and_seed_dependent() -> None:
    a = get_parameters(build_model("mnist-mlp", device=CPU, seed=7))
    b = get_parameters(build_model("mnist-mlp", device=CPU, seed=7))
    c = get_parameters(build_model("mnist-mlp", device=CPU, seed=8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert not np.any(a[1])  # biases start at zero
    assert float(np.std(np.asarray(a[0], dtype=np.float64))) > 0.01


def test_get_parameters_returns_copies() -> None:
    net = build_model("mnist-mlp", device=CPU)
    arrays = get_parameters(net)
    arrays[0][:] = 123.0
    assert not np.any(get_parameters(net)[0] == 123.0)


def test_set_parameters_rejects_a_transposed_weight_and_changes_nothing() -> None:
    net = build_model("mnist-mlp", device=CPU)
    before = get_parameters(net)
    arrays = _random_parameters("mnist-mlp", seed=6)
    arrays[2] = np.ascontiguousarray(arrays[2].T)  # fc2.weight as (in, out)
    with pytest.raises(SpecError, match=r"fc2\.weight.*\[64, 128\].*\[128, 64\]"):
        set_parameters(net, arrays)
    after = get_parameters(net)
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))


def test_set_parameters_rejects_missing_tensors_and_wrong_dtypes() -> None:
    net = build_model("mnist-mlp", device=CPU)
    arrays = _random_parameters("mnist-mlp", seed=6)
    with pytest.raises(SpecError, match="6 tensors, got 5"):
        set_parameters(net, arrays[:5])
    arrays[5] = arrays[5].astype(np.float64)
    with pytest.raises(SpecError, match=r"fc3\.bias.*float32.*float64"):
        set_parameters(net, arrays)


def test_unknown_model_ids_are_refused_with_the_available_ones() -> None:
    with pytest.raises(SpecError, match=r"cifar10-cnn.*mnist-cnn, mnist-mlp"):
        build_model("cifar10-cnn", device=CPU)
    with pytest.raises(SpecError, match="resnet"):
        input_shape("resnet")


def test_input_shapes() -> None:
    assert input_shape("mnist-mlp") == (784,)
    assert input_shape("mnist-cnn") == (1, 28, 28)
