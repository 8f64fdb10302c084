"""Domain values of the client-server conversation, free of protobuf.

The server's round loop, the client pool and the client runtime speak these;
:mod:`orchard.serde` alone turns them into ``orchard.v1`` messages and back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from orchard.spec import ModelSpec
from orchard.typing import Config, Metrics, NDArrays

#: The API version this code speaks, "MAJOR.MINOR". Minor versions add
#: optional fields and capabilities; a different major version is refused.
#: 1.2 added session secrets, which every call after Join must carry, so a
#: server refuses the clients of 1.0 and 1.1 (their session id alone would be
#: a bearer credential).
API_VERSION = "1.2"
#: The oldest minor version of the served major version a server admits.
MIN_API_VERSION = "1.2"


class TaskType(enum.Enum):
    """Kind of work the server asks of a client."""

    FIT = "fit"
    EVALUATE = "evaluate"


class Role(enum.Enum):
    """What a client is in a federation."""

    TRAINER = "trainer"
    EVALUATOR = "evaluator"


class FederationState(enum.Enum):
    """Life cycle of a federation."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinInfo:
    """What a client says about itself when it joins."""

    api_version: str
    federation: str
    instance_id: str
    display_name: str = ""
    framework: str = ""
    capabilities: tuple[str, ...] = ()
    role: Role = Role.TRAINER
    model_spec: ModelSpec | None = None
    auth_token: str = ""
    #: A partition fixed by the client's user (with its count), else None.
    partition_id: int | None = None
    num_partitions: int | None = None
    #: The secret of this instance's connected session, if the client has one
    #: (it travels as call metadata, not in the message): a join that takes
    #: over a connected instance must prove it owns it.
    session_secret: str = field(default="", repr=False)
    #: The identity of a verified client certificate (mutual TLS), else "".
    peer_identity: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """The server's answer to a successful join."""

    client_id: str
    api_version: str
    heartbeat_interval: float
    model_spec: ModelSpec
    partition_id: int
    num_partitions: int
    state: FederationState
    #: The session's credential: every later call carries it (as metadata).
    secret: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationStatus:
    """What a heartbeat tells a client about its federation."""

    state: FederationState
    rounds_completed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskPoll:
    """A session's request for its next task, held open at most ``wait_seconds``."""

    client_id: str
    wait_seconds: float
    max_chunk_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveNotice:
    """A session ends, and why (for logs).

    ``fatal`` marks a client that can never take part (its dataset cannot be
    loaded, say): the federation then fails at once with ``reason`` instead
    of waiting for a client that is not coming.
    """

    client_id: str
    reason: str = ""
    fatal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One instruction: train or evaluate these parameters with this config."""

    task_id: str
    type: TaskType
    round: int
    config: Config
    timeout: float
    names: tuple[str, ...]
    parameters: NDArrays


@dataclass(frozen=True, slots=True, kw_only=True)
class Idle:
    """No task arrived within the long-poll wait."""

    state: FederationState


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The federation has ended."""

    state: FederationState
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultRef:
    """Which session and task an incoming result answers (read before its bytes)."""

    client_id: str
    task_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """A client's answer to a task. ``error`` is set when the task failed."""

    client_id: str
    task_id: str
    num_examples: int = 0
    #: The local loss: required of evaluations; None for a fit whose framework
    #: reported none (it is then left out of averages, never counted as 0).
    loss: float | None = None
    metrics: Metrics = field(default_factory=dict)
    names: tuple[str, ...] = ()
    parameters: NDArrays = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return not self.error


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSummary:
    """A connected client as the status call and the web view show it.

    It carries no session id: a session id authenticates the session's calls,
    and status and the web view are for onlookers.
    """

    display_name: str
    framework: str
    role: Role
    partition_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationSummary:
    """One federation at a glance: what ``orchard-server status`` prints."""

    name: str
    model_id: str
    strategy: str
    state: FederationState
    #: Why it finished or failed ("" while it runs).
    reason: str
    rounds_completed: int
    num_rounds: int
    #: The round in progress (0 before the first), and its phase ("" between phases).
    round: int
    phase: str
    clients: tuple[ClientSummary, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskProgress:
    """How far a client is in a long task, as its heartbeats report it."""

    #: Fraction of the task done, 0..1.
    fraction: float
    #: The epoch being trained, 1-based; 0 when unknown.
    epoch: int = 0
    #: Training throughput so far; 0 when unknown.
    examples_per_second: float = 0.0
