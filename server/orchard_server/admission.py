"""Who may join which federation: one decision for every kind of client.

The gRPC servicer and the in-process pool both hand a :class:`JoinInfo` to
:meth:`Admission.admit`, so a simulated client is admitted, or refused with
the same reason and words, exactly as a deployed one. The checks run in a
fixed order, each naming what is wrong:

1. the API version: malformed (not ``MAJOR.MINOR``) is invalid; a different
   major version, or a minor version below :data:`MIN_API_VERSION` (clients
   that cannot carry a session secret), is refused first, whatever else the
   request holds, so an old or new client learns the real problem;
2. the join's own fields (instance id, a fixed partition with its count);
3. the federation exists (the refusal lists the hosted ones that need no
   token: a stranger learns nothing of the protected ones);
4. credentials: the federation's shared token (compared in constant time),
   or, for a federation with enrolled clients (:mod:`.credentials`), an
   enrolled name proven by a client certificate (mutual TLS) or by the token
   ``NAME:SECRET``; a proven name (or a certificate's identity) becomes the
   client's public name;
5. the model spec (the first differing tensor is named);
6. ownership: an ``instance_id`` held by a connected session is taken over
   only by a join carrying that session's secret, or proving the same
   enrolled identity (a restarted client); a stranger cannot evict a client
   by reusing its id;
7. room: at most ``max_clients`` sessions per federation;
8. role and partition: a trainer keeps the partition its instance had, or is
   assigned the least used one; a fixed partition is recorded.

A refusal is an :class:`AdmissionError` carrying a :class:`Refusal` kind;
the transport maps the kind to its own status (gRPC codes in the servicer).
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from orchard import serde
from orchard.messages import API_VERSION, MIN_API_VERSION, JoinInfo, Role
from orchard.spec import ModelSpec
from orchard_server.credentials import Credentials
from orchard_server.partitions import PartitionRegistry

if TYPE_CHECKING:
    from orchard_server.config import FederationConfig
    from orchard_server.pool import ClientInfo

#: The API major version this server serves, and its oldest admitted minor.
SUPPORTED_MAJOR = int(API_VERSION.split(".")[0])
MIN_MINOR = int(MIN_API_VERSION.split(".")[1])
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")

#: Default room of a federation: far above any real deployment, low enough that
#: a runaway script opening sessions in a loop is stopped.
DEFAULT_MAX_CLIENTS = 1000


class Refusal(enum.Enum):
    """Why a join was refused (the transport picks the status code)."""

    UNSUPPORTED_VERSION = "unsupported version"
    INVALID = "invalid join"
    UNKNOWN_FEDERATION = "unknown federation"
    UNAUTHENTICATED = "unauthenticated"
    SPEC_MISMATCH = "model spec mismatch"
    INSTANCE_TAKEN = "instance held by another session"
    FULL = "federation full"


class AdmissionError(Exception):
    """A join was refused; ``kind`` says which rule, the message says why in words."""

    def __init__(self, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionPolicy:
    """The joining rules of one federation, and the partitions it has handed out."""

    federation: str
    spec: ModelSpec
    partitions: PartitionRegistry
    auth_token: str = ""
    #: Enrolled clients (hashed secrets); None admits any client with the token.
    credentials: Credentials | None = None
    max_clients: int = DEFAULT_MAX_CLIENTS

    def __post_init__(self) -> None:
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {self.max_clients}")

    @classmethod
    def from_config(cls, config: FederationConfig) -> AdmissionPolicy:
        """The policy a federation's configuration describes (with an empty registry)."""
        return cls(
            federation=config.name,
            spec=config.model_spec(),
            # Twice the room: a disconnected client keeps its partition for a
            # while, and the registry (and the checkpoint) stay bounded.
            partitions=PartitionRegistry(
                config.partitions, federation=config.name, max_entries=2 * config.max_clients
            ),
            auth_token=config.auth_token,
            credentials=(
                Credentials.load(config.credentials_file) if config.credentials_file else None
            ),
            max_clients=config.max_clients,
        )

    @property
    def protected(self) -> bool:
        """Whether joining needs a credential (then the federation is not named to strangers)."""
        return bool(self.auth_token) or self.credentials is not None

    @property
    def num_partitions(self) -> int:
        """Partitions the federation's data is split into (0: clients fix their own)."""
        return self.partitions.num_partitions


