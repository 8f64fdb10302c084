"""The reference NumPy client: softmax regression on generated data.

It needs nothing but NumPy, so the tests exercise the whole protocol, the
server and the runtime without any ML framework, and it really learns: the
data are Gaussian blobs around class means shared by all partitions, so the
global model's loss falls round after round.

Run: ``python -m orchard.examples.logreg --server HOST:PORT --federation NAME --insecure``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from orchard.client.cli import (
    add_client_arguments,
    configure_logging,
    log_fields,
    settings_from_args,
)
from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.client.runtime import run_client
from orchard.spec import ModelSpec, TensorSpec
from orchard.typing import Config, Metrics, NDArrays

NUM_FEATURES = 8
NUM_CLASSES = 3


def logreg_spec(model_id: str = "logreg") -> ModelSpec:
    """The tensors: weight (classes, features) and bias (classes)."""
    return ModelSpec(
        model_id,
        (
            TensorSpec("linear.weight", (NUM_CLASSES, NUM_FEATURES)),
            TensorSpec("linear.bias", (NUM_CLASSES,)),
        ),
    )


def make_blobs(n: int, *, seed: int, data_seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled points; class means come from ``data_seed`` so all partitions agree."""
    means = np.random.default_rng(data_seed).normal(0.0, 1.5, size=(NUM_CLASSES, NUM_FEATURES))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, size=n)
    x = means[y] + rng.normal(0.0, 1.0, size=(n, NUM_FEATURES))
    return x.astype(np.float32), y.astype(np.int64)


def _softmax_loss(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean cross-entropy, accuracy and the gradients of w and b."""
    logits = x @ w.T + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    acc = float((p.argmax(axis=1) == y).mean())
    p[np.arange(n), y] -= 1.0
    return loss, acc, (p.T @ x) / n, p.mean(axis=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRegData:
    """One client's train and validation points."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


class LogRegClient(NumPyClient):
    """Softmax regression trained with mini-batch SGD (and FedProx when asked)."""

    def __init__(self, data: LogRegData, *, fit_seconds: float = 0.0) -> None:
        self.data = data
        self.fit_seconds = fit_seconds
        self.params: NDArrays = [
            np.zeros((NUM_CLASSES, NUM_FEATURES), np.float32),
            np.zeros(NUM_CLASSES, np.float32),
        ]

    @classmethod
    def for_partition(cls, partition_id: int, *, n: int = 300, seed: int = 0) -> LogRegClient:
        """A client whose data are determined by its partition id."""
        x, y = make_blobs(n, seed=seed * 1000 + partition_id + 1)
        cut = int(0.9 * n)
        return cls(LogRegData(x_train=x[:cut], y_train=y[:cut], x_val=x[cut:], y_val=y[cut:]))

    def get_parameters(self, config: Config) -> NDArrays:
        return [p.copy() for p in self.params]

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        w = np.array(parameters[0], dtype=np.float64)
        b = np.array(parameters[1], dtype=np.float64)
        w0, b0 = w.copy(), b.copy()
        lr = float(config.get("learning_rate", 0.1))
        epochs = int(config.get("epochs", 1))
        batch = int(config.get("batch_size", 32))
        mu = float(config.get("proximal_mu", 0.0))
        rng = np.random.default_rng(int(config.get("seed", 0)))
        x, y = self.data.x_train, self.data.y_train
        losses, accs = [], []
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), batch):
                idx = order[start : start + batch]
                loss, acc, gw, gb = _softmax_loss(w, b, x[idx], y[idx])
                # FedProx (Li et al. 2020): gradient of mu/2 ||w - w_global||^2.
                w -= lr * (gw + mu * (w - w0))
                b -= lr * (gb + mu * (b - b0))
                losses.append(loss)
                accs.append(acc)
        self.params = [w.astype(np.float32), b.astype(np.float32)]
        if self.fit_seconds:
            time.sleep(self.fit_seconds)
        metrics: Metrics = {
            "train_loss": float(np.mean(losses)),
            "train_accuracy": float(np.mean(accs)),
        }
        return self.get_parameters({}), len(y), metrics

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        w = np.asarray(parameters[0], dtype=np.float64)
        b = np.asarray(parameters[1], dtype=np.float64)
        loss, acc, _, _ = _softmax_loss(w, b, self.data.x_val, self.data.y_val)
        return loss, len(self.data.y_val), {"accuracy": acc}


def main(argv: list[str] | None = None) -> int:
    """Run the reference client against a server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_client_arguments(parser)
    parser.add_argument("--examples", type=int, default=300, help="points per client")
    parser.add_argument(
        "--fail",
        choices=["none", "nan", "shape"],
        default="none",
        help="send a broken update (for tests of the server's validation)",
    )
    parser.add_argument(
        "--fit-seconds",
        type=float,
        default=0.0,
        help="sleep this long in every fit, to stand in for real training time",
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format, fields=log_fields(args))
    settings = settings_from_args(args, framework=f"numpy {np.__version__}")

    def factory(ctx: ClientContext) -> NumPyClient:
        client = LogRegClient.for_partition(ctx.partition_id, n=args.examples, seed=args.seed)
        client.fit_seconds = args.fit_seconds
        return client if args.fail == "none" else _BrokenClient(client, args.fail)

    return run_client(factory, settings, model_spec=logreg_spec())


class _BrokenClient(NumPyClient):
    """Wraps a client to send NaN or wrongly shaped updates (server-validation tests)."""

    def __init__(self, inner: LogRegClient, mode: str) -> None:
        self.inner, self.mode = inner, mode

    def get_parameters(self, config: Config) -> NDArrays:
        return self.inner.get_parameters(config)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        params, n, metrics = self.inner.fit(parameters, config)
        if self.mode == "nan":
            params[0][0, 0] = np.nan
        else:
            params[0] = params[0][:, :-1].copy()
        return params, n, metrics

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        return self.inner.evaluate(parameters, config)


if __name__ == "__main__":
    raise SystemExit(main())
