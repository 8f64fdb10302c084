"""Fixtures of the PyTorch client's tests, shared with other test packages.

``cifar``, ``cifar_data_dir`` and ``mnist`` (generated dataset files) are
those of :mod:`tests.helpers.client_data`, shared with the core data tests;
``launcher`` comes from ``tests/conftest.py``.
"""

from tests.helpers.client_data import cifar, cifar_data_dir, mnist

__all__ = ["cifar", "cifar_data_dir", "mnist"]