@dataclass(frozen=True, slots=True, kw_only=True)
class Admitted:
    """A successful join: where the client belongs and what data it trains on."""

    federation: str
    role: Role
    #: The client's partition, and the count it is a partition of (the
    #: client's own count when it fixed its partition, else the federation's).
    partition_id: int
    num_partitions: int
    spec: ModelSpec
    #: The client's proven identity (an enrolled name or its certificate's), else "".
    identity: str = ""


class Roster(Protocol):
    """A federation's rules and its connected clients: what a pool offers admission."""

    @property
    def policy(self) -> AdmissionPolicy:
        """The federation's joining rules."""
        ...

    def members(self) -> list[ClientInfo]:
        """Every connected client, of every role."""
        ...

    def may_take_over(self, instance_id: str, secret: str, identity: str = "") -> bool:
        """Whether a join carrying ``secret`` (and proving ``identity``) may use
        ``instance_id``: True when no connected session holds it, or ``secret``
        is that session's, or the session has the same non-empty identity."""
        ...


class Admission:
    """Decides every join for the federations a process hosts."""

    def __init__(self, rosters: Iterable[Roster]) -> None:
        self._rosters = {r.policy.federation: r for r in rosters}

    @property
    def federations(self) -> list[str]:
        """Names of the hosted federations, sorted."""
        return sorted(self._rosters)

    def admit(self, info: JoinInfo) -> Admitted:
        """Admit ``info`` or raise :class:`AdmissionError` naming the first broken rule.

        On success a trainer's partition is recorded in the federation's
        registry; the caller opens the session at once (no await between), so
        the room check and the partition counts stay true.
        """
        check_version(info.api_version)
        _check_fields(info)
        roster = self._rosters.get(info.federation)
        if roster is None:
            # Federations behind a token are not named to someone who did not name them.
            open_ones = [n for n in self.federations if not self._rosters[n].policy.protected]
            raise AdmissionError(
                Refusal.UNKNOWN_FEDERATION,
                f"no federation named {info.federation!r} (open federations on this server: "
                f"{', '.join(open_ones) or 'none'})",
            )
        policy = roster.policy
        identity = _identify(policy, info)
        if info.model_spec is not None:
            difference = policy.spec.first_difference(info.model_spec)
            if difference is not None:
                raise AdmissionError(
                    Refusal.SPEC_MISMATCH,
                    f"model spec mismatch with federation {policy.federation!r} "
                    f"(model {policy.spec.model_id!r}): {difference}",
                )
        if not roster.may_take_over(info.instance_id, info.session_secret, identity):
            raise AdmissionError(
                Refusal.INSTANCE_TAKEN,
                f"instance_id {info.instance_id!r} belongs to a connected session of federation "
                f"{policy.federation!r}; only a join carrying that session's secret "
                f"(metadata {serde.SESSION_SECRET_METADATA!r}) takes it over",
            )
        members = roster.members()
        # A re-join replaces the instance's old session, so it takes no new room.
        others = [m for m in members if m.instance_id != info.instance_id]
        if len(others) >= policy.max_clients:
            raise AdmissionError(
                Refusal.FULL,
                f"federation {policy.federation!r} is full: {len(others)} of its "
                f"max_clients={policy.max_clients} clients are connected",
            )
        partition, count = _partition(policy, info, others)
        return Admitted(
            federation=policy.federation,
            role=info.role,
            partition_id=partition,
            num_partitions=count,
            spec=policy.spec,
            identity=identity,
        )


