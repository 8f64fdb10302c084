"""Choosing the MXNet context (CPU or GPU) from the ``--device`` option.

``auto`` takes the first GPU when this MXNet build sees one and the CPU
otherwise, and says which it chose: a federation silently training on the CPU
of a GPU machine (for example because the CPU-only ``mxnet`` wheel is
installed instead of ``mxnet-cu*``) is a common, slow surprise. Asking for
``gpu`` explicitly without one is an error, not a quiet fallback.
"""

from __future__ import annotations

import logging
from typing import Any

import mxnet as mx

__all__ = ["DEVICE_CHOICES", "DeviceError", "resolve_context"]

#: Values accepted by ``--device`` / ``ORCHARD_DEVICE``.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "gpu")

_log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """The requested device does not exist or the option value is unknown."""


def _gpu_count() -> int:
    """GPUs visible to this MXNet build (0 for CPU-only builds)."""
    return int(mx.context.num_gpus())


def resolve_context(device: str) -> Any:
    """The ``mx.Context`` for ``device`` ("auto", "cpu" or "gpu")."""
    if device not in DEVICE_CHOICES:
        raise DeviceError(
            f"unknown device {device!r} for --device/ORCHARD_DEVICE "
            f"(choose one of: {', '.join(DEVICE_CHOICES)})"
        )
    if device == "cpu":
        _log.info("training on the CPU (--device cpu)")
        return mx.cpu()
    gpus = _gpu_count()
    if gpus > 0:
        _log.info("training on GPU 0 of %d (--device %s)", gpus, device)
        return mx.gpu(0)
    if device == "gpu":
        raise DeviceError(
            "--device gpu was requested, but MXNet sees no GPU (mxnet.context.num_gpus() == 0); "
            "install a CUDA build of MXNet (mxnet-cuXXX) on a machine with a GPU, "
            "or use --device auto or cpu"
        )
    _log.info("no GPU visible to MXNet: training on the CPU (--device auto)")
    return mx.cpu()
