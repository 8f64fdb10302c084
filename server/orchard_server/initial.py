"""Initial global parameters, without any ML framework.

Seeded initialisation mirrors PyTorch's default for linear and convolution
layers (He et al. 2015 "Delving Deep into Rectifiers", with PyTorch's
``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
weights, and the same bound for the following bias), so a federated run starts
where a centralized run of the same model would.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from orchard.spec import ModelSpec, SpecError
from orchard.typing import NDArrays


class InitError(ValueError):
    """Initial parameters cannot be built; the message says why."""


def seeded_parameters(spec: ModelSpec, seed: int) -> NDArrays:
    """Deterministic parameters for ``spec`` from ``seed``."""
    rng = np.random.default_rng(seed)
    out: NDArrays = []
    fan_in = 1
    for tensor in spec.tensors:
        if len(tensor.shape) >= 2:
            fan_in = math.prod(tensor.shape[1:])
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        if np.dtype(tensor.dtype).kind == "f":
            values = rng.uniform(-bound, bound, size=tensor.shape).astype(tensor.dtype)
        else:
            values = np.zeros(tensor.shape, dtype=tensor.dtype)
        out.append(values)
    return out


def parameters_from_file(spec: ModelSpec, path: Path) -> NDArrays:
    """Parameters from an ``.npz`` whose keys are the spec's tensor names."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [n for n in spec.names if n not in npz.files]
            if missing:
                raise InitError(f"{path}: missing tensors {missing} (has {sorted(npz.files)})")
            arrays = [npz[name] for name in spec.names]
    except (OSError, ValueError) as exc:
        raise InitError(f"{path}: cannot read initial parameters: {exc}") from None
    try:
        spec.validate(arrays)
    except SpecError as exc:
        raise InitError(f"{path}: {exc}") from None
    return arrays


def initial_parameters(spec: ModelSpec, init_file: Path | None, seed: int) -> tuple[NDArrays, str]:
    """A new federation's parameters, from ``init_file`` if given, else from ``seed``.

    Also returns where they came from, in words, for the log.
    """
    if init_file is not None:
        return parameters_from_file(spec, init_file), f"file {init_file}"
    return seeded_parameters(spec, seed), f"seed {seed}"
