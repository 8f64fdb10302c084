"""Helpers for tests (and the ``fashion-federation`` make target) that drive both frameworks.

PyTorch and MXNet need different NumPy versions, so they never share a
process: the PyTorch side runs in the main environment, the MXNet side in
``.venv-mxnet`` (``ORCHARD_MXNET_PYTHON`` overrides the interpreter). The two
talk either through ``.npz`` files (:class:`EquivalenceCase` in,
:class:`EquivalenceResult` out, written by the workers in
``tests/crossframework/worker_*.py``) or through a real Orchard server
(:func:`run_mixed_federation`).

This module imports neither torch nor mxnet, and works on NumPy 1.23 and 2.x,
because the MXNet-side workers import it too.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchard.models import get_model_spec
from orchard.spec import ModelSpec, TensorSpec
from orchard.typing import NDArrays, Scalar
from tests.helpers.datasets import UNREACHABLE
from tests.helpers.processes import REPO, Proc, fedavg_federation, start_loopback_server, tails

__all__ = [
    "FRAMEWORKS",
    "UNREACHABLE",
    "ClientDataSource",
    "EquivalenceCase",
    "EquivalenceResult",
    "FederationRunError",
    "MixedFederation",
    "MixedOutcome",
    "RoundSummary",
    "WorkerError",
    "accuracy_table",
    "make_case",
    "mxnet_python",
    "reference_cross_entropy",
    "reference_logits",
    "run_mixed_federation",
    "run_worker",
    "run_workers",
    "start_framework_client",
]

#: The frameworks with an Orchard client, as they announce themselves at join.
FRAMEWORKS: tuple[str, ...] = ("pytorch", "mxnet")


def mxnet_python() -> Path | None:
    """The MXNet environment's interpreter, or None when there is none.

    ``ORCHARD_MXNET_PYTHON`` names it explicitly (CI images, other layouts);
    otherwise it is the repository's ``.venv-mxnet/bin/python``.
    """
    configured = os.environ.get("ORCHARD_MXNET_PYTHON")
    candidate = Path(configured) if configured else REPO / ".venv-mxnet" / "bin" / "python"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _python_of(framework: str, mxnet: Path | str | None) -> str:
    """The interpreter that runs ``framework``'s code."""
    if framework == "pytorch":
        return sys.executable
    if framework == "mxnet":
        python = mxnet if mxnet is not None else mxnet_python()
        if python is None:
            raise FileNotFoundError(
                "no MXNet interpreter: create .venv-mxnet (make setup) or set ORCHARD_MXNET_PYTHON"
            )
        return str(python)
    raise ValueError(f"unknown framework {framework!r} (known: {', '.join(FRAMEWORKS)})")


# --- numerical equivalence: the .npz protocol --------------------------------------


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write atomically, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as fh:
        # Names are spec names, never numpy's keyword ``allow_pickle``.
        np.savez(fh, **dict(arrays))  # type: ignore[arg-type]
    partial.replace(path)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _spec_to_json(spec: ModelSpec) -> str:
    return json.dumps(
        {
            "model_id": spec.model_id,
            "tensors": [[t.name, list(t.shape), t.dtype] for t in spec.tensors],
        }
    )


def _spec_from_json(text: str) -> ModelSpec:
    data = json.loads(text)
    return ModelSpec(
        data["model_id"],
        tuple(TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in data["tensors"]),
    )


