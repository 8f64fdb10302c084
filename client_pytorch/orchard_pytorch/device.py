"""Choosing the torch device from ``--device auto|cpu|cuda[:N]``.

``auto`` is the default so the same command (and the same container image)
trains on a GPU where there is one and on the CPU elsewhere, with no change.
An explicit ``cuda`` request on a machine without CUDA is an error rather than
a silent fall-back: someone who asked for a GPU wants to know they lack one.
"""

from __future__ import annotations

import logging
import re

import torch

__all__ = ["DEVICE_CHOICES", "DeviceError", "resolve_device"]

logger = logging.getLogger(__name__)

#: What ``--device`` accepts (besides ``cuda:N``).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


class DeviceError(ValueError):
    """The requested device cannot be used; the message says why and what to do."""


def _cuda_unavailable_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA support"
    return f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA device"


def resolve_device(request: str) -> torch.device:
    """The torch device for ``request`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    ``auto`` means CUDA device 0 when CUDA is available, else the CPU. The
    choice is logged, with the GPU's name when there is one.
    """
    text = request.strip().lower()
    if text == "auto":
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    elif text == "cpu":
        device = torch.device("cpu")
    elif text == "cuda" or _CUDA_INDEX.fullmatch(text):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {request} (ORCHARD_DEVICE) asks for a GPU, but "
                f"{_cuda_unavailable_reason()}; use --device auto or --device cpu"
            )
        device = torch.device(text)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"--device {request} (ORCHARD_DEVICE): there are only {count} CUDA devices "
                f"(cuda:0..cuda:{count - 1})"
            )
    else:
        raise DeviceError(
            f"--device {request!r} (ORCHARD_DEVICE) is not one of auto, cpu, cuda, cuda:N"
        )
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        logger.info("using device cuda:%d (%s)", index, torch.cuda.get_device_name(index))
    else:
        logger.info(
            "using device cpu (%d threads)%s",
            torch.get_num_threads(),
            "" if text == "cpu" else f"; no CUDA: {_cuda_unavailable_reason()}",
        )
    return device
