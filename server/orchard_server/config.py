"""Server configuration: a TOML file, overridden by environment variables and flags.

Precedence (lowest first): built-in defaults, the config file, ``ORCHARD_*``
environment variables (for containers), then ``--set key=value`` flags;
``ORCHARD_FEDERATIONS=a,b`` runs only the federations it names. Every
key is checked: an unknown key or a wrong type is an error naming the key,
because a typo silently ignored would run the wrong experiment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchard.data.client_data import DataError, default_dataset
from orchard.models import get_model_spec
from orchard.spec import ModelSpec, SpecError, TensorSpec
from orchard.typing import Config
from orchard_server.admission import DEFAULT_MAX_CLIENTS
from orchard_server.credentials import Credentials, CredentialsError
from orchard_server.results import DEFAULT_MAX_EXAMPLES, ResultPolicy
from orchard_server.strategy import (
    SelectionError,
    Strategy,
    StrategyError,
    UniformSampling,
    compose_strategy,
)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationConfig:
    """One federation: a named training job with its model, strategy and timing."""

    name: str
    #: False switches the federation off without deleting its table (the
    #: ``ORCHARD_FEDERATIONS`` environment variable chooses by name instead).
    enabled: bool = True
    model: str = ""
    #: The dataset the clients train on, for plot titles and logs; empty means
    #: the model's own (``cifar10`` for ``cifar10-cnn``, ``mnist`` for MNIST models).
    dataset: str = ""
    #: Inline tensors for a model id that is not registered (for example the
    #: reference NumPy client's logistic regression).
    tensors: tuple[TensorSpec, ...] = ()
    num_rounds: int = 3
    #: A named strategy (fedavg, fedavgm, fedadam, ...); see orchard_server.strategy.
    strategy: str = "fedavg"
    #: Replace or restate a piece of the named strategy: "mean", "median",
    #: "trimmed_mean", "krum" ("" keeps the strategy's own).
    aggregator: str = ""
    #: Likewise for the server optimizer: "sgd", "adam", "yogi", "adagrad".
    server_optimizer: str = ""
    #: Hyperparameters of the strategy, or of the pieces in effect when composed;
    #: ``clip_norm`` (update-norm clipping) is accepted by every strategy.
    strategy_options: Config = field(default_factory=dict)
    seed: int = 0
    init_file: Path | None = None
    fraction_fit: float = 1.0
    fraction_evaluate: float = 1.0
    min_fit_clients: int = 2
    min_evaluate_clients: int = 2
    min_available_clients: int = 2
    #: Partitions the clients' data is split into; 0 means min_available_clients.
    num_partitions: int = 0
    #: Seconds a round (fit, then evaluate) may take before missing clients are dropped.
    round_timeout: float = 600.0
    #: Seconds the evaluator client has for a centralized evaluation (at most
    #: round_timeout): an evaluator that stalls costs this, not a whole round.
    evaluator_timeout: float = 120.0
    #: Seconds to wait for min_available_clients before giving up.
    wait_timeout: float = 300.0
    #: How often a round that got too few results is tried again before the
    #: federation fails.
    round_retries: int = 2
    #: Evaluate the global model every N rounds (0: never).
    evaluate_every: int = 1
    #: Seconds between checkpoints while rounds come faster than that (0: after
    #: every round). A round's checkpoint is written once this long has passed
    #: since the previous one was written, without waiting for a later round,
    #: so a crash costs at most the rounds of the last interval (and of the
    #: previous write), which the resumed run redoes to the same result.
    checkpoint_interval: float = 1.0
    auth_token: str = ""
    #: Enrolled clients (JSON of name -> scrypt hash, written by ``orchard-server
    #: enroll``): only they may join, proving their name by client certificate
    #: or by the token NAME:SECRET. Exclusive with auth_token.
    credentials_file: Path | None = None
    #: Most sessions the federation holds at once; a join beyond it is refused
    #: with RESOURCE_EXHAUSTED (a re-join of a connected instance takes no room).
    max_clients: int = DEFAULT_MAX_CLIENTS
    #: Largest example count one result may report (see example_weighting).
    max_examples_per_client: int = DEFAULT_MAX_EXAMPLES
    #: How example counts weigh in averages: "examples" (FedAvg; a count above
    #: max_examples_per_client is refused with INVALID_ARGUMENT), "capped"
    #: (counts clipped to the cap) or "uniform" (every client weighs the same).
    example_weighting: str = "examples"
    fit_config: Config = field(default_factory=dict)
    evaluate_config: Config = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"federation {self.name!r}"
        if not self.model and not self.tensors:
            raise ConfigError(f"{where}: set 'model' (a registered model id) or 'tensors'")
        if self.num_rounds < 1:
            raise ConfigError(f"{where}: num_rounds must be >= 1, got {self.num_rounds}")
        if not 0.0 < self.fraction_fit <= 1.0:
            raise ConfigError(f"{where}: fraction_fit must be in (0, 1], got {self.fraction_fit}")
        if not 0.0 <= self.fraction_evaluate <= 1.0:
            raise ConfigError(
                f"{where}: fraction_evaluate must be in [0, 1] (0: no federated evaluation), "
                f"got {self.fraction_evaluate}"
            )
        for key in ("min_fit_clients", "min_evaluate_clients", "min_available_clients"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}: {key} must be >= 1")
        if self.min_available_clients < self.min_fit_clients:
            raise ConfigError(
                f"{where}: min_available_clients ({self.min_available_clients}) is below "
                f"min_fit_clients ({self.min_fit_clients}); no round could ever start"
            )
        for key in ("round_timeout", "wait_timeout", "evaluator_timeout"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"{where}: {key} must be a finite number of seconds > 0, got {value}"
                )
        if not (math.isfinite(self.checkpoint_interval) and self.checkpoint_interval >= 0):
            raise ConfigError(
                f"{where}: checkpoint_interval must be a finite number of seconds >= 0 "
                f"(0: a checkpoint after every round), got {self.checkpoint_interval}"
            )
        if self.max_clients < self.min_available_clients:
            raise ConfigError(
                f"{where}: max_clients ({self.max_clients}) is below min_available_clients "
                f"({self.min_available_clients}); no round could ever start"
            )
        try:
            ResultPolicy.from_config(self)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if self.credentials_file is not None:
            if self.auth_token:
                raise ConfigError(
                    f"{where}: set auth_token or credentials_file, not both (an enrolled "
                    "client's token is NAME:SECRET)"
                )
            try:
                Credentials.load(self.credentials_file)
            except CredentialsError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if self.init_file is not None and not self.init_file.is_file():
            raise ConfigError(f"{where}: init_file {self.init_file} does not exist")
        try:
            strategy_from_config(self)
        except (StrategyError, SelectionError) as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @property
    def dataset_label(self) -> str:
        """The dataset named in titles: ``dataset``, else the registered model's own, else ''."""
        if self.dataset:
            return self.dataset
        try:
            return default_dataset(self.model)
        except DataError:  # a model without a registered dataset (inline tensors)
            return ""

    @property
    def partitions(self) -> int:
        """Number of data partitions handed out to clients."""
        return self.num_partitions or self.min_available_clients

    def model_spec(self) -> ModelSpec:
        """The spec updates are validated against."""
        if self.tensors:
            return ModelSpec(self.model or self.name, self.tensors)
        try:
            return get_model_spec(self.model)
        except SpecError as exc:
            raise ConfigError(f"federation {self.name!r}: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """The server process: address, security, liveness and where state goes."""

    address: str = "0.0.0.0:8080"
    state_dir: Path = Path("runs/server")
    heartbeat_interval: float = 2.0
    #: A client silent for this long is dropped from the pool and its tasks.
    heartbeat_timeout: float = 10.0
    #: Longest a PullTask call is held open.
    max_poll_seconds: float = 30.0
    insecure: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Mutual TLS: the CA that signs client certificates. When set, every client
    #: must present one; its identity (common name) is the client's name.
    tls_client_ca: Path | None = None
    #: Largest result a client may upload, in bytes (guards memory).
    max_upload_bytes: int = 8 << 30
    #: Results assembled or awaiting their fold at once; bounds server memory to
    #: this many model copies (orchard_server.uploads). Two keep the event loop
    #: reading one while the other is folded: 4 was no faster and used more
    #: memory; 1 holds one model less at 3 to 11% slower rounds (docs/performance.md).
    max_concurrent_uploads: int = 2
    #: Bytes of such results held at once (one is always admitted, however
    #: large): a 1 GiB model's updates come one at a time.
    upload_buffer_bytes: int = 1 << 30
    #: Port of the read-only web view and /metrics (0: off). Served with the
    #: gRPC API's TLS cert and key unless insecure (docs/observability.md).
    web_port: int = 0
    web_host: str = "127.0.0.1"
    #: When set, the web view and /metrics need it (Bearer header or ?token=);
    #: one operator token per server, never a federation's client token.
    web_token: str = ""
    #: When set, every federation's history also goes to TensorBoard event
    #: files under DIR/<federation>.
    tensorboard_dir: Path | None = None
    #: Longest wait for the next message of an upload; a stalled upload is cut
    #: off with DEADLINE_EXCEEDED, freeing its slot.
    stream_idle_timeout: float = 60.0
    federations: tuple[FederationConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.federations:
            raise ConfigError("no federation configured: add a [federations.NAME] table")
        if not any(f.enabled for f in self.federations):
            raise ConfigError(
                "every federation is switched off (enabled = false, or not named in "
                f"ORCHARD_FEDERATIONS); configured: {', '.join(f.name for f in self.federations)}"
            )
        if not self.insecure and (self.tls_cert is None or self.tls_key is None):
            raise ConfigError(
                "TLS needs tls_cert and tls_key (ORCHARD_TLS_CERT, ORCHARD_TLS_KEY); "
                "set insecure = true (ORCHARD_INSECURE=1) to serve plain text on purpose"
            )
        if self.tls_client_ca is not None and self.insecure:
            raise ConfigError("tls_client_ca (mutual TLS) needs TLS: unset insecure")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path is not None and not path.is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        if self.max_concurrent_uploads < 1:
            raise ConfigError(
                f"max_concurrent_uploads must be >= 1, got {self.max_concurrent_uploads}"
            )
        if self.upload_buffer_bytes < 1:
            raise ConfigError(f"upload_buffer_bytes must be >= 1, got {self.upload_buffer_bytes}")
        if self.stream_idle_timeout <= 0:
            raise ConfigError("stream_idle_timeout must be > 0 seconds")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigError("heartbeat_timeout must exceed heartbeat_interval")
        if not 0 <= self.web_port <= 65535:
            raise ConfigError(f"web_port must be in 0..65535 (0: off), got {self.web_port}")
        protected = [f.name for f in self.federations if f.auth_token or f.credentials_file]
        if self.web_port and protected and not self.web_token:
            # The web view and /metrics show every federation; strangers must
            # not learn of those behind a join credential (admission hides them).
            raise ConfigError(
                f"web_port: federations {', '.join(protected)} need a join credential, so "
                "the web view needs a web_token (ORCHARD_WEB_TOKEN) too"
            )


def strategy_from_config(config: FederationConfig) -> Strategy:
    """The strategy a federation's config describes: named, or composed from pieces.

    The selection policy takes the config's sampling keys (``fraction_fit``,
    ``min_fit_clients``, ...); a bad name, piece or option raises
    :class:`~orchard_server.strategy.StrategyError` naming it.
    """
    return compose_strategy(
        config.strategy,
        config.strategy_options,
        aggregator=config.aggregator,
        server_optimizer=config.server_optimizer,
        select=UniformSampling(
            fraction_fit=config.fraction_fit,
            min_fit_clients=config.min_fit_clients,
            fraction_evaluate=config.fraction_evaluate,
            min_evaluate_clients=config.min_evaluate_clients,
            min_available_clients=config.min_available_clients,
        ),
    )


# --- loading ----------------------------------------------------------------------

_ENV_SERVER_KEYS = {
    "ORCHARD_ADDRESS": "address",
    "ORCHARD_STATE_DIR": "state_dir",
    "ORCHARD_INSECURE": "insecure",
    "ORCHARD_TLS_CERT": "tls_cert",
    "ORCHARD_TLS_KEY": "tls_key",
    "ORCHARD_TLS_CLIENT_CA": "tls_client_ca",
    "ORCHARD_HEARTBEAT_TIMEOUT": "heartbeat_timeout",
    "ORCHARD_WEB_PORT": "web_port",
    "ORCHARD_WEB_HOST": "web_host",
    "ORCHARD_WEB_TOKEN": "web_token",
    "ORCHARD_TENSORBOARD_DIR": "tensorboard_dir",
}


#: Comma-separated names of the federations to run; the others are switched
#: off (it overrides each table's ``enabled``).
FEDERATIONS_ENV_VAR = "ORCHARD_FEDERATIONS"


def _parse_value(text: str) -> Any:
    """A TOML scalar if it parses as one (1, 0.5, true, "x"), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


