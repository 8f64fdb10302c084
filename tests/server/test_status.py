"""The read-only GetStatus RPC, ``orchard-server status``, and progress sent with heartbeats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest

from orchard import serde
from orchard.messages import FederationState, TaskProgress
from orchard_server.cli import main
from orchard_server.servicer import FederationServicer
from orchard_server.status import fetch_status
from tests.server.test_servicer import ServerThread, join_info, served

__all__ = ["served"]


@pytest.fixture
def open_served(tmp_path: Path) -> Iterator[ServerThread]:
    """A server whose federation needs no join token (status lists it to anyone)."""
    server = ServerThread(tmp_path, auth_token="")
    yield server
    server.close()


def test_status_lists_the_federation_and_its_clients(
    open_served: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    served = open_served
    served.stub.Join(serde.join_to_proto(join_info(framework="numpy")), timeout=10)
    served.stub.Join(
        serde.join_to_proto(join_info(instance_id="inst-b", display_name="b")), timeout=10
    )
    (status,) = fetch_status(f"127.0.0.1:{served.port}", insecure=True)
    assert (status.name, status.model_id, status.strategy) == ("blobs", "logreg", "fedavg")
    assert (status.state, status.rounds_completed, status.num_rounds) == (
        FederationState.WAITING,
        0,
        1,
    )
    assert sorted(c.display_name for c in status.clients) == ["a", "b"]
    assert main(["status", "--server", f"127.0.0.1:{served.port}", "--insecure"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("blobs: logreg, fedavg, round 0/1 done; waiting")
    assert "2 clients:" in out and "numpy" in out and "trainer" in out


def test_without_a_web_token_the_status_names_no_token_protected_federation(
    served: ServerThread,
) -> None:
    # "blobs" needs a join token; the server has no web token: strangers may
    # ask for the status, but learn of the open federations only.
    assert served.server.hosted["blobs"].pool.policy.protected
    served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    assert fetch_status(f"127.0.0.1:{served.port}", insecure=True) == []


def test_status_of_an_unreachable_server_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--server", "127.0.0.1:1", "--insecure", "--timeout", "1"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_heartbeat_progress_reaches_the_federation_view(served: ServerThread) -> None:
    session = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    )
    progress = TaskProgress(fraction=0.5, epoch=2, examples_per_second=1200.0)
    served.stub.Heartbeat(serde.heartbeat_to_proto(session.client_id, progress), timeout=10)
    view = served.server.hosted["blobs"].federation.view
    assert served.on_loop(lambda: view.progress_of.get(session.client_id)) == progress


class _AbortedError(Exception):
    pass


class _Context:
    """The one ServicerContext call GetStatus makes."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _AbortedError(code, details)


def test_a_web_token_guards_the_status(served: ServerThread) -> None:
    hosted: Any = served.server.hosted
    servicer = FederationServicer(
        hosted,
        heartbeat_interval=1.0,
        max_poll_seconds=1.0,
        max_upload_bytes=1 << 20,
        max_concurrent_uploads=1,
        status_token="watch",
    )
    context: Any = _Context()
    with pytest.raises(_AbortedError) as refused:
        served.call(servicer.GetStatus(serde.status_request_to_proto("nope"), context))
    assert refused.value.args[0] is grpc.StatusCode.UNAUTHENTICATED
    answer = served.call(servicer.GetStatus(serde.status_request_to_proto("watch"), context))
    assert [f.name for f in serde.federation_summaries_from_proto(answer)] == ["blobs"]
