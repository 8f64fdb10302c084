"""Choosing the torch device from ``--device auto|cpu|cuda[:N]``.

``auto`` is the default so the same command (and the same container image)
trains on a GPU where there is one and on the CPU elsewhere, with no change.
An explicit ``cuda`` request on a machine without CUDA is an error rather than
a silent fall-back: someone who asked for a GPU wants to know they lack one.
The accepted values and the messages are every client's
(:func:`orchard.client.adapter.select_gpu`); this module only asks PyTorch.
"""

from __future__ import annotations

import logging

import torch

from orchard.client.adapter import DEVICE_CHOICES, DeviceError, select_gpu

__all__ = ["DEVICE_CHOICES", "DeviceError", "resolve_device"]

logger = logging.getLogger(__name__)


def _gpu_count() -> int:
    """CUDA devices PyTorch can use (0 for CPU-only builds or machines)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _no_gpu_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA support"
    return f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA device"


def resolve_device(request: str) -> torch.device:
    """The torch device for ``request`` (``auto``, ``cpu``, ``cuda``/``gpu`` or ``cuda:N``).

    ``auto`` means CUDA device 0 when CUDA is available, else the CPU. The
    choice is logged, with the GPU's name when there is one.
    """
    count = _gpu_count()
    index = select_gpu(request, gpu_count=count, no_gpu_reason=_no_gpu_reason())
    if index is None:
        logger.info(
            "using device cpu (%d threads)%s",
            torch.get_num_threads(),
            "" if count or request.strip().lower() == "cpu" else f"; no GPU: {_no_gpu_reason()}",
        )
        return torch.device("cpu")
    logger.info("using device cuda:%d (%s)", index, torch.cuda.get_device_name(index))
    return torch.device("cuda", index)
