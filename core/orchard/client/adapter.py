"""The adapter contract: what a machine-learning framework supplies to become an Orchard client.

A framework adapter (``orchard_pytorch``, ``orchard_mxnet``, ...) implements
:class:`FrameworkAdapter` -- build a registered model, read and write its
parameters in the model spec's order, train it with a
:class:`~orchard.client.training.TrainConfig` (FedProx's proximal term and the
shuffling seed included), evaluate it, and say which device it runs on -- and
everything else is framework-neutral code in this package: one generic
:class:`AdapterClient` (Orchard's :class:`~orchard.client.numpy_client.NumPyClient`
on top of any adapter), one centralized baseline (:mod:`orchard.client.baseline`)
and one command line (:mod:`orchard.client.cli`). So a PyTorch and an MXNet
client behave the same by construction -- same fit/evaluate semantics, same
seeds, same errors -- and adding a framework means writing one adapter
(``docs/adapters.md``); ``tests/contract`` checks any adapter against this
contract.

The data an adapter trains on is its own type (``SplitT``: tensors, NumPy
batches, ...), made from the shared uint8 arrays of :mod:`orchard.data` by the
adapter's ``client_data``, so every framework reads the same files and the same
partition.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

import numpy as np

from orchard.client.numpy_client import NumPyClient
from orchard.client.progress import ProgressBoard
from orchard.client.training import (
    ConfigError,
    EpochStats,
    EvalResult,
    EvalSplit,
    TrainConfig,
    eval_batch_size,
    eval_split,
    fit_seed,
)
from orchard.data.client_data import ClientDataset, DataError, DataSettings, OfficialSplit
from orchard.data.partition import PartitionSpec
from orchard.messages import Role, TaskProgress
from orchard.spec import ModelSpec
from orchard.typing import Config, Metrics, NDArrays

__all__ = [
    "DEVICE_CHOICES",
    "AdapterClient",
    "DeviceError",
    "FrameworkAdapter",
    "TrainResult",
    "fit_metrics",
    "select_gpu",
]

log = logging.getLogger("orchard.client")

#: The framework's model type (``torch.nn.Module``, a Gluon block, ...).
ModelT = TypeVar("ModelT")
#: What one data split is for the framework (an image set it batches itself).
SplitT = TypeVar("SplitT", bound=Sized)

#: What ``--device`` accepts in every client (``gpu`` and ``gpu:N`` mean the same as ``cuda``).
DEVICE_CHOICES: Final[tuple[str, ...]] = ("auto", "cpu", "cuda", "cuda:N")

_GPU = re.compile(r"(?:cuda|gpu)(?::(\d+))?")


class DeviceError(ValueError):
    """The requested device cannot be used; the message says why and what to do."""


def select_gpu(request: str, *, gpu_count: int, no_gpu_reason: str) -> int | None:
    """The GPU index ``--device request`` means, or None for the CPU.

    ``auto`` takes GPU 0 when there is one and the CPU otherwise; ``cpu`` is
    the CPU; ``cuda``/``gpu`` (GPU 0) and ``cuda:N``/``gpu:N`` must exist: a
    person who asked for a GPU wants to know they lack one, not a silent
    fall-back. ``gpu_count`` and ``no_gpu_reason`` (why there is none, e.g.
    "this PyTorch build has no CUDA support") come from the framework.
    """
    text = request.strip().lower()
    if text == "auto":
        return 0 if gpu_count > 0 else None
    if text == "cpu":
        return None
    match = _GPU.fullmatch(text)
    if match is None:
        raise DeviceError(
            f"--device {request!r} (ORCHARD_DEVICE) is not one of {', '.join(DEVICE_CHOICES)} "
            "(gpu and gpu:N mean the same as cuda and cuda:N)"
        )
    if gpu_count == 0:
        raise DeviceError(
            f"--device {request} (ORCHARD_DEVICE) asks for a GPU, but {no_gpu_reason}; "
            "use --device auto or --device cpu"
        )
    index = int(match.group(1) or 0)
    if index >= gpu_count:
        raise DeviceError(
            f"--device {request} (ORCHARD_DEVICE): there are only {gpu_count} CUDA devices "
            f"(cuda:0..cuda:{gpu_count - 1})"
        )
    return index


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """Outcome of an adapter's local training.

    ``num_examples`` is the number of training examples (one epoch's worth,
    not batches and not epochs x examples): FedAvg weights each client's
    update by its data size. ``loss`` (cross-entropy without the proximal
    term, so it compares with evaluation losses) and ``accuracy`` are those of
    the last epoch; ``history`` holds every epoch.
    """

    num_examples: int
    loss: float
    accuracy: float
    history: tuple[EpochStats, ...]


def fit_metrics(result: TrainResult, *, fit_seconds: float, fit_cpu_seconds: float) -> Metrics:
    """What one local fit reports to the server: quality of the last epoch and throughput.

    ``train_loss`` and ``train_accuracy`` are the last epoch's. Three rates
    measure the client's cost beside its training (issue 12: a federated
    client should train within 5% of the centralized script's speed):

    * ``train_examples_per_second``: examples trained (``num_examples`` x
      epochs) over the seconds spent inside the adapter's training loops, the
      loops' own per-epoch timing (what the centralized baseline reports);
    * ``fit_examples_per_second``: the same examples over ``fit_seconds``, the
      whole fit on the client: loading the global parameters, training and
      reading the new ones back;
    * ``fit_cpu_examples_per_second``: the same examples over
      ``fit_cpu_seconds``, the CPU time the client's process (every thread:
      training, gRPC, heartbeats) spent during the whole fit. Unlike the wall
      clock it barely moves when other programs share the machine.

    A rate whose time is too short for the clock to measure (zero) is left
    out rather than reported as infinite.
    """
    metrics: Metrics = {"train_loss": result.loss, "train_accuracy": result.accuracy}
    trained = result.num_examples * len(result.history)
    loop_seconds = math.fsum(
        result.num_examples / stats.examples_per_second
        for stats in result.history
        if stats.examples_per_second > 0
    )
    rates = {
        "train_examples_per_second": loop_seconds,
        "fit_examples_per_second": fit_seconds,
        "fit_cpu_examples_per_second": fit_cpu_seconds,
    }
    for key, seconds in rates.items():
        if seconds > 0:
            metrics[key] = trained / seconds
    return metrics


class FrameworkAdapter(Protocol[ModelT, SplitT]):
    """What one framework supplies; an instance is bound to one device.

    Implementations are constructed as ``Adapter(device="auto")`` and raise
    :class:`DeviceError` for a device they cannot use (see :func:`select_gpu`).
    Every method must keep the spec's order and dtypes exactly: the server
    validates each update against :func:`orchard.models.get_model_spec`, and
    other frameworks' clients train the same tensors.
    """

    @property
    def framework(self) -> str:
        """The name the client announces when it joins (``pytorch``, ``mxnet``)."""
        ...

    @property
    def device(self) -> str:
        """Where models live and train, for logs (``cpu``, ``cuda:0``)."""
        ...

    @property
    def model_ids(self) -> tuple[str, ...]:
        """The registered model ids this adapter implements."""
        ...

    @property
    def datasets(self) -> tuple[str, ...]:
        """The datasets (keys of :data:`orchard.data.client_data.DATASETS`) it can read."""
        ...

    def build_model(self, model_id: str, *, seed: int) -> ModelT:
        """A fresh model on :attr:`device` whose initial weights depend only on ``seed``.

        Checked against the registered spec (a :class:`~orchard.spec.SpecError`
        names the first differing tensor), so a drifted model fails at start-up.
        """
        ...

    def model_spec(self, model: ModelT) -> ModelSpec:
        """The spec ``model`` actually has: names, shapes and dtypes read from the framework
        (equal to the registered spec of its model id, which the contract tests check)."""
        ...

    def get_parameters(self, model: ModelT) -> NDArrays:
        """Copies of every tensor of the spec, in spec order, as NumPy arrays."""
        ...

    def set_parameters(self, model: ModelT, arrays: Sequence[np.ndarray]) -> None:
        """Load ``arrays`` (spec order) bit-exactly; a wrong count, shape or dtype raises
        :class:`~orchard.spec.SpecError` naming the tensor, and nothing is loaded."""
        ...

    def client_data(
        self,
        settings: DataSettings,
        *,
        model_id: str,
        partition: PartitionSpec | None = None,
        partition_id: int = 0,
        seed: int = 0,
        preloaded: Mapping[OfficialSplit, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> ClientDataset[SplitT]:
        """One client's data for ``model_id`` (see :class:`ClientDataset`): its splits are
        what :meth:`train` and :meth:`evaluate` take. Refuses a dataset it cannot read."""
        ...

    def train(
        self,
        model: ModelT,
        data: SplitT,
        config: TrainConfig,
        *,
        proximal_reference: Sequence[np.ndarray] | None = None,
        on_epoch: Callable[[EpochStats], None] | None = None,
    ) -> TrainResult:
        """Train ``model`` in place for ``config.epochs`` epochs over ``data``.

        Batches of ``config.batch_size`` in an order drawn from ``config.seed``
        (the same seed gives the same result). With ``config.proximal_mu > 0``
        every step adds FedProx's ``mu/2 * ||w - w_ref||^2`` towards
        ``proximal_reference`` (spec order; default: the parameters on entry).
        Logs one :class:`EpochStats` line per epoch and hands it to ``on_epoch``;
        raises :class:`~orchard.client.training.TrainingError` on empty data or
        a diverged loss.
        """
        ...

    def evaluate(self, model: ModelT, data: SplitT, *, batch_size: int) -> EvalResult:
        """Mean cross-entropy, accuracy and example count of ``model`` on ``data``
        (``EvalResult(0.0, 0.0, 0)`` for an empty split)."""
        ...


class AdapterClient(NumPyClient, Generic[ModelT, SplitT]):
    """Orchard's NumPy client on any framework adapter.

    ``fit`` is ``set_parameters -> train -> get_parameters`` on this client's
    training split, with the shuffling seed of
    :func:`~orchard.client.training.fit_seed`; ``evaluate`` uses the split the
    evaluate config names (``val`` by default: the partition's held-out
    share; or ``test``). An evaluator holds no training data: it refuses to
    fit and always evaluates the whole official test set.
    """

    def __init__(
        self,
        adapter: FrameworkAdapter[ModelT, SplitT],
        *,
        model_id: str,
        data: ClientDataset[SplitT],
        role: Role = Role.TRAINER,
        seed: int = 0,
        progress: ProgressBoard | None = None,
        on_epoch: Callable[[EpochStats], None] | None = None,
    ) -> None:
        # Data prepared for another model (other input shape) has a ``model_id`` to say so.
        data_model = getattr(data, "model_id", model_id)
        if data_model != model_id:
            raise DataError(f"data prepared for {data_model!r}, but the model is {model_id!r}")
        self.adapter = adapter
        self.model_id = model_id
        self.model = adapter.build_model(model_id, seed=seed)
        self.data = data
        self.role = role
        #: Each epoch's end is posted here (the runtime's heartbeats report it).
        self.progress = progress if progress is not None else ProgressBoard()
        #: Also told of every epoch (e.g. :class:`~orchard.client.curves.EpochCurves`).
        self.on_epoch = on_epoch

    def get_parameters(self, config: Config) -> NDArrays:
        """The local model's tensors, in spec order."""
        return self.adapter.get_parameters(self.model)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        """Train from the global ``parameters`` as the fit config says.

        Returns the new parameters, the number of training examples (FedAvg's
        weight) and :func:`fit_metrics`: ``train_loss``/``train_accuracy`` of
        the last epoch and the examples per second inside the training loop,
        over this whole call, and per CPU second of this process during it.
        With ``proximal_mu > 0`` the FedProx term pulls towards ``parameters``.
        """
        if self.role is Role.EVALUATOR:
            raise ConfigError("this client is an evaluator: it holds no training data to fit on")
        cfg = TrainConfig.from_config(config)
        started, cpu_started = time.perf_counter(), time.process_time()
        self.adapter.set_parameters(self.model, parameters)
        seed = fit_seed(cfg.seed, self.data.partition_id)
        train_set = self.data.train
        log.info("%s", cfg.describe(len(train_set)))
        self.progress.post(TaskProgress(fraction=0.0, epoch=1))
        result = self.adapter.train(
            self.model,
            train_set,
            dataclasses.replace(cfg, seed=seed),
            proximal_reference=parameters if cfg.proximal_mu > 0 else None,
            on_epoch=self._epoch_done,
        )
        trained = self.adapter.get_parameters(self.model)
        metrics = fit_metrics(
            result,
            fit_seconds=time.perf_counter() - started,
            fit_cpu_seconds=time.process_time() - cpu_started,
        )
        return trained, result.num_examples, metrics

    def _epoch_done(self, stats: EpochStats) -> None:
        self.progress.post_epoch(stats)
        if self.on_epoch is not None:
            self.on_epoch(stats)

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        """Loss, number of examples and ``accuracy`` of ``parameters`` on a split."""
        batch_size = eval_batch_size(config)
        split: EvalSplit = "test" if self.role is Role.EVALUATOR else eval_split(config, "val")
        self.adapter.set_parameters(self.model, parameters)
        result = self.adapter.evaluate(self.model, self.data.split(split), batch_size=batch_size)
        log.info("%s", result.describe(split))
        return result.loss, result.num_examples, {"accuracy": result.accuracy}
