"""Server configuration: file, environment and flag precedence; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchard_server.config import ConfigError, load_config, strategy_from_config
from orchard_server.strategy import UniformSampling

BASE = """
[server]
address = "127.0.0.1:9000"
insecure = true

[federations.mnist]
model = "mnist-mlp"
num_rounds = 4
fit_config = { epochs = 2, learning_rate = 0.05 }

[federations.cifar]
model = "cifar10-cnn"
strategy = "fedadam"
strategy_options = { eta = 0.01 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_file_env_and_flags_in_order(tmp_path: Path) -> None:
    env = {"ORCHARD_STATE_DIR": "/tmp/x", "ORCHARD_SET": "federations.mnist.num_rounds=6"}
    config = load_config(
        write(tmp_path, BASE),
        environ=env,
        overrides=["federations.mnist.num_rounds=7", 'server.address="[::]:1"'],
    )
    assert config.address == "[::]:1"
    assert str(config.state_dir) == "/tmp/x"
    mnist, cifar = config.federations
    assert (mnist.name, mnist.num_rounds, mnist.fit_config) == (
        "mnist",
        7,
        {"epochs": 2, "learning_rate": 0.05},
    )
    assert cifar.strategy_options == {"eta": 0.01}
    assert mnist.model_spec().model_id == "mnist-mlp"
    assert (mnist.checkpoint_interval, cifar.checkpoint_interval) == (1.0, 1.0)  # the default


def test_checkpoint_interval_zero_means_every_round(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, BASE), environ={}, overrides=["federations.mnist.checkpoint_interval=0"]
    )
    assert config.federations[0].checkpoint_interval == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE.replace("num_rounds = 4", "num_round = 4"), "unknown key 'num_round'"),
        (BASE.replace("num_rounds = 4", 'num_rounds = "four"'), "num_rounds must be int"),
        (
            BASE.replace("num_rounds = 4", "fraction_fit = 1.5"),
            "fraction_fit must be in \\(0, 1\\]",
        ),
        (BASE.replace('model = "mnist-mlp"', 'model = "resnet"'), "unknown model id 'resnet'"),
        (BASE.replace("insecure = true", ""), "TLS needs tls_cert and tls_key"),
        (BASE.replace("num_rounds = 4", "min_available_clients = 1"), "no round could ever start"),
        ("[server]\ninsecure = true\n", "no federation configured"),
        (
            BASE.replace("num_rounds = 4", "fraction_evaluate = -0.5"),
            "fraction_evaluate must be in \\[0, 1\\] \\(0: no federated evaluation\\)",
        ),
        (
            BASE.replace("insecure = true", "insecure = true\nmax_concurrent_uploads = 0"),
            "max_concurrent_uploads must be >= 1, got 0",
        ),
        (
            BASE.replace("insecure = true", "insecure = true\nupload_buffer_bytes = -1"),
            "upload_buffer_bytes must be >= 1, got -1",
        ),
        *[
            (BASE.replace("num_rounds = 4", f"{key} = {value}"), f"{key} must be {rule}, got {got}")
            for key, value, rule, got in (
                ("checkpoint_interval", "-1", "a finite number of seconds >= 0 .*", "-1.0"),
                ("checkpoint_interval", "nan", "a finite number of seconds >= 0 .*", "nan"),
                ("round_timeout", "nan", "a finite number of seconds > 0", "nan"),
                ("wait_timeout", "inf", "a finite number of seconds > 0", "inf"),
            )
        ],
        ("[servr]\n", "unknown top-level"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={}).federations[0].model_spec()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


TWO = """
[server]
insecure = true
[federations.a]
model = "mnist-mlp"
[federations.b]
model = "mnist-mlp"
dataset = "fashion-mnist"
enabled = false
"""


