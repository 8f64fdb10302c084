"""The PyTorch modules behind Orchard's framework-neutral model ids.

Each module's ``state_dict`` (parameters and buffers, in registration order)
is exactly the tensor list of :func:`orchard.models.get_model_spec`: same
names, same shapes, same order, float32. That is what the server validates at
join time and on every update, and what lets an MXNet client train the same
``mnist-mlp``. :func:`build_model` checks it every time a model is built, so a
drifted module fails at start-up with the tensor at fault, not mid-federation.

* ``cifar10-cnn``: the CNN of PyTorch's "Training a classifier" tutorial.
* ``mnist-cnn``: the CNN of McMahan et al. 2017, "Communication-Efficient
  Learning of Deep Networks from Decentralized Data" (AISTATS), section 3:
  two 5x5 convolutions with 32 and 64 channels, each followed by 2x2
  max-pooling, a 512-unit ReLU layer and a softmax output (1,663,370
  parameters with 'same' padding).
* ``mnist-mlp``: 784-128-64-10 with ReLU, the MLP of MXNet's handwritten-digit
  tutorial, so that PyTorch and MXNet clients can federate one model.

The softmax of the outputs is part of the loss (``cross_entropy`` takes
logits), as usual in PyTorch; the modules return logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional PyTorch alias
from torch import nn

from orchard.models import get_model_spec
from orchard.spec import ModelSpec, SpecError, TensorSpec
from orchard.typing import NDArrays

__all__ = [
    "MODEL_IDS",
    "Cifar10CNN",
    "MnistCNN",
    "MnistMLP",
    "SpecNet",
    "build_model",
    "get_parameters",
    "model_spec_of",
    "set_parameters",
]


class SpecNet(nn.Module):
    """A module whose ``state_dict`` is exactly the registered spec of ``model_id``."""

    model_id: ClassVar[str]


class Cifar10CNN(SpecNet):
    """PyTorch's CIFAR-10 tutorial network (62,006 parameters).

    conv 3->6 5x5, 2x2 max-pool, conv 6->16 5x5, 2x2 max-pool, then fully
    connected 400->120->84->10 with ReLU. Input: (N, 3, 32, 32).
    """

    model_id = "cifar10-cnn"

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 10)."""
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        logits: torch.Tensor = self.fc3(x)
        return logits


class MnistCNN(SpecNet):
    """The MNIST CNN of McMahan et al. 2017 (1,663,370 parameters).

    The paper does not state the padding; 'same' padding (2 for a 5x5 kernel)
    is the reading that gives its 1,663,370 parameters: 28x28 -> pool -> 14x14
    -> pool -> 7x7, so the first dense layer sees 64*7*7 = 3136 features.
    Input: (N, 1, 28, 28).
    """

    model_id = "mnist-cnn"

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(64 * 7 * 7, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 10)."""
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        logits: torch.Tensor = self.fc2(x)
        return logits


class MnistMLP(SpecNet):
    """784-128-64-10 with ReLU (the MXNet tutorial's MLP).

    Accepts (N, 1, 28, 28) or (N, 784): the image is flattened in C, H, W
    order, the layout convention of :mod:`orchard.models` that the MXNet
    adapter follows too.
    """

    model_id = "mnist-mlp"

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 10)."""
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        logits: torch.Tensor = self.fc3(x)
        return logits


_MODELS: dict[str, type[SpecNet]] = {
    Cifar10CNN.model_id: Cifar10CNN,
    MnistCNN.model_id: MnistCNN,
    MnistMLP.model_id: MnistMLP,
}
#: Model ids this client can train.
MODEL_IDS: tuple[str, ...] = tuple(sorted(_MODELS))


def model_spec_of(model: SpecNet) -> ModelSpec:
    """The spec a module actually has: its ``state_dict`` names, shapes and dtypes."""
    tensors = tuple(
        TensorSpec(
            name=name,
            shape=tuple(int(d) for d in tensor.shape),
            dtype=str(tensor.dtype).removeprefix("torch."),
        )
        for name, tensor in model.state_dict().items()
    )
    return ModelSpec(model.model_id, tensors)


def build_model(
    model_id: str, *, seed: int | None = None, device: torch.device | None = None
) -> SpecNet:
    """A fresh module for ``model_id`` on ``device`` (default CPU), checked against its spec.

    With ``seed``, the initial weights depend only on the seed (the global RNG
    is left untouched), so every client and the baseline can start from the
    same weights.
    """
    try:
        builder = _MODELS[model_id]
    except KeyError:
        raise SpecError(
            f"model id {model_id!r} has no PyTorch implementation (available: "
            f"{', '.join(MODEL_IDS)})"
        ) from None
    if seed is None:
        model = builder()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder()
    expected = get_model_spec(model_id)
    difference = expected.first_difference(model_spec_of(model))
    if difference is not None:
        raise SpecError(f"PyTorch model {model_id!r} does not match its spec: {difference}")
    return model.to(device) if device is not None else model


def get_parameters(model: SpecNet) -> NDArrays:
    """Float32 CPU NumPy copies of the ``state_dict``, in spec order.

    Copies, not views: the arrays go to the wire or the server's aggregate
    while the module keeps training.
    """
    return [tensor.detach().to("cpu", copy=True).numpy() for tensor in model.state_dict().values()]


def set_parameters(model: SpecNet, arrays: Sequence[np.ndarray]) -> None:
    """Load ``arrays`` (in spec order) into ``model``, bit-exactly.

    Strict: the count, every shape and every dtype must match the model's
    spec; a mismatch raises :class:`~orchard.spec.SpecError` naming the
    tensor (and nothing is loaded), rather than PyTorch's silent broadcasting
    or dtype casting.
    """
    spec = get_model_spec(model.model_id)
    spec.validate(list(arrays))
    state = model.state_dict()
    if list(state) != spec.names:
        difference = spec.first_difference(model_spec_of(model))
        raise SpecError(f"module does not match spec {spec.model_id!r}: {difference}")
    with torch.no_grad():
        for target, array in zip(state.values(), arrays, strict=True):
            native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
            target.copy_(torch.from_numpy(native))
