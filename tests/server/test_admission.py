"""Admission: every rule, in order, for any kind of client."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from orchard.examples.logreg import logreg_spec
from orchard.messages import API_VERSION, JoinInfo, Role
from orchard.spec import ModelSpec, TensorSpec
from orchard_server.admission import (
    DEFAULT_MAX_CLIENTS,
    Admission,
    AdmissionError,
    AdmissionPolicy,
    Refusal,
)
from orchard_server.config import ConfigError, FederationConfig
from orchard_server.partitions import PartitionRegistry
from orchard_server.pool import ClientInfo

SPEC = logreg_spec()


class Roster:
    """A federation's policy and a list standing for its connected clients."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self._policy = policy
        self.connected: list[ClientInfo] = []

    @property
    def policy(self) -> AdmissionPolicy:
        return self._policy

    def members(self) -> list[ClientInfo]:
        return list(self.connected)

    def may_take_over(self, instance_id: str, secret: str, identity: str = "") -> bool:
        held = [c for c in self.connected if c.instance_id == instance_id]
        return all(
            secret == f"secret-of-{c.client_id}" or (identity and c.identity == identity)
            for c in held
        )


def make(**policy: Any) -> tuple[Admission, Roster]:
    base: dict[str, Any] = {
        "federation": "blobs",
        "spec": SPEC,
        "partitions": PartitionRegistry(2, federation="blobs"),
        "auth_token": "s3cret",
        "max_clients": 2,
    }
    base.update(policy)
    roster = Roster(AdmissionPolicy(**base))
    other = Roster(AdmissionPolicy(federation="mnist", spec=SPEC, partitions=PartitionRegistry(1)))
    return Admission([roster, other]), roster


def info(**overrides: Any) -> JoinInfo:
    base: dict[str, Any] = {
        "api_version": API_VERSION,
        "federation": "blobs",
        "instance_id": "i-1",
        "model_spec": SPEC,
        "auth_token": "s3cret",
    }
    base.update(overrides)
    return JoinInfo(**base)


def connect(roster: Roster, join: JoinInfo, partition: int) -> None:
    roster.connected.append(
        ClientInfo(
            client_id=f"c-{join.instance_id}",
            display_name=join.instance_id,
            framework="",
            role=join.role,
            partition_id=partition,
            instance_id=join.instance_id,
        )
    )


def refusal(admission: Admission, join: JoinInfo) -> AdmissionError:
    with pytest.raises(AdmissionError) as err:
        admission.admit(join)
    return err.value


def test_version_first_whatever_else_is_wrong() -> None:
    admission, _ = make()
    for version in ("2.0", "0.9", "10.1"):
        err = refusal(admission, info(api_version=version, federation="nope", auth_token=""))
        assert err.kind is Refusal.UNSUPPORTED_VERSION
        assert f"this server speaks {API_VERSION} (orchard.v1)" in err.message
    # Clients older than session secrets are refused: their id would be a bearer credential.
    for version in ("1.0", "1.1"):
        err = refusal(admission, info(api_version=version, federation="nope", auth_token=""))
        assert err.kind is Refusal.UNSUPPORTED_VERSION
        assert "too old" in err.message and "1.2 or later" in err.message
    # Malformed versions are invalid, not unsupported.
    for version in ("", "1", "1.x", "1.0.7", " 1.2", "1.2 ", "01.2", "1.-2", "v1.2", "1" * 60):
        err = refusal(admission, info(api_version=version, federation="nope", auth_token=""))
        assert err.kind is Refusal.INVALID, version
        assert 'is not "MAJOR.MINOR"' in err.message
    assert admission.admit(info(api_version="1.99")).partition_id == 0  # any later 1.x


def test_an_instance_held_by_a_session_is_taken_over_only_with_its_secret() -> None:
    admission, roster = make()
    first = info(instance_id="i-1")
    connect(roster, first, admission.admit(first).partition_id)
    for secret in ("", "guess", "secret-of-c-i-2"):
        err = refusal(admission, info(instance_id="i-1", session_secret=secret))
        assert err.kind is Refusal.INSTANCE_TAKEN
        assert "only a join carrying that session's secret" in err.message
    # The owner (a client re-joining with its current secret) takes it over.
    assert admission.admit(info(instance_id="i-1", session_secret="secret-of-c-i-1"))