def _identify(policy: AdmissionPolicy, info: JoinInfo) -> str:
    """The identity ``info`` proves to ``policy`` ("" for an anonymous client of an
    open or shared-token federation); raise UNAUTHENTICATED when it proves too little."""
    if policy.credentials is not None:
        if info.peer_identity:
            if policy.credentials.enrolled(info.peer_identity):
                return info.peer_identity
            raise AdmissionError(
                Refusal.UNAUTHENTICATED,
                f"federation {policy.federation!r} admits enrolled clients only, and the "
                f"client certificate's identity {info.peer_identity!r} is not enrolled",
            )
        name = policy.credentials.verify_token(info.auth_token)
        if name is None:
            raise AdmissionError(
                Refusal.UNAUTHENTICATED,
                f"federation {policy.federation!r} admits enrolled clients only: give the "
                "token NAME:SECRET from orchard-server enroll, or a client certificate",
            )
        return name
    if policy.auth_token and not hmac.compare_digest(
        info.auth_token.encode(), policy.auth_token.encode()
    ):
        raise AdmissionError(
            Refusal.UNAUTHENTICATED,
            f"federation {policy.federation!r} requires a valid auth token",
        )
    return info.peer_identity


def check_version(api_version: str) -> None:
    """Raise :class:`AdmissionError` unless ``api_version`` is a served "MAJOR.MINOR".

    Malformed versions ("", "1", "1.x", "1.0.7") are INVALID; another major
    version, or a minor below :data:`MIN_API_VERSION`, is UNSUPPORTED_VERSION.
    """
    match = _VERSION.fullmatch(api_version)
    if match is None:
        raise AdmissionError(
            Refusal.INVALID,
            f'join: api_version {api_version[:40] or "(none)"!r} is not "MAJOR.MINOR" '
            f"(this server speaks {API_VERSION})",
        )
    major, minor = int(match[1]), int(match[2])
    if major != SUPPORTED_MAJOR:
        raise AdmissionError(
            Refusal.UNSUPPORTED_VERSION,
            f"API version {api_version!r} is not supported; this server "
            f"speaks {API_VERSION} (orchard.v1); upgrade or downgrade the client",
        )
    if minor < MIN_MINOR:
        raise AdmissionError(
            Refusal.UNSUPPORTED_VERSION,
            f"API version {api_version!r} is too old: this server speaks {API_VERSION} and "
            f"admits {MIN_API_VERSION} or later (sessions carry a secret since "
            f"{MIN_API_VERSION}); upgrade the client",
        )


def _check_fields(info: JoinInfo) -> None:
    """The join's own fields, whatever the federation."""
    if not info.federation:
        raise AdmissionError(Refusal.INVALID, "join: federation is empty")
    if not info.instance_id:
        raise AdmissionError(Refusal.INVALID, "join: instance_id is empty")
    fixed = info.partition_id is not None
    if fixed != (info.num_partitions is not None):
        raise AdmissionError(Refusal.INVALID, "join: set partition_id and num_partitions together")
    if (
        info.partition_id is not None
        and info.num_partitions is not None
        and not 0 <= info.partition_id < info.num_partitions
    ):
        raise AdmissionError(
            Refusal.INVALID,
            f"join: partition_id {info.partition_id} is outside 0..{info.num_partitions - 1}",
        )


def _partition(
    policy: AdmissionPolicy, info: JoinInfo, members: Sequence[ClientInfo]
) -> tuple[int, int]:
    """(partition, count) of a joining client, recorded for trainers.

    An evaluator holds the central test set, so it takes no partition's share:
    it gets its fixed partition (or its old one, or 0) and is not recorded.
    """
    registry = policy.partitions
    if info.partition_id is not None and info.num_partitions is not None:
        if info.role is Role.TRAINER:
            registry.record(info.instance_id, info.partition_id, info.num_partitions, members)
        return info.partition_id, info.num_partitions
    if info.role is not Role.TRAINER:
        return registry.get(info.instance_id) or 0, policy.num_partitions
    try:
        return registry.assign(info.instance_id, members), policy.num_partitions
    except ValueError as exc:
        raise AdmissionError(Refusal.INVALID, str(exc)) from None
