"""Fixtures of the PyTorch client's tests, shared with other test packages.

``cifar``, ``cifar_data_dir`` and ``mnist`` (generated dataset files) are
those of :mod:`tests.helpers.client_data`, shared with the core data tests;
``processes`` (child processes killed at the end) is
:func:`tests.helpers.processes.processes`.
"""

from tests.helpers.client_data import cifar, cifar_data_dir, mnist
from tests.helpers.processes import processes

__all__ = ["cifar", "cifar_data_dir", "mnist", "processes"]