@pytest.mark.parametrize(
    ("join", "kind", "message"),
    [
        (info(instance_id=""), Refusal.INVALID, "join: instance_id is empty"),
        (info(federation=""), Refusal.INVALID, "join: federation is empty"),
        (info(partition_id=1), Refusal.INVALID, "set partition_id and num_partitions together"),
        (
            info(partition_id=2, num_partitions=2),
            Refusal.INVALID,
            "join: partition_id 2 is outside 0..1",
        ),
        (
            info(federation="nope"),
            Refusal.UNKNOWN_FEDERATION,
            # blobs needs a token: it is not named to a stranger.
            "no federation named 'nope' (open federations on this server: mnist)",
        ),
        (info(auth_token=""), Refusal.UNAUTHENTICATED, "requires a valid auth token"),
        (info(auth_token="s3cre"), Refusal.UNAUTHENTICATED, "requires a valid auth token"),
        (
            info(model_spec=ModelSpec("logreg", (TensorSpec("w", (1,)),))),
            Refusal.SPEC_MISMATCH,
            "model spec mismatch with federation 'blobs' (model 'logreg'): tensor #0",
        ),
    ],
)
def test_each_rule_names_what_is_wrong(join: JoinInfo, kind: Refusal, message: str) -> None:
    admission, _ = make()
    err = refusal(admission, join)
    assert err.kind is kind and message in err.message and str(err) == err.message


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("orchard_server.admission.hmac.compare_digest", spy)
    admission, _ = make()
    admission.admit(info())
    assert calls == [(b"s3cret", b"s3cret")]
    open_admission, _ = make(auth_token="")
    open_admission.admit(info(auth_token="anything"))  # no token required: not compared
    assert len(calls) == 1


def test_a_full_federation_refuses_newcomers_but_not_returning_instances() -> None:
    admission, roster = make()
    for n in range(2):
        join = info(instance_id=f"i-{n}")
        connect(roster, join, admission.admit(join).partition_id)
    err = refusal(admission, info(instance_id="i-9"))
    assert err.kind is Refusal.FULL
    assert err.message == "federation 'blobs' is full: 2 of its max_clients=2 clients are connected"
    assert (
        admission.admit(info(instance_id="i-1", session_secret="secret-of-c-i-1")).partition_id == 1
    )


def test_trainers_get_partitions_evaluators_do_not_take_one() -> None:
    admission, roster = make(max_clients=10)
    judge = admission.admit(info(instance_id="judge", role=Role.EVALUATOR))
    assert (judge.role, judge.partition_id, judge.num_partitions) == (Role.EVALUATOR, 0, 2)
    connect(roster, info(instance_id="judge", role=Role.EVALUATOR), 0)
    first = admission.admit(info(instance_id="a"))
    assert (first.partition_id, first.num_partitions, first.spec) == (0, 2, SPEC)
    connect(roster, info(instance_id="a"), 0)
    fixed = admission.admit(info(instance_id="f", partition_id=3, num_partitions=4))
    assert (fixed.partition_id, fixed.num_partitions) == (3, 4)
    assert admission.admit(info(instance_id="b")).partition_id == 1
    assert roster.policy.partitions.to_json() == {"a": 0, "f": 3, "b": 1}


def test_a_join_without_a_spec_skips_the_check() -> None:
    admission, _ = make()
    assert admission.admit(info(model_spec=None)).spec == SPEC


def test_policy_from_config_and_max_clients_validation() -> None:
    config = FederationConfig(name="blobs", model="logreg", tensors=SPEC.tensors, auth_token="t")
    policy = AdmissionPolicy.from_config(config)
    assert (policy.federation, policy.spec, policy.auth_token) == ("blobs", SPEC, "t")
    assert (policy.max_clients, policy.num_partitions) == (DEFAULT_MAX_CLIENTS, 2)
    with pytest.raises(ValueError, match="max_clients must be >= 1"):
        AdmissionPolicy(federation="f", spec=SPEC, partitions=PartitionRegistry(1), max_clients=0)
    with pytest.raises(ConfigError, match=r"max_clients \(1\) is below min_available_clients"):
        FederationConfig(name="blobs", model="logreg", tensors=SPEC.tensors, max_clients=1)