#: Keys whose values are text whatever they look like: ``--set auth_token=123``
#: is the token "123", not a number to refuse.
_TEXT_KEYS = frozenset(
    f.name
    for cls in (FederationConfig, ServerConfig)
    for f in dataclasses.fields(cls)
    if f.type in ("str", str)
)
#: Keys never echoed in an error message.
_SECRET_KEYS = frozenset({"auth_token", "web_token"})


def _override_value(key: str, text: str) -> Any:
    """The value of ``--set key=text``: text for text keys (quotes optional), else TOML."""
    if key.rsplit(".", 1)[-1] in _TEXT_KEYS:
        parsed = _parse_value(text)
        return parsed if isinstance(parsed, str) else text
    return _parse_value(text)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a table")
        node = child
    node[keys[-1]] = value


def _coerce(cls: type, where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check keys and types of ``raw`` against the dataclass ``cls``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields or key in ("federations", "name"):
            known = ", ".join(sorted(k for k in fields if k not in ("federations", "name")))
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
        default = fields[key].default
        kind = type(default) if default is not dataclasses.MISSING else None
        if key in (
            "state_dir",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "init_file",
            "tensorboard_dir",
            "credentials_file",
        ):
            out[key] = Path(value)
        elif key == "tensors":
            out[key] = _tensors(where, value)
        elif isinstance(default, bool):
            out[key] = _bool(where, key, value)
        elif (
            kind in (int, float) and isinstance(value, int | float) and not isinstance(value, bool)
        ):
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{where}: {key} must be an integer, got {value}")
            out[key] = kind(value)
        elif kind is str and isinstance(value, str):
            out[key] = value
        elif fields[key].default_factory is not dataclasses.MISSING:  # a config table
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a table")
            out[key] = _scalars(f"{where}.{key}", value)
        else:
            shown = "(hidden)" if key in _SECRET_KEYS else repr(value)
            raise ConfigError(
                f"{where}: {key} must be {kind.__name__ if kind else 'set'}, got {shown}"
            )
    return out


def _bool(where: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    }:
        return value.lower() in {"1", "true", "yes", "on"}
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")


def _scalars(where: str, table: Mapping[str, Any]) -> Config:
    out: Config = {}
    for key, value in table.items():
        if not isinstance(value, bool | int | float | str):
            raise ConfigError(f"{where}.{key}: must be a number, boolean or string")
        out[key] = value
    return out


def _tensors(where: str, value: Any) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: tensors must be a list of {{name, shape, dtype}} tables")
    try:
        return tuple(
            TensorSpec(name=t["name"], shape=tuple(t["shape"]), dtype=t.get("dtype", "float32"))
            for t in value
        )
    except (KeyError, TypeError, SpecError) as exc:
        raise ConfigError(f"{where}: bad tensor entry: {exc}") from None


def load_config(
    path: Path | None,
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Read, override and validate the configuration."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    return config_from_data(data, overrides=overrides, environ=environ)


def config_from_data(
    data: Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Override and validate a parsed TOML document (the simulation reads its own file)."""
    env = os.environ if environ is None else environ
    server = dict(data.get("server", {}))
    for var, key in _ENV_SERVER_KEYS.items():
        if env.get(var):
            server[key] = _parse_value(env[var])
    federations: dict[str, Any] = {k: dict(v) for k, v in data.get("federations", {}).items()}
    extra = [s for s in env.get("ORCHARD_SET", "").split(";") if s.strip()]
    for item in [*extra, *overrides]:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        root = {"server": server, "federations": federations}
        _set_path(root, key.strip(), _override_value(key.strip(), value.strip()))
    unknown = set(data) - {"server", "federations"}
    if unknown:
        raise ConfigError(
            f"unknown top-level table(s) {sorted(unknown)}; use [server] and [federations.NAME]"
        )
    feds = tuple(
        FederationConfig(name=name, **_coerce(FederationConfig, f"federations.{name}", raw))
        for name, raw in federations.items()
    )
    chosen = env.get(FEDERATIONS_ENV_VAR, "").strip()
    if chosen:
        names = {n.strip() for n in chosen.split(",") if n.strip()}
        unknown = names - {f.name for f in feds}
        if unknown:
            raise ConfigError(
                f"{FEDERATIONS_ENV_VAR}={chosen}: no federation named {', '.join(sorted(unknown))} "
                f"(configured: {', '.join(f.name for f in feds)})"
            )
        feds = tuple(dataclasses.replace(f, enabled=f.name in names) for f in feds)
    return ServerConfig(**_coerce(ServerConfig, "server", server), federations=feds)
