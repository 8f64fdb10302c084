"""The client pool of a federation whose clients come over gRPC.

Sessions live here: who joined, the hash of each session's secret (the
secret itself is handed to the client once and never kept, logged or
stored), when they were last heard from, the tasks
waiting for them (a mailbox drained by their long polls) and the tasks they
are working on (futures the round loop awaits). A reaper drops sessions whose
heartbeats stop, failing their open tasks, so a dead client never stalls a
round for longer than the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from orchard import serde
from orchard.allocator import release_free_memory
from orchard.messages import JoinInfo, LeaveNotice, Result, Role, Task
from orchard.spec import SpecError
from orchard.typing import NDArrays
from orchard_server.admission import AdmissionPolicy, Admitted
from orchard_server.events import Stage
from orchard_server.pool import ClientDroppedError, ClientInfo, ClientPool
from orchard_server.results import InvalidResultError, ResultPolicy

log = logging.getLogger("orchard.server")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(slots=True)
class _Session:
    info: ClientInfo
    #: SHA-256 of the session secret (256 random bits: no salt or stretching needed).
    secret_hash: bytes
    last_seen: float
    mailbox: asyncio.Queue[Task] = field(default_factory=asyncio.Queue)
    #: task_id -> (task, future the round loop awaits)
    open: dict[str, tuple[Task, asyncio.Future[Result]]] = field(default_factory=dict)
    #: task_id -> when its last chunk was written (monotonic), until its result arrives.
    sent_at: dict[str, float] = field(default_factory=dict)
    #: Open tasks written to the client in full (the shared chunks are no longer needed for them).
    sent: set[str] = field(default_factory=set)
    #: Recently closed tasks, so a late result is told "closed", not "unknown".
    closed: deque[str] = field(default_factory=lambda: deque(maxlen=64))


#: A round's freed encoding of at least this many bytes is handed back to the
#: kernel (:func:`orchard.allocator.release_free_memory`). Smaller ones stay for
#: the next round's encoding: trimming and faulting the pages in again made
#: rounds of 2 MNIST CNN clients (6.65 MB) slower (docs/performance.md).
RELEASE_AFTER_BYTES = 32 << 20


@dataclass(slots=True, eq=False)
class _Encoded:
    """A parameter list's chunk messages, shared by every stream that sends them.

    Each chunk is dropped as soon as no stream needs it any more: every stream
    sending these chunks has written it (``progress``), and no open task that
    still waits for its stream to start would need it (such a task needs them
    all). A large model's encoding thus shrinks behind the slowest download
    instead of living, whole, until it ends.
    """

    parameters: NDArrays
    chunk_bytes: int
    chunks: list[bytes | None]
    #: task id -> how many chunks its stream has written.
    progress: dict[str, int] = field(default_factory=dict)
    #: Chunks before this index are dropped.
    released: int = 0

    def matches(self, parameters: NDArrays, chunk_bytes: int) -> bool:
        """Whether a new stream of that very list at that chunk size can use these chunks.

        Identity, not equality: the round loop never changes a parameter list
        in place (each server step builds a new one), and this object keeps
        the list alive, so its identity cannot be reused meanwhile. Once a
        chunk is dropped, a new stream (a task opened later) needs a new
        encoding.
        """
        return (
            self.parameters is parameters and self.chunk_bytes == chunk_bytes and not self.released
        )


class GrpcClientPool(ClientPool):
    """Sessions of one federation; the servicer feeds it, the round loop uses it."""

    def __init__(
        self,
        policy: AdmissionPolicy,
        *,
        heartbeat_timeout: float,
        results: ResultPolicy | None = None,
    ) -> None:
        super().__init__(policy, results)
        self.heartbeat_timeout = heartbeat_timeout
        self._sessions: dict[str, _Session] = {}
        self.closed = asyncio.Event()
        self._encoded: _Encoded | None = None
        self._encoding = asyncio.Lock()

    # -- used by the servicer -------------------------------------------------------

    def join(self, info: JoinInfo, admitted: Admitted) -> tuple[ClientInfo, str]:
        """Open a session for a join :class:`~orchard_server.admission.Admission` accepted.

        Returns the client and its session secret, which is handed to the
        client and forgotten here (only its hash is kept). A previous session
        of the same instance is replaced (admission checked the join owns it).
        """
        partition_id = admitted.partition_id
        for old in [s for s in self._sessions.values() if s.info.instance_id == info.instance_id]:
            self.drop(old.info.client_id, "joined again with a new session")
        secret = secrets.token_urlsafe(32)
        client = ClientInfo(
            # Public: logs and history name the client by it; it proves nothing.
            client_id=f"c-{secrets.token_hex(5)}",
            # A proven identity is the client's public name, whatever it says.
            display_name=admitted.identity or info.display_name or info.instance_id[:12],
            framework=info.framework,
            role=admitted.role,
            partition_id=partition_id,
            instance_id=info.instance_id,
            identity=admitted.identity,
        )
        self._sessions[client.client_id] = _Session(
            info=client, secret_hash=_digest(secret), last_seen=time.monotonic()
        )
        self._membership_changed()
        log.info(
            "federation %r: %s joined as %s (%s, %s, partition %d); %d connected",
            self.federation,
            client.display_name,
            client.client_id,
            client.framework or "unknown framework",
            client.role.value,
            partition_id,
            len(self._sessions),
            extra={"federation": self.federation, "client": client.client_id},
        )
        return client, secret

    def may_take_over(self, instance_id: str, secret: str, identity: str = "") -> bool:
        """True when no session holds ``instance_id``, or ``secret`` is that
        session's, or that session proved the same (non-empty) ``identity``."""
        held = [s for s in self._sessions.values() if s.info.instance_id == instance_id]
        return all(
            hmac.compare_digest(s.secret_hash, _digest(secret))
            or (identity and s.info.identity == identity)
            for s in held
        )

    def authenticate(self, client_id: str, secret: str) -> bool | None:
        """Whether ``secret`` proves session ``client_id`` (compared in constant time).

        None when the session is unknown; a proven session is marked alive.
        """
        session = self._sessions.get(client_id)
        if session is None:
            return None
        if not hmac.compare_digest(session.secret_hash, _digest(secret)):
            return False
        session.last_seen = time.monotonic()
        return True

    def known(self, client_id: str) -> bool:
        """Whether ``client_id`` is a live session (and mark it alive)."""
        session = self._sessions.get(client_id)
        if session is not None:
            session.last_seen = time.monotonic()
        return session is not None

    def drop(self, client_id: str, reason: str) -> None:
        """End a session and fail its open tasks with ``reason``."""
        session = self._sessions.pop(client_id, None)
        if session is None:
            return
        for _, fut in session.open.values():
            if not fut.done():
                fut.set_exception(ClientDroppedError(client_id, reason))
        self._membership_changed()
        log.info(
            "federation %r: %s (%s) left: %s; %d connected",
            self.federation,
            session.info.display_name,
            client_id,
            reason,
            len(self._sessions),
            extra={"federation": self.federation, "client": client_id},
        )

    def leave(self, notice: LeaveNotice) -> str:
        """End a session its client closed; returns the client's display name.

        A fatal leave's reason is not repeated here: the federation's failure
        line (:meth:`.Federation.fail`) names it once.
        """
        session = self._sessions.get(notice.client_id)
        name = session.info.display_name if session is not None else notice.client_id
        reason = notice.reason or "no reason given"
        self.drop(notice.client_id, "it cannot take part" if notice.fatal else f"left ({reason})")
        return name

    async def next_task(self, client_id: str, wait: float) -> Task | None:
        """The next task of a session whose round is still waiting for it, or None."""
        deadline = time.monotonic() + wait
        while True:
            session = self._sessions.get(client_id)
            if session is None or self.closed.is_set():
                return None
            try:
                task = session.mailbox.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                getter = asyncio.ensure_future(session.mailbox.get())
                closer = asyncio.ensure_future(self.closed.wait())
                try:
                    done, _ = await asyncio.wait(
                        {getter, closer}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                except asyncio.CancelledError:
                    # The client's call ended while it waited. A getter left waiting
                    # would take the session's next task for nobody, and the client's
                    # next poll would miss it until the round's deadline dropped it.
                    _give_back(getter, session.mailbox)
                    raise
                finally:
                    closer.cancel()
                if getter not in done:
                    getter.cancel()
                    continue
                task = getter.result()
            entry = session.open.get(task.task_id)
            if entry is not None and not entry[1].done():
                session.last_seen = time.monotonic()
                self.events.transferred(self.federation, sent=_nbytes(task.parameters))
                return task

    async def start_sending(self, task: Task, chunk_bytes: int) -> _Encoded:
        """The chunk messages of ``task``'s parameters, for the stream about to send them.

        Every task of a fan-out carries the same parameter list object, so the
        first stream encodes it (in a worker thread: the event loop keeps
        serving) and the others send the same bytes: one copy of the model
        per round instead of two per client. The stream reports each chunk it
        wrote (:meth:`chunk_sent`) and its end (:meth:`stop_sending`), and a
        chunk is dropped once no stream needs it (:class:`_Encoded`). The
        pool's own reference goes as soon as every open task has been sent in
        full (:meth:`task_sent`), or else when no task is open any more
        (:meth:`run_task`): the bytes never outlive their round, and a large
        model's chunks are gone before its updates arrive. A task sent again
        later (its client re-joined) is encoded again.
        """
        async with self._encoding:
            cached = self._encoded
            if cached is None or not cached.matches(task.parameters, chunk_bytes):
                self._encoded = None  # free the old bytes before encoding anew
                chunks = await asyncio.to_thread(serde.encode_chunks, task.parameters, chunk_bytes)
                cached = self._encoded = _Encoded(task.parameters, chunk_bytes, list(chunks))
            cached.progress[task.task_id] = 0
            return cached

    def chunk_sent(self, encoded: _Encoded, task_id: str, sent: int) -> None:
        """The stream of ``task_id`` has written ``sent`` of ``encoded``'s chunks."""
        was = encoded.progress.get(task_id)
        encoded.progress[task_id] = sent
        if was == encoded.released:  # it may have been the last stream needing that chunk
            self._release(encoded)

    def stop_sending(self, encoded: _Encoded, task_id: str) -> None:
        """The stream of ``task_id`` ended (sent in full, failed or aborted)."""
        encoded.progress.pop(task_id, None)
        self._release(encoded)
        if (
            not encoded.progress
            and encoded.released == len(encoded.chunks)
            and _nbytes(encoded.parameters) >= RELEASE_AFTER_BYTES
        ):
            # The last stream of this encoding ended and its chunks are gone: give
            # their pages back rather than keep them through the uploads
            # (orchard.allocator; in a thread, as it takes milliseconds).
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    def _release(self, encoded: _Encoded) -> None:
        """Drop the chunks that every stream has written, unless a task still waits for all."""
        for session in self._sessions.values():
            for task_id, (task, _) in session.open.items():
                if (
                    task.parameters is encoded.parameters
                    and task_id not in session.sent
                    and task_id not in encoded.progress
                ):
                    return  # its stream has not started: it needs every chunk
        floor = min(encoded.progress.values(), default=len(encoded.chunks))
        if floor <= encoded.released:
            return
        for index in range(encoded.released, floor):
            encoded.chunks[index] = None
        encoded.released = floor

    def task_sent(self, client_id: str, task: Task, seconds: float) -> None:
        """The servicer wrote all of ``task`` to its client in ``seconds`` (the sending stage)."""
        session = self._sessions.get(client_id)
        if session is None or task.task_id not in session.open:
            return
        session.sent_at[task.task_id] = time.monotonic()
        session.sent.add(task.task_id)
        if all(tid in s.sent for s in self._sessions.values() for tid in s.open):
            self._encoded = None  # every open task has its bytes: free the model's chunks
        self.events.client_stage(self.federation, task.round, client_id, Stage.SENDING, seconds)

    def result_read(self, client_id: str, task: Task, header_at: float, seconds: float) -> None:
        """The servicer read a result whose header came at ``header_at`` in ``seconds``.

        The time from the task's last chunk to the result's header is the client's
        training (plus the network's latency), the waiting-for-training stage.
        """
        session = self._sessions.get(client_id)
        sent = session.sent_at.pop(task.task_id, None) if session else None
        if sent is not None:
            self.events.client_stage(
                self.federation,
                task.round,
                client_id,
                Stage.WAITING_FOR_TRAINING,
                max(header_at - sent, 0.0),
            )
        self.events.client_stage(self.federation, task.round, client_id, Stage.RECEIVING, seconds)

    def open_task(self, client_id: str, task_id: str) -> Task:
        """The open task a result answers; KeyError or LookupError say why not."""
        session = self._sessions.get(client_id)
        if session is None:
            raise KeyError(f"unknown session {client_id!r}; join again")
        entry = session.open.get(task_id)
        if entry is None and task_id in session.closed:
            raise LookupError(
                f"task {task_id!r} is closed (its round moved on or its deadline passed)"
            )
        if entry is None:
            raise KeyError(f"task {task_id!r} is not assigned to {client_id}")
        if entry[1].done():
            raise LookupError(
                f"task {task_id!r} is closed (its round moved on or its deadline passed)"
            )
        session.last_seen = time.monotonic()
        return entry[0]

    def deliver(self, client_id: str, result: Result, *, values_checked: bool = False) -> None:
        """Hand a result to the waiting round.

        Raises SpecError for parameters that do not fit the spec and
        InvalidResultError for any other refused value (the task fails).
        ``values_checked``: every parameter value was found finite as it was
        read (the servicer's :class:`~orchard.serde.ResultReader`), so the
        values are not scanned again.
        """
        session = self._sessions.get(client_id)
        entry = session.open.get(result.task_id) if session else None
        if session is None or entry is None or entry[1].done():
            raise LookupError(f"task {result.task_id!r} is no longer open")
        task, fut = entry
        if result.error:
            fut.set_exception(
                ClientDroppedError(client_id, f"task failed on the client: {result.error}")
            )
            return
        self.events.transferred(self.federation, received=_nbytes(result.parameters))
        try:
            self.results.check(self.spec, task, result, values_checked=values_checked)
        except (SpecError, InvalidResultError) as exc:
            self.reject(client_id, result.task_id, str(exc))
            raise
        fut.set_result(result)

    def reject(self, client_id: str, task_id: str, reason: str) -> None:
        """Fail an open task because its result was malformed."""
        session = self._sessions.get(client_id)
        entry = session.open.get(task_id) if session else None
        if entry is not None and not entry[1].done():
            entry[1].set_exception(ClientDroppedError(client_id, f"update rejected: {reason}"))
        log.warning(
            "federation %r: rejected the result of %s for %s: %s",
            self.federation,
            client_id,
            task_id,
            reason,
        )

    async def reap(self) -> None:
        """Forever: drop sessions silent for longer than the heartbeat timeout."""
        while True:
            await asyncio.sleep(min(1.0, self.heartbeat_timeout / 4))
            now = time.monotonic()
            for cid, session in list(self._sessions.items()):
                silent = now - session.last_seen
                if silent > self.heartbeat_timeout:
                    self.drop(cid, f"no heartbeat for {silent:.1f} s")

    def close(self) -> None:
        """The federation ended: wake every long poll."""
        self.closed.set()

    @property
    def size(self) -> int:
        """Number of live sessions."""
        return len(self._sessions)

    # -- ClientPool ---------------------------------------------------------------------

    def clients(self, role: Role = Role.TRAINER) -> list[ClientInfo]:
        return sorted(
            (s.info for s in self._sessions.values() if s.info.role is role),
            key=lambda i: i.sort_key,
        )

    async def run_task(self, client_id: str, task: Task) -> Result:
        session = self._sessions.get(client_id)
        if session is None:
            raise ClientDroppedError(client_id, "disconnected before the task was sent")
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        session.open[task.task_id] = (task, fut)
        session.mailbox.put_nowait(task)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), task.timeout)
        except TimeoutError:
            raise ClientDroppedError(
                client_id, f"missed the deadline of {task.timeout:g} s"
            ) from None
        finally:
            if not fut.done():
                fut.cancel()
            session.open.pop(task.task_id, None)
            session.sent_at.pop(task.task_id, None)
            session.sent.discard(task.task_id)
            session.closed.append(task.task_id)
            if not any(s.open for s in self._sessions.values()):
                self._encoded = None  # the round's tasks are all closed


def _give_back(getter: asyncio.Future[Task], mailbox: asyncio.Queue[Task]) -> None:
    """End a cancelled poll's wait on ``mailbox``; a task it had already taken goes back."""
    if not getter.done():
        getter.cancel()  # a woken getter that has not run yet leaves the task queued
    elif not getter.cancelled() and getter.exception() is None:
        mailbox.put_nowait(getter.result())


def _nbytes(arrays: NDArrays) -> int:
    """Bytes of a task's or result's parameters (what crosses the wire, less framing)."""
    return sum(int(a.nbytes) for a in arrays)
