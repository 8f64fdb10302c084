"""Fixtures of generated dataset files for the core data tests.

``cifar``, ``cifar_data_dir`` and ``mnist`` are those of
:mod:`tests.helpers.client_data`, shared with the PyTorch client's tests.
"""

from tests.helpers.client_data import cifar, cifar_data_dir, mnist

__all__ = ["cifar", "cifar_data_dir", "mnist"]
