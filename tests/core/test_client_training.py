"""The framework-neutral half of local training: fit/evaluate configs, seeds, lines, errors."""

from __future__ import annotations

import math

import pytest

from orchard.client.training import (
    DEFAULT_EVAL_BATCH_SIZE,
    OPTIMIZERS,
    ConfigError,
    EpochStats,
    EvalResult,
    TrainConfig,
    TrainingError,
    eval_batch_size,
    eval_split,
    fit_seed,
)

# --- the fit config -------------------------------------------------------------------


def test_config_from_the_servers_fit_config() -> None:
    config = TrainConfig.from_config(
        {
            "epochs": 3,
            "batch_size": 16,
            "learning_rate": 0.05,
            "optimizer": "adam",
            "momentum": 0.5,
            "proximal_mu": 0.01,
            "seed": 42,
        }
    )
    assert config == TrainConfig(
        epochs=3,
        batch_size=16,
        learning_rate=0.05,
        optimizer="adam",
        momentum=0.5,
        proximal_mu=0.01,
        seed=42,
    )


def test_missing_keys_take_the_defaults_and_integers_are_numbers() -> None:
    config = TrainConfig.from_config({"epochs": 3, "batch_size": 16, "learning_rate": 1})
    assert config == TrainConfig(epochs=3, batch_size=16, learning_rate=1.0)
    assert isinstance(config.learning_rate, float)
    assert (config.optimizer, config.momentum, config.proximal_mu, config.seed) == (
        "sgd",
        0.0,
        0.0,
        0,
    )
    assert TrainConfig.from_config({}) == TrainConfig()
    assert OPTIMIZERS == ("sgd", "adam")


def test_any_64_bit_seed_is_accepted() -> None:
    assert TrainConfig.from_config({"seed": -(2**63)}).seed == -(2**63)
    assert TrainConfig.from_config({"seed": 2**63 - 1}).seed == 2**63 - 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"epochs": 0}, "'epochs' must be at least 1"),
        ({"epochs": 1.5}, "'epochs' must be an integer"),
        ({"epochs": True}, "'epochs' must be an integer"),
        ({"batch_size": "32"}, "'batch_size' must be an integer"),
        ({"batch_size": 2.5}, "'batch_size' must be an integer"),
        ({"batch_size": 0}, "'batch_size' must be at least 1"),
        ({"learning_rate": "fast"}, "'learning_rate' must be a number"),
        ({"learning_rate": 0.0}, "'learning_rate' must be > 0"),
        ({"learning_rate": float("nan")}, "'learning_rate' must be finite"),
        ({"learning_rate": float("inf")}, "'learning_rate' must be finite"),
        ({"optimizer": "rmsprop"}, "'optimizer' must be one of sgd, adam, got 'rmsprop'"),
        ({"optimizer": 3}, "'optimizer' must be one of sgd, adam, got 3"),
        ({"momentum": 1.0}, r"'momentum' must be in \[0, 1\)"),
        ({"momentum": -0.1}, r"'momentum' must be in \[0, 1\)"),
        ({"proximal_mu": -0.1}, "'proximal_mu' must be >= 0"),
        ({"proximal_mu": float("nan")}, "'proximal_mu' must be finite"),
        ({"seed": -(2**63) - 1}, "'seed' must be at least"),
        ({"seed": "7"}, "'seed' must be an integer"),
    ],
)
def test_bad_config_values_name_the_key(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_config(config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": 0}, "'epochs' must be at least 1"),
        ({"batch_size": 0}, "'batch_size' must be at least 1"),
        ({"learning_rate": math.inf}, "'learning_rate' must be > 0"),
        ({"learning_rate": math.nan}, "'learning_rate' must be > 0"),
        ({"optimizer": "rmsprop"}, "'optimizer' must be one of sgd, adam"),
        ({"momentum": 1.0}, r"'momentum' must be in \[0, 1\)"),
        ({"proximal_mu": math.nan}, "'proximal_mu' must be >= 0"),
        ({"proximal_mu": -1.0}, "'proximal_mu' must be >= 0"),
    ],
)
def test_direct_construction_is_checked_too(fields: dict[str, object], message: str) -> None:
    """Baselines build configs from their own options, not from a fit config."""
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)  # type: ignore[arg-type]


