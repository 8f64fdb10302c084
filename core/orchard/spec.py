"""Framework-neutral model specifications and the validation of updates.

A model spec is the ordered list of (name, shape, dtype) of one model id. Every
framework adapter maps its parameters onto it, and the server checks every
update against it, so a PyTorch and an MXNet client can train one global model
and a malformed update never reaches the aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchard.typing import NDArrays

#: dtypes that may cross the wire, by their canonical little-endian NumPy name.
SUPPORTED_DTYPES: tuple[str, ...] = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)

#: Elements checked per step by :func:`all_finite` (a 256 KiB boolean temporary).
_FINITE_BLOCK = 1 << 18


def all_finite(array: np.ndarray) -> bool:
    """True unless a floating-point ``array`` holds a NaN or an infinity.

    Checks one block at a time: ``np.isfinite(array).all()`` would first build
    a boolean array of a quarter of a float32 tensor's size (11 MB for a
    44.8 MB model), at the moment the server holds a whole received update.
    Same speed (measured on 11.2M float32 values: 3.7 ms against 3.9 ms).
    """
    if array.dtype.kind not in "fc":
        return True
    flat = array.reshape(-1)
    for start in range(0, flat.size, _FINITE_BLOCK):
        if not np.isfinite(flat[start : start + _FINITE_BLOCK]).all():
            return False
    return True


class SpecError(ValueError):
    """An update or a model does not match a model spec; the message says where."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape and dtype of one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.name:
            raise SpecError("tensor name must not be empty")
        if self.dtype not in SUPPORTED_DTYPES:
            raise SpecError(
                f"tensor {self.name!r}: dtype {self.dtype!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_DTYPES)})"
            )
        if any(d < 0 for d in self.shape):
            raise SpecError(f"tensor {self.name!r}: negative dimension in shape {self.shape}")

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Number of bytes on the wire."""
        return self.size * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """``name: dtype[shape]``, for error messages."""
        return f"{self.name}: {self.dtype}{list(self.shape)}"

    @classmethod
    def of(cls, name: str, array: np.ndarray) -> TensorSpec:
        """The spec of an existing array."""
        return cls(name=name, shape=tuple(int(d) for d in array.shape), dtype=array.dtype.name)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The ordered tensors of one model id."""

    model_id: str
    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tensors]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpecError(f"model {self.model_id!r}: duplicate tensor names {duplicates}")

    @property
    def num_parameters(self) -> int:
        """Total number of elements over all tensors."""
        return sum(t.size for t in self.tensors)

    @property
    def nbytes(self) -> int:
        """Total bytes on the wire."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def names(self) -> list[str]:
        """Tensor names in order."""
        return [t.name for t in self.tensors]

    def first_difference(self, other: ModelSpec) -> str | None:
        """Describe the first tensor where ``other`` differs from this spec, or None.

        Used at join time so that a client with the wrong model learns exactly
        which tensor is wrong instead of failing later with a shape error.
        """
        for i, (mine, theirs) in enumerate(zip(self.tensors, other.tensors, strict=False)):
            if mine != theirs:
                return (
                    f"tensor #{i}: federation expects {mine.describe()}, "
                    f"client has {theirs.describe()}"
                )
        if len(self.tensors) != len(other.tensors):
            if len(other.tensors) < len(self.tensors):
                missing = self.tensors[len(other.tensors)]
                return (
                    f"tensor #{len(other.tensors)}: federation expects {missing.describe()}, "
                    f"client has no more tensors ({len(other.tensors)} of {len(self.tensors)})"
                )
            extra = other.tensors[len(self.tensors)]
            return (
                f"tensor #{len(self.tensors)}: client has extra tensor {extra.describe()}, "
                f"federation expects only {len(self.tensors)} tensors"
            )
        return None

    def validate(self, arrays: Sequence[np.ndarray], *, require_finite: bool = True) -> None:
        """Raise :class:`SpecError` unless ``arrays`` match this spec exactly.

        Checks count, shapes, dtypes and (for floating dtypes) that every value
        is finite: one NaN in one client's update would poison the global model.
        """
        if len(arrays) != len(self.tensors):
            raise SpecError(
                f"model {self.model_id!r} has {len(self.tensors)} tensors, got {len(arrays)}"
            )
        for spec, array in zip(self.tensors, arrays, strict=True):
            if tuple(array.shape) != spec.shape:
                raise SpecError(
                    f"tensor {spec.name!r}: expected shape {list(spec.shape)}, "
                    f"got {list(array.shape)}"
                )
            if array.dtype.name != spec.dtype:
                raise SpecError(
                    f"tensor {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype.name}"
                )
            if require_finite and not all_finite(array):
                bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                raise SpecError(
                    f"tensor {spec.name!r}: {bad} of {array.size} values are NaN or infinite"
                )

    @classmethod
    def of(cls, model_id: str, names: Sequence[str], arrays: NDArrays) -> ModelSpec:
        """The spec of existing named arrays."""
        if len(names) != len(arrays):
            raise SpecError(f"{len(names)} names for {len(arrays)} arrays")
        return cls(model_id, tuple(TensorSpec.of(n, a) for n, a in zip(names, arrays, strict=True)))