@dataclass(frozen=True, kw_only=True)
class EquivalenceCase:
    """What both frameworks are given: parameters, a batch and one step's settings.

    ``images`` are raw uint8 (N, 28, 28) so each adapter applies its own
    preprocessing; ``anchor`` is the global model FedProx pulls towards.
    """

    model_id: str
    parameters: NDArrays
    anchor: NDArrays
    images: np.ndarray
    labels: np.ndarray
    learning_rate: float
    proximal_mu: float

    @property
    def spec(self) -> ModelSpec:
        """The registered spec of ``model_id``."""
        return get_model_spec(self.model_id)

    def save(self, path: Path) -> None:
        """Write the case as one ``.npz`` (no pickle)."""
        names = self.spec.names
        arrays: dict[str, np.ndarray] = {
            "model_id": np.array(self.model_id),
            "images": self.images,
            "labels": self.labels,
            "learning_rate": np.array(self.learning_rate, dtype=np.float64),
            "proximal_mu": np.array(self.proximal_mu, dtype=np.float64),
        }
        arrays.update({f"param/{n}": a for n, a in zip(names, self.parameters, strict=True)})
        arrays.update({f"anchor/{n}": a for n, a in zip(names, self.anchor, strict=True)})
        _save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> EquivalenceCase:
        """Inverse of :meth:`save`."""
        data = _load_npz(path)
        model_id = str(data["model_id"])
        names = get_model_spec(model_id).names
        return cls(
            model_id=model_id,
            parameters=[data[f"param/{n}"] for n in names],
            anchor=[data[f"anchor/{n}"] for n in names],
            images=data["images"],
            labels=data["labels"],
            learning_rate=float(data["learning_rate"]),
            proximal_mu=float(data["proximal_mu"]),
        )


@dataclass(frozen=True, kw_only=True)
class EquivalenceResult:
    """What one framework computed from an :class:`EquivalenceCase`.

    * ``spec``: the spec its adapter's model actually has;
    * ``logits`` of the batch and ``loss`` (mean cross-entropy) / ``accuracy``
      from the adapter's evaluation function;
    * ``sgd_step``: parameters after one step of the adapter's training loop
      (plain SGD, no momentum, the whole batch, ``proximal_mu = 0``);
    * ``proximal_gradient``: the gradient of the adapter's FedProx term alone;
    * ``fedprox_step``: parameters after one training step with FedProx on.
    """

    framework: str
    spec: ModelSpec
    logits: np.ndarray
    loss: float
    accuracy: float
    sgd_step: NDArrays
    proximal_gradient: NDArrays
    fedprox_step: NDArrays

    def save(self, path: Path) -> None:
        """Write the result as one ``.npz``, tensors keyed by spec name."""
        arrays: dict[str, np.ndarray] = {
            "framework": np.array(self.framework),
            "spec": np.array(_spec_to_json(self.spec)),
            "logits": self.logits,
            "loss": np.array(self.loss, dtype=np.float64),
            "accuracy": np.array(self.accuracy, dtype=np.float64),
        }
        for prefix, tensors in (
            ("sgd", self.sgd_step),
            ("proxgrad", self.proximal_gradient),
            ("fedprox", self.fedprox_step),
        ):
            arrays.update(
                {f"{prefix}/{n}": a for n, a in zip(self.spec.names, tensors, strict=True)}
            )
        _save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> EquivalenceResult:
        """Inverse of :meth:`save`."""
        data = _load_npz(path)
        spec = _spec_from_json(str(data["spec"]))
        return cls(
            framework=str(data["framework"]),
            spec=spec,
            logits=data["logits"],
            loss=float(data["loss"]),
            accuracy=float(data["accuracy"]),
            sgd_step=[data[f"sgd/{n}"] for n in spec.names],
            proximal_gradient=[data[f"proxgrad/{n}"] for n in spec.names],
            fedprox_step=[data[f"fedprox/{n}"] for n in spec.names],
        )