def test_the_training_line_names_every_hyperparameter() -> None:
    plain = TrainConfig(epochs=2, batch_size=16, learning_rate=0.1)
    assert plain.describe(540) == "training 2 epoch(s) on 540 examples (batch 16, sgd lr 0.1)"
    prox = TrainConfig(optimizer="adam", learning_rate=0.001, proximal_mu=0.01)
    assert prox.describe(90) == (
        "training 1 epoch(s) on 90 examples (batch 32, adam lr 0.001, FedProx mu 0.01)"
    )


# --- seeds, progress lines and errors ---------------------------------------------------


def test_fit_seeds_are_pinned_so_runs_reproduce_across_versions() -> None:
    """Values computed once with the (seed, partition) derivation (NumPy's SeedSequence
    is stable across releases); the MXNet environment's NumPy 1.23 gives the same."""
    assert fit_seed(0, 0) == 6569863346532939966
    assert fit_seed(42, 3) == 8918000285557554252
    assert fit_seed(-1, 1) == 1313972901627904588


def test_fit_seeds_differ_per_task_seed_and_partition_and_wrap_negative_seeds() -> None:
    seeds = {fit_seed(task, pid) for pid in range(3) for task in range(4)}
    assert len(seeds) == 12
    assert all(0 <= s < 2**63 for s in seeds)
    # Negative seeds wrap modulo 2**63: -1 and 2**63 - 1 are the same stream.
    assert fit_seed(-1, 0) == fit_seed(2**63 - 1, 0)


def test_a_repeated_fit_shuffles_as_the_first_did() -> None:
    """No process state: the fit a killed server's successor sends again draws the same."""
    assert fit_seed(123, 2) == fit_seed(123, 2)


def test_the_epoch_line() -> None:
    stats = EpochStats(epoch=1, epochs=2, loss=0.41234, accuracy=0.8712, examples_per_second=5300.4)
    assert stats.describe() == "epoch 1/2: loss 0.412, accuracy 0.871, 5300 examples/s"


def test_the_evaluation_line() -> None:
    result = EvalResult(loss=0.41214, accuracy=0.87, num_examples=100)
    assert result == (0.41214, 0.87, 100)
    assert result.describe("test") == "evaluated on 100 test examples: loss 0.4121, accuracy 0.8700"


def test_training_errors_say_what_to_do() -> None:
    assert str(TrainingError.empty()) == ("the training set is empty: there is nothing to train on")
    diverged = TrainingError.diverged(2, TrainConfig(epochs=3, learning_rate=0.5), math.nan)
    assert str(diverged) == (
        "training diverged in epoch 2/3: the loss is nan; lower the learning rate (now 0.5)"
    )


# --- the evaluate config ------------------------------------------------------------------


def test_evaluate_config_defaults() -> None:
    assert eval_batch_size({}) == DEFAULT_EVAL_BATCH_SIZE == 256
    assert eval_batch_size({"batch_size": 8}) == 8
    assert eval_split({}, "val") == "val"
    assert eval_split({}, "test") == "test"
    assert eval_split({"split": "test"}, "val") == "test"


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "64"])
def test_a_bad_evaluation_batch_size_is_named(value: object) -> None:
    with pytest.raises(
        ConfigError, match=rf"'batch_size' must be a positive integer, got {value!r}"
    ):
        eval_batch_size({"batch_size": value})  # type: ignore[dict-item]


@pytest.mark.parametrize("value", ["train", "validation", 1])
def test_a_bad_evaluation_split_is_named(value: object) -> None:
    with pytest.raises(ConfigError, match=rf"'split' must be 'val' or 'test', got {value!r}"):
        eval_split({"split": value}, "val")  # type: ignore[dict-item]
