"""Gluon networks for Orchard's MNIST model ids, mapped exactly onto the shared specs.

Federation only works if every framework lays its parameters out like the
framework-neutral spec in :mod:`orchard.models`. Gluon already agrees with it on
the layouts (Dense weights are ``(units, in_units)`` = (out, in), Conv2D kernels
are OIHW, and ``Flatten`` flattens NCHW feature maps in C, H, W order), so the
only thing to pin down is *which* Gluon parameter is which spec tensor. Gluon
names parameters with auto-generated, process-global prefixes (``dense3_weight``
in one process, ``dense7_weight`` in the next), so the name map is built from
the network's own layer attributes (``net.fc1.weight``) instead.

Every layer is built with explicit ``in_units``/``in_channels`` so all shapes
exist before the first forward pass: parameters can be read, sent and
overwritten as soon as the network is initialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon import nn

from orchard.models import get_model_spec
from orchard.spec import ModelSpec, SpecError, TensorSpec
from orchard.typing import NDArrays

__all__ = [
    "MODEL_IDS",
    "MnistCNN",
    "MnistMLP",
    "SpecNet",
    "build_model",
    "get_parameters",
    "input_shape",
    "model_spec_of",
    "parameter_map",
    "set_parameters",
]


class SpecNet(gluon.HybridBlock):  # type: ignore[misc]  # mxnet ships no type information
    """A Gluon network whose parameters map one-to-one onto a registered model spec.

    Subclasses set ``model_id``, ``input_shape`` (one example, without the batch
    axis) and ``layer_names``: the attribute names of their weighted layers in
    spec order, which are also the spec's layer names (``fc1`` -> ``fc1.weight``,
    ``fc1.bias``).
    """

    model_id: ClassVar[str]
    input_shape: ClassVar[tuple[int, ...]]
    layer_names: ClassVar[tuple[str, ...]]

    def layers(self) -> list[tuple[str, Any]]:
        """(spec layer name, Gluon layer) pairs in spec order."""
        return [(name, getattr(self, name)) for name in self.layer_names]


class MnistMLP(SpecNet):
    """784-128-64-10 MLP with ReLU: the model of MXNet's handwritten-digit tutorial.

    Takes flat images of shape (N, 784).
    """

    model_id = "mnist-mlp"
    input_shape = (784,)
    layer_names = ("fc1", "fc2", "fc3")

    def __init__(self) -> None:
        super().__init__()
        with self.name_scope():
            self.fc1 = nn.Dense(128, activation="relu", in_units=784)
            self.fc2 = nn.Dense(64, activation="relu", in_units=128)
            self.fc3 = nn.Dense(10, in_units=64)

    def hybrid_forward(self, F: Any, x: Any) -> Any:  # noqa: N803  (Gluon's signature)
        """Logits of shape (N, 10)."""
        return self.fc3(self.fc2(self.fc1(x)))


class MnistCNN(SpecNet):
    """The MNIST CNN of McMahan et al. 2017 ("Communication-Efficient Learning of
    Deep Networks from Decentralized Data", AISTATS): two 5x5 convolutions with
    32 and 64 channels ('same' padding, ReLU), each followed by 2x2 max-pooling,
    a 512-unit ReLU layer and a 10-way output; 1,663,370 parameters.

    Takes images of shape (N, 1, 28, 28).
    """

    model_id = "mnist-cnn"
    input_shape = (1, 28, 28)
    layer_names = ("conv1", "conv2", "fc1", "fc2")

    def __init__(self) -> None:
        super().__init__()
        with self.name_scope():
            self.conv1 = nn.Conv2D(32, kernel_size=5, padding=2, in_channels=1, activation="relu")
            self.pool1 = nn.MaxPool2D(pool_size=2)
            self.conv2 = nn.Conv2D(64, kernel_size=5, padding=2, in_channels=32, activation="relu")
            self.pool2 = nn.MaxPool2D(pool_size=2)
            # Flatten keeps NCHW's C, H, W order, as the spec's fc1 expects.
            self.flatten = nn.Flatten()
            self.fc1 = nn.Dense(512, activation="relu", in_units=64 * 7 * 7)
            self.fc2 = nn.Dense(10, in_units=512)

    def hybrid_forward(self, F: Any, x: Any) -> Any:  # noqa: N803  (Gluon's signature)
        """Logits of shape (N, 10)."""
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        return self.fc2(self.fc1(self.flatten(x)))


_MODELS: dict[str, type[SpecNet]] = {
    MnistMLP.model_id: MnistMLP,
    MnistCNN.model_id: MnistCNN,
}
#: Model ids this client can train.
MODEL_IDS: tuple[str, ...] = tuple(sorted(_MODELS))


def _model_class(model_id: str) -> type[SpecNet]:
    try:
        return _MODELS[model_id]
    except KeyError:
        raise SpecError(
            f"model id {model_id!r} has no MXNet implementation (available: {', '.join(MODEL_IDS)})"
        ) from None


def input_shape(model_id: str) -> tuple[int, ...]:
    """Shape of one input example of ``model_id``: (784,) or (1, 28, 28)."""
    return _model_class(model_id).input_shape


def parameter_map(net: SpecNet) -> dict[str, Any]:
    """Spec tensor name -> Gluon ``Parameter``, in spec order (weights and biases)."""
    mapping: dict[str, Any] = {}
    for layer_name, layer in net.layers():
        mapping[f"{layer_name}.weight"] = layer.weight
        mapping[f"{layer_name}.bias"] = layer.bias
    return mapping


def model_spec_of(net: SpecNet) -> ModelSpec:
    """The spec the network actually has (names from the map, shapes from Gluon)."""
    return ModelSpec(
        net.model_id,
        tuple(
            TensorSpec(name, tuple(int(d) for d in param.shape), np.dtype(param.dtype).name)
            for name, param in parameter_map(net).items()
        ),
    )


def build_model(model_id: str, *, seed: int = 0, device: mx.Context | None = None) -> SpecNet:
    """A freshly initialised network for ``model_id`` on ``device`` (default: the CPU).

    Initialisation is seeded (Glorot-uniform weights, zero biases) so that
    clients started with the same seed agree on their initial weights. The
    network is checked against the registered spec here, once, so a layout
    mistake fails at start-up and never as a rejected update mid-federation.
    """
    net = _model_class(model_id)()
    expected = get_model_spec(model_id)
    actual = model_spec_of(net)
    difference = expected.first_difference(actual)
    if difference is not None:
        raise SpecError(f"MXNet model {model_id!r} does not match its spec: {difference}")
    # Gluon initialises on the CPU and copies to ``device``: seed every generator.
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(), ctx=device if device is not None else mx.cpu())
    return net


def get_parameters(net: SpecNet) -> NDArrays:
    """All parameters (biases included) as float32 NumPy arrays in spec order."""
    return [
        param.data().asnumpy().astype(np.float32, copy=False)
        for param in parameter_map(net).values()
    ]


def set_parameters(net: SpecNet, arrays: Sequence[np.ndarray]) -> None:
    """Overwrite every parameter of ``net`` with ``arrays`` (spec order).

    Strict: the count, every shape and every dtype must match the spec (a
    :class:`~orchard.spec.SpecError` names the first tensor at fault), and no
    parameter is touched unless all of them match. Float32 in, float32 held:
    the copy is bit-exact.
    """
    spec = get_model_spec(net.model_id)
    spec.validate(arrays)
    for param, array in zip(parameter_map(net).values(), arrays, strict=True):
        param.set_data(mx.nd.array(array, dtype=np.float32))