def make_case(
    model_id: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    learning_rate: float = 0.1,
    proximal_mu: float = 0.5,
    anchor_offset: float = 0.01,
) -> EquivalenceCase:
    """A case with seeded parameters and an anchor ``anchor_offset`` away from them.

    Weights are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like a fresh layer's, so
    activations and gradients have realistic magnitudes.
    """
    rng = np.random.default_rng(seed)
    parameters: NDArrays = []
    fan_in = 1
    for tensor in get_model_spec(model_id).tensors:
        if len(tensor.shape) >= 2:
            fan_in = math.prod(tensor.shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        parameters.append(rng.uniform(-bound, bound, size=tensor.shape).astype(np.float32))
    anchor = [
        (p + rng.uniform(-anchor_offset, anchor_offset, size=p.shape)).astype(np.float32)
        for p in parameters
    ]
    return EquivalenceCase(
        model_id=model_id,
        parameters=parameters,
        anchor=anchor,
        images=np.ascontiguousarray(images, dtype=np.uint8),
        labels=np.ascontiguousarray(labels, dtype=np.int64),
        learning_rate=learning_rate,
        proximal_mu=proximal_mu,
    )


def run_worker(compute: Callable[[EquivalenceCase], EquivalenceResult], argv: Sequence[str]) -> int:
    """A worker's command line, ``CASE.npz RESULT.npz``: read, compute, write; returns 0."""
    case_path, result_path = (Path(a) for a in argv)
    compute(EquivalenceCase.load(case_path)).save(result_path)
    return 0


class WorkerError(RuntimeError):
    """An equivalence worker failed; the message holds its output."""


def run_workers(
    workdir: Path,
    case: EquivalenceCase,
    *,
    mxnet: Path | str | None = None,
    timeout: float = 180.0,
) -> dict[str, EquivalenceResult]:
    """Run both frameworks' workers on ``case``, each in its own process and environment.

    Both run at once (one thread each); the result maps framework name to
    what its worker wrote.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    request = workdir / f"case-{case.model_id}.npz"
    case.save(request)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    running: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    for framework in FRAMEWORKS:
        out = workdir / f"result-{case.model_id}-{framework}.npz"
        log = workdir / f"worker-{case.model_id}-{framework}.log"
        with log.open("wb") as fh:
            running[framework] = (
                subprocess.Popen(
                    [
                        _python_of(framework, mxnet),
                        "-m",
                        f"tests.crossframework.worker_{framework}",
                        str(request),
                        str(out),
                    ],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                    env=env,
                ),
                out,
                log,
            )
    results: dict[str, EquivalenceResult] = {}
    failures: list[str] = []
    deadline = time.monotonic() + timeout
    for framework, (proc, out, log) in running.items():
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        if code == 0 and out.is_file():
            results[framework] = EquivalenceResult.load(out)
        else:
            status = "timed out" if code is None else f"exited with {code}"
            failures.append(
                f"--- {framework} worker {status} ---\n{log.read_text(errors='replace')}"
            )
    if failures:
        raise WorkerError("\n".join(failures))
    return results


# --- an independent reference of the spec's conventions -------------------------------


def _dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The spec's dense layer: weights are (out, in), ``y = x @ W.T + b``."""
    out: np.ndarray = x @ weight.T + bias
    return out


def _conv_same(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Stride-1 'same' cross-correlation with an OIHW kernel on NCHW input."""
    kh, kw = weight.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    out: np.ndarray = np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
    biased: np.ndarray = out + bias[None, :, None, None]
    return biased


def _maxpool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    out: np.ndarray = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return out


def _relu(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(x, 0.0)
    return out


def reference_logits(
    model_id: str, parameters: Sequence[np.ndarray], images: np.ndarray, *, flatten: str = "chw"
) -> np.ndarray:
    """Logits computed in float64 NumPy straight from the spec's written conventions.

    Written from :mod:`orchard.models`' docstring, not from either adapter,
    so agreement proves each adapter follows the spec rather than merely the
    other one. ``flatten="hwc"`` flattens the CNN's feature map in the wrong
    (channels-last) order, for showing that a layout slip is caught.
    """
    if flatten not in ("chw", "hwc"):
        raise ValueError(f"flatten must be 'chw' or 'hwc', got {flatten!r}")
    spec = get_model_spec(model_id)
    p = {
        name: np.asarray(a, dtype=np.float64)
        for name, a in zip(spec.names, parameters, strict=True)
    }
    x = images.astype(np.float64)[:, np.newaxis, :, :] / 255.0
    n = x.shape[0]
    if model_id == "mnist-mlp":
        h = x.reshape(n, -1)
        h = _relu(_dense(h, p["fc1.weight"], p["fc1.bias"]))
        h = _relu(_dense(h, p["fc2.weight"], p["fc2.bias"]))
        return _dense(h, p["fc3.weight"], p["fc3.bias"])
    if model_id == "mnist-cnn":
        h = _maxpool2(_relu(_conv_same(x, p["conv1.weight"], p["conv1.bias"])))
        h = _maxpool2(_relu(_conv_same(h, p["conv2.weight"], p["conv2.bias"])))
        h = h.reshape(n, -1) if flatten == "chw" else h.transpose(0, 2, 3, 1).reshape(n, -1)
        h = _relu(_dense(h, p["fc1.weight"], p["fc1.bias"]))
        return _dense(h, p["fc2.weight"], p["fc2.bias"])
    raise ValueError(f"no reference implementation of model id {model_id!r}")


def reference_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy in float64 (log-sum-exp stabilised)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


# --- client processes and a mixed federation ------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClientDataSource:
    """Where a client reads its dataset files.

    ``generated`` names a directory of generated MNIST-format files whose
    checksums are registered in the client process before it starts (real
    files, like Debian's Fashion-MNIST, verify against the official digests
    instead; a generated CIFAR-10 tarball is passed with ``--no-verify``).
    """

    data_dir: Path
    dataset: str = "mnist"
    generated: Path | None = None


def start_framework_client(
    framework: str,
    workdir: Path,
    *,
    port: int,
    federation: str,
    name: str,
    model: str,
    data: ClientDataSource,
    mxnet: Path | str | None = None,
    extra: Sequence[str] = (),
) -> Proc:
    """Start ``python -m orchard_<framework> client`` in that framework's environment.

    With ``data.generated`` the process goes through
    ``tests.crossframework.launch``, which registers the generated files'
    checksums first (the subprocess twin of the client tests' checksum
    injection) and then runs the client's real command line; otherwise it is
    the client's own entry point.
    """
    python = _python_of(framework, mxnet)
    if data.generated is None:
        command = [python, "-m", f"orchard_{framework}"]
    else:
        command = [python, "-m", "tests.crossframework.launch", framework]
        command += ["--generated", str(data.generated), "--variant", data.dataset, "--"]
    args = [
        "client",
        "--server",
        f"127.0.0.1:{port}",
        "--federation",
        federation,
        "--insecure",
        "--name",
        name,
        "--connect-timeout",
        "60",
        "--model",
        model,
        "--dataset",
        data.dataset,
        "--data-dir",
        str(data.data_dir),
        "--device",
        "cpu",
        *extra,
    ]
    return Proc(
        name,
        [*command, *args],
        workdir / f"{name}.log",
        # Server and clients share the cores: one compute thread per client.
        env={"OMP_NUM_THREADS": "1", "ORCHARD_LOG_LEVEL": "INFO"},
    )


def _default_fit() -> dict[str, Scalar]:
    return {"epochs": 1, "batch_size": 32, "learning_rate": 0.05}


@dataclass(frozen=True, kw_only=True)
class MixedFederation:
    """One federation of a PyTorch client and an MXNet client (FedAvg).

    Both clients evaluate every round's global model on the whole official
    test split (``split = "test"``), so their accuracies are comparable.
    """

    federation: str = "mixed"
    model: str = "mnist-mlp"
    num_rounds: int = 5
    seed: int = 0
    fit_config: Mapping[str, Scalar] = field(default_factory=_default_fit)
    evaluate_batch_size: int = 256
    round_timeout: float = 300.0
    heartbeat_timeout: float = 30.0


@dataclass(frozen=True, kw_only=True)
class RoundSummary:
    """One round of a mixed federation, read from the server's history."""

    round: int
    #: The weighted federated evaluation of the round's global model.
    accuracy: float
    loss: float
    #: framework -> (accuracy, loss) of that framework's client on the same model.
    by_framework: Mapping[str, tuple[float, float]]
    train_loss: float | None
    num_examples: int
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class MixedOutcome:
    """Rounds of a finished mixed federation and how long it took."""

    settings: MixedFederation
    rounds: tuple[RoundSummary, ...]
    wall_s: float
    history: Mapping[str, Any]


class FederationRunError(RuntimeError):
    """A mixed federation did not finish; the message holds every process's log tail."""


def _summaries(history: Mapping[str, Any]) -> tuple[RoundSummary, ...]:
    out: list[RoundSummary] = []
    for record in history["rounds"]:
        evaluate = record.get("evaluate") or {}
        participants = evaluate.get("participants") or []
        by_framework = {
            p["framework"]: (float(p["metrics"]["accuracy"]), float(p["loss"]))
            for p in participants
        }
        if evaluate.get("loss") is None or len(by_framework) != len(participants):
            raise FederationRunError(
                f"round {record['round']} has no complete evaluation: {record}"
            )
        train_loss = record["fit"]["metrics"].get("train_loss")
        out.append(
            RoundSummary(
                round=int(record["round"]),
                accuracy=float(evaluate["metrics"]["accuracy"]),
                loss=float(evaluate["loss"]),
                by_framework=by_framework,
                train_loss=None if train_loss is None else float(train_loss),
                num_examples=int(record["fit"]["num_examples"]),
                duration_s=float(record["duration_s"]),
            )
        )
    return tuple(out)


def run_mixed_federation(
    workdir: Path,
    settings: MixedFederation,
    data: ClientDataSource,
    *,
    mxnet: Path | str | None = None,
    timeout: float = 600.0,
) -> MixedOutcome:
    """Run a server, one PyTorch and one MXNet client to the end; summarise the rounds.

    Every process is a real command (``python -m orchard_server``,
    ``python -m orchard_pytorch client``, ``python -m orchard_mxnet client``)
    in its own environment; logs and the server's state go under ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    procs: list[Proc] = []

    def failure(what: str) -> FederationRunError:
        return FederationRunError(what + "\n" + tails(procs))

    try:
        server = start_loopback_server(
            workdir,
            {
                settings.federation: fedavg_federation(
                    settings.model,
                    clients=len(FRAMEWORKS),
                    num_rounds=settings.num_rounds,
                    fit_config=settings.fit_config,
                    evaluate_config={"batch_size": settings.evaluate_batch_size, "split": "test"},
                    seed=settings.seed,
                    round_timeout=settings.round_timeout,
                )
            },
            procs=procs,
            heartbeat_timeout=settings.heartbeat_timeout,
            max_poll_seconds=2.0,
            extra=["--linger", "1"],
        )
        for partition, framework in enumerate(FRAMEWORKS):
            procs.append(
                start_framework_client(
                    framework,
                    workdir,
                    port=server.port,
                    federation=settings.federation,
                    name=framework,
                    model=settings.model,
                    data=data,
                    mxnet=mxnet,
                    # Fixed partitions (not first come, first served) keep runs reproducible.
                    extra=[
                        "--partition-id",
                        str(partition),
                        "--num-partitions",
                        str(len(FRAMEWORKS)),
                        "--seed",
                        str(settings.seed),
                    ],
                )
            )
        deadline = started + timeout
        for proc in (*procs[1:], server.proc):
            try:
                code = proc.popen.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                raise failure(f"{proc.name} still running after {timeout:.0f} s") from None
            if code != 0:
                raise failure(f"{proc.name} exited with {code}")
        wall = time.monotonic() - started
        history = server.history(settings.federation)
        rounds = _summaries(history)
        if len(rounds) != settings.num_rounds:
            raise failure(f"{len(rounds)} of {settings.num_rounds} rounds in the history")
        return MixedOutcome(settings=settings, rounds=rounds, wall_s=wall, history=history)
    finally:
        for proc in procs:
            proc.close()


def accuracy_table(outcome: MixedOutcome) -> str:
    """The rounds as a Markdown table: global accuracy, each client's, losses, time."""
    header = (
        "| round | global accuracy | PyTorch client | MXNet client | test loss "
        "| train loss | round time |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in outcome.rounds:
        torch_acc = r.by_framework.get("pytorch", (math.nan, math.nan))[0]
        mx_acc = r.by_framework.get("mxnet", (math.nan, math.nan))[0]
        train = "-" if r.train_loss is None else f"{r.train_loss:.4f}"
        lines.append(
            f"| {r.round} | {r.accuracy:.4f} | {torch_acc:.4f} | {mx_acc:.4f} | {r.loss:.4f} "
            f"| {train} | {r.duration_s:.1f} s |"
        )
    return "\n".join(lines)
