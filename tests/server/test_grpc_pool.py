"""The gRPC client pool's sessions: long polls and the tasks in a session's mailbox."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from orchard.examples.logreg import logreg_spec
from orchard.messages import API_VERSION, JoinInfo, Task, TaskType
from orchard_server.admission import Admission, AdmissionPolicy
from orchard_server.grpc_pool import GrpcClientPool
from orchard_server.partitions import PartitionRegistry


def _pool_with_one_session() -> tuple[GrpcClientPool, str]:
    policy = AdmissionPolicy(federation="f", spec=logreg_spec(), partitions=PartitionRegistry(1))
    pool = GrpcClientPool(policy, heartbeat_timeout=60.0)
    info = JoinInfo(api_version=API_VERSION, federation="f", instance_id="i")
    client, _ = pool.join(info, Admission([pool]).admit(info))
    return pool, client.client_id


def _task(task_id: str) -> Task:
    return Task(
        task_id=task_id,
        type=TaskType.EVALUATE,
        round=1,
        config={},
        timeout=30.0,
        names=(),
        parameters=[],
    )


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_cancelled_long_poll_leaves_the_sessions_next_task_to_the_next_poll() -> None:
    """A client's PullTask call that ends while the server waits (the client cancelled
    it, or its deadline passed) must not leave a waiter that takes the session's next
    task for nobody: the client's next poll gets it, not a round deadline later."""

    async def main() -> None:
        pool, client_id = _pool_with_one_session()
        cancelled = asyncio.ensure_future(pool.next_task(client_id, 30.0))
        await asyncio.sleep(0.05)  # waiting on the empty mailbox
        await _cancel(cancelled)
        again = asyncio.ensure_future(pool.next_task(client_id, 30.0))
        await asyncio.sleep(0.05)  # the client's next poll waits too
        running = asyncio.ensure_future(pool.run_task(client_id, _task("t1")))
        try:
            got = await asyncio.wait_for(again, 5.0)
            assert got is not None and got.task_id == "t1"
        finally:
            await _cancel(running)

    asyncio.run(main())


def test_a_task_taken_by_a_poll_cancelled_at_that_moment_goes_to_the_next_poll() -> None:
    async def main() -> None:
        pool, client_id = _pool_with_one_session()
        poll = asyncio.ensure_future(pool.next_task(client_id, 30.0))
        await asyncio.sleep(0.05)
        running = asyncio.ensure_future(pool.run_task(client_id, _task("t2")))
        await asyncio.sleep(0)  # the task is in the mailbox and the poll's getter woken
        await _cancel(poll)
        try:
            got = await asyncio.wait_for(pool.next_task(client_id, 5.0), 10.0)
            assert got is not None and got.task_id == "t2"
        finally:
            await _cancel(running)

    asyncio.run(main())