def test_federations_are_switched_off_by_key_or_by_environment(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    config = load_config(path, environ={})
    assert [(f.name, f.enabled) for f in config.federations] == [("a", True), ("b", False)]
    assert config.federations[0].dataset_label == "mnist"
    assert config.federations[1].dataset_label == "fashion-mnist"
    chosen = load_config(path, environ={"ORCHARD_FEDERATIONS": "b"})
    assert [(f.name, f.enabled) for f in chosen.federations] == [("a", False), ("b", True)]
    with pytest.raises(ConfigError, match="no federation named c"):
        load_config(path, environ={"ORCHARD_FEDERATIONS": "b,c"})
    with pytest.raises(ConfigError, match="every federation is switched off"):
        load_config(path, environ={}, overrides=["federations.a.enabled=false"])


def test_a_strategy_is_composed_from_pieces_in_the_federation_table(tmp_path: Path) -> None:
    text = BASE.replace(
        "num_rounds = 4",
        'num_rounds = 4\naggregator = "median"\nserver_optimizer = "sgd"\n'
        "strategy_options = { momentum = 0.9 }\nmin_fit_clients = 3\nmin_available_clients = 4",
    )
    mnist = load_config(write(tmp_path, text), environ={}).federations[0]
    strategy = strategy_from_config(mnist)
    assert (strategy.name, strategy.hyperparameters) == (
        "median+sgd",
        {"server_lr": 1.0, "momentum": 0.9},
    )
    assert strategy.select == UniformSampling(min_fit_clients=3, min_available_clients=4)
    # the named strategy of the other federation is untouched
    cifar = load_config(write(tmp_path, text), environ={}).federations[1]
    assert strategy_from_config(cifar).name == "fedadam"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'aggregator = "bulyan"',
            "federation 'mnist': unknown aggregator 'bulyan'; valid aggregators",
        ),
        (
            'strategy = "fedadam"\nserver_optimizer = "sgd"',
            "federation 'mnist': strategy 'fedadam' is defined by its server_optimizer 'adam'",
        ),
        (
            'aggregator = "median"\nstrategy_options = { eta = 0.1 }',
            "federation 'mnist': unknown option 'eta' for strategy 'fedavg' with aggregator "
            "'median' and server_optimizer 'sgd'",
        ),
        ('strategy = "fedsgd"', "federation 'mnist': unknown strategy 'fedsgd'"),
        ("aggregator = 3", "aggregator must be str"),
    ],
)
def test_strategy_errors_name_the_federation_and_the_combination(
    tmp_path: Path, line: str, message: str
) -> None:
    text = BASE.replace("num_rounds = 4", f"num_rounds = 4\n{line}")
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_observability_keys_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), environ={})
    assert (config.web_port, config.web_host, config.web_token) == (0, "127.0.0.1", "")
    assert config.tensorboard_dir is None
    env = {
        "ORCHARD_WEB_PORT": "9090",
        "ORCHARD_WEB_HOST": "0.0.0.0",
        "ORCHARD_WEB_TOKEN": "watch",
        "ORCHARD_TENSORBOARD_DIR": str(tmp_path / "tb"),
    }
    config = load_config(write(tmp_path, BASE), environ=env)
    assert (config.web_port, config.web_host, config.web_token) == (9090, "0.0.0.0", "watch")
    assert config.tensorboard_dir == tmp_path / "tb"
    with pytest.raises(ConfigError, match=r"web_port must be in 0\.\.65535"):
        load_config(write(tmp_path, BASE), overrides=["server.web_port=70000"], environ={})


def test_a_web_view_over_token_protected_federations_needs_a_web_token(tmp_path: Path) -> None:
    protected = ["federations.mnist.auth_token=s3cret", "server.web_port=9090"]
    with pytest.raises(ConfigError, match=r"mnist need a join credential.*web_token") as err:
        load_config(write(tmp_path, BASE), overrides=protected, environ={})
    assert "s3cret" not in str(err.value)
    config = load_config(
        write(tmp_path, BASE), overrides=[*protected, "server.web_token=watch"], environ={}
    )
    assert (config.web_port, config.web_token) == (9090, "watch")


def test_a_numeric_looking_token_is_text_and_never_printed(tmp_path: Path) -> None:
    base = ["server.insecure=true", "federations.f.model=logreg"]
    for text in ("12345", "1e3", "true", '"12345"'):
        config = load_config(None, overrides=[*base, f"federations.f.auth_token={text}"])
        assert config.federations[0].auth_token == text.strip('"')
    # A file's wrong type is refused naming the key, never echoing the secret.
    path = write(tmp_path, "[federations.f]\nmodel = 'logreg'\nauth_token = 987654321\n")
    with pytest.raises(ConfigError, match="auth_token must be str, got \\(hidden\\)") as err:
        load_config(path, overrides=["server.insecure=true"])
    assert "987654321" not in str(err.value)
