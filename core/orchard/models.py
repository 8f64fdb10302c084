"""The framework-neutral tensor specs of Orchard's model ids, written down once.

Every framework adapter maps its parameters onto these lists, in this order,
and the server validates every update against them; that is what lets a
PyTorch client and an MXNet client train one global model.

Layout conventions (both adapters follow them exactly):

* convolution kernels are OIHW: (out_channels, in_channels, kernel_h, kernel_w);
* dense weights are (out_features, in_features), i.e. ``y = x @ W.T + b``;
* images are NCHW, and the feature map is flattened in C, H, W order (row-major
  over (C, H, W)) before the first dense layer;
* every tensor is float32; biases are exchanged like weights.
"""

from __future__ import annotations

from orchard.spec import ModelSpec, SpecError, TensorSpec


def _layers(model_id: str, layers: list[tuple[str, tuple[int, ...]]]) -> ModelSpec:
    """A spec from (layer name, weight shape) pairs: a weight and a bias per layer."""
    tensors: list[TensorSpec] = []
    for name, shape in layers:
        tensors.append(TensorSpec(f"{name}.weight", shape))
        tensors.append(TensorSpec(f"{name}.bias", (shape[0],)))
    return ModelSpec(model_id, tuple(tensors))


#: The CNN of PyTorch's CIFAR-10 tutorial: conv 3->6 5x5, pool 2, conv 6->16 5x5,
#: pool 2, fc 400->120->84->10 (62,006 parameters).
CIFAR10_CNN = _layers(
    "cifar10-cnn",
    [
        ("conv1", (6, 3, 5, 5)),
        ("conv2", (16, 6, 5, 5)),
        ("fc1", (120, 400)),
        ("fc2", (84, 120)),
        ("fc3", (10, 84)),
    ],
)

#: The MNIST CNN of McMahan et al. 2017, "Communication-Efficient Learning of Deep
#: Networks from Decentralized Data": two 5x5 convolutions (32 and 64 channels,
#: 'same' padding 2, ReLU), each followed by 2x2 max-pooling, a 512-unit ReLU
#: layer and a 10-way softmax output (1,663,370 parameters).
MNIST_CNN = _layers(
    "mnist-cnn",
    [
        ("conv1", (32, 1, 5, 5)),
        ("conv2", (64, 32, 5, 5)),
        ("fc1", (512, 64 * 7 * 7)),
        ("fc2", (10, 512)),
    ],
)

#: The MLP of MXNet's handwritten-digit tutorial: 784->128->64->10 with ReLU.
MNIST_MLP = _layers("mnist-mlp", [("fc1", (128, 784)), ("fc2", (64, 128)), ("fc3", (10, 64))])

MODEL_SPECS: dict[str, ModelSpec] = {s.model_id: s for s in (CIFAR10_CNN, MNIST_CNN, MNIST_MLP)}


def get_model_spec(model_id: str) -> ModelSpec:
    """The registered spec of ``model_id``; the error lists the known ids."""
    try:
        return MODEL_SPECS[model_id]
    except KeyError:
        raise SpecError(
            f"unknown model id {model_id!r} (known: {', '.join(sorted(MODEL_SPECS))})"
        ) from None
