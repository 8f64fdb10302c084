"""The NumPy-level client interface every framework adapter implements.

Modelled on Flower's ``NumPyClient``: parameters are ordered lists of NumPy
arrays in the model spec's order, so the runtime (and the server) never see a
framework type.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from orchard.spec import ModelSpec
from orchard.typing import Config, Metrics, NDArrays


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientContext:
    """What a client learns when it joins, before it loads its data.

    ``partition_id``/``num_partitions`` are the server's assignment, unless
    the user fixed them on the command line (then those win).
    """

    federation: str
    client_id: str
    partition_id: int
    num_partitions: int
    model_spec: ModelSpec


class NumPyClient(abc.ABC):
    """A federated client: get, fit and evaluate parameters as NumPy arrays."""

    @abc.abstractmethod
    def get_parameters(self, config: Config) -> NDArrays:
        """The current local parameters, in the model spec's order."""

    @abc.abstractmethod
    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        """Train from ``parameters``; return new parameters, the number of
        training examples (not batches) and metrics."""

    @abc.abstractmethod
    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        """Evaluate ``parameters``; return loss, number of examples and metrics."""
