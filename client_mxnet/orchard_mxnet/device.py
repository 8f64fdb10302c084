"""Choosing the MXNet context from ``--device auto|cpu|cuda[:N]`` (``gpu[:N]`` too).

``auto`` takes the first GPU when this MXNet build sees one and the CPU
otherwise, and says which it chose: a federation silently training on the CPU
of a GPU machine (for example because the CPU-only ``mxnet`` wheel is
installed instead of ``mxnet-cu*``) is a common, slow surprise. Asking for a
GPU explicitly without one is an error, not a quiet fallback. The accepted
values and the messages are every client's
(:func:`orchard.client.adapter.select_gpu`); this module only asks MXNet.
"""

from __future__ import annotations

import logging
from typing import Any

import mxnet as mx

from orchard.client.adapter import DEVICE_CHOICES, DeviceError, select_gpu

__all__ = ["DEVICE_CHOICES", "DeviceError", "resolve_device"]

logger = logging.getLogger(__name__)

_NO_GPU = (
    "MXNet sees no GPU (mxnet.context.num_gpus() == 0); a GPU needs a CUDA build of MXNet "
    "(mxnet-cuXXX) on a machine with one"
)


def _gpu_count() -> int:
    """GPUs visible to this MXNet build (0 for CPU-only builds)."""
    return int(mx.context.num_gpus())


def resolve_device(request: str) -> Any:
    """The ``mx.Context`` for ``request`` (``auto``, ``cpu``, ``cuda``/``gpu`` or ``cuda:N``).

    ``auto`` means GPU 0 when MXNet sees a GPU, else the CPU; the choice is logged.
    """
    count = _gpu_count()
    index = select_gpu(request, gpu_count=count, no_gpu_reason=_NO_GPU)
    if index is None:
        logger.info(
            "using device cpu%s",
            "" if count or request.strip().lower() == "cpu" else "; no GPU visible to MXNet",
        )
        return mx.cpu()
    logger.info("using device cuda:%d (GPU %d of %d visible to MXNet)", index, index, count)
    return mx.gpu(index)
