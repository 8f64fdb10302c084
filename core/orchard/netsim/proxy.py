"""A user-space link emulator: a TCP proxy that delays, jitters and paces each direction.

Kernels without ``netem`` (this project's CI among them) cannot add delay in
the network stack, so the client side of a link runs through this proxy: the
client connects to the proxy on loopback, the proxy connects to the server,
and every chunk of bytes read from one side is written to the other only once
the emulated link would have delivered it.

The model is a point-to-point link per direction (as in netem with a rate, or
a ``tbf`` shaper followed by a delay line):

* serialization: a chunk of ``n`` bytes occupies the link for ``8 n / rate``
  seconds, one chunk after another, so throughput never exceeds the cap;
* propagation: it then arrives ``delay`` (plus a uniform jitter sample)
  later;
* order: a chunk never overtakes the one before it (TCP delivers in order),
  so with jitter a late chunk holds back the ones behind it.

At most ``buffer_bytes`` per direction are held in flight; beyond that the
proxy stops reading, and TCP's flow control pushes back on the sender, as a
full router queue would. A direction ends when its reader sees end of file,
which is forwarded (half-close) after the delay like any other byte; the
connection closes when both have ended or either side resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from orchard.netsim.profiles import LinkProfile, LinkSpec

__all__ = ["LinkProxy", "NetsimError", "parse_address"]

log = logging.getLogger("orchard.netsim")

#: Largest read; with a rate cap, reads are smaller so pacing stays smooth.
_MAX_CHUNK = 64 * 1024
_MIN_CHUNK = 1500
#: Chunks are sized to about this much link time under a rate cap.
_CHUNK_SECONDS = 0.005


class NetsimError(ValueError):
    """A link-emulator setting is invalid; the message names the option."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as ``(host, port)``; ``what`` names the option in errors."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NetsimError(f"{what} {text!r} must look like HOST:PORT (e.g. server:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Budget:
    """Bytes in flight in one direction, bounded: acquiring waits while the link is full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._changed = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + n <= self.capacity)
            self.used += n

    async def release(self, n: int) -> None:
        async with self._changed:
            self.used -= n
            self._changed.notify_all()


@dataclass(slots=True)
class _Clock:
    """When the link is next free and when the last chunk arrives (one direction)."""

    link_free: float = 0.0
    last_arrival: float = 0.0


class _Direction:
    """Moves bytes from ``reader`` to ``writer`` as the emulated link ``spec`` would."""

    def __init__(
        self,
        spec: LinkSpec,
        rng: random.Random,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        buffer_bytes: int,
        label: str,
    ) -> None:
        self.spec = spec
        self.rng = rng
        self.reader = reader
        self.writer = writer
        self.label = label
        self.budget = _Budget(buffer_bytes)
        self.queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.clock = _Clock()
        self.bytes = 0
        rate = spec.bytes_per_second
        self.chunk = (
            _MAX_CHUNK
            if rate is None
            else int(min(_MAX_CHUNK, max(_MIN_CHUNK, rate * _CHUNK_SECONDS)))
        )

    def _one_way_delay(self) -> float:
        jitter = self.spec.jitter_ms
        sample = self.spec.delay_ms + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
        return max(sample, 0.0) / 1000.0

    def _arrival(self, now: float, size: int) -> float:
        """When a chunk of ``size`` bytes read at ``now`` reaches the other side."""
        departed = now
        rate = self.spec.bytes_per_second
        if rate is not None:
            start = max(now, self.clock.link_free)
            self.clock.link_free = start + size / rate
            departed = self.clock.link_free
        arrival = max(self.clock.last_arrival, departed + self._one_way_delay())
        self.clock.last_arrival = arrival
        return arrival

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self.reader.read(self.chunk)
            now = loop.time()
            if not data:
                await self.queue.put((self._arrival(now, 0), None))
                return
            # The bytes enter the link once there is room in the buffer;
            # waiting for room is the sender being held back, as by a full queue.
            await self.budget.acquire(len(data))
            await self.queue.put((self._arrival(loop.time(), len(data)), data))

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            arrival, data = await self.queue.get()
            wait = arrival - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if self.writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        self.writer.write_eof()
                return
            self.writer.write(data)
            await self.writer.drain()
            self.bytes += len(data)
            await self.budget.release(len(data))

    async def run(self) -> None:
        """Pump until end of file; raises if either side fails."""
        reading = asyncio.create_task(self._read(), name=f"{self.label}-read")
        writing = asyncio.create_task(self._write(), name=f"{self.label}-write")
        try:
            await asyncio.gather(reading, writing)
        finally:
            for task in (reading, writing):
                task.cancel()
            await asyncio.gather(reading, writing, return_exceptions=True)


class LinkProxy:
    """Accepts TCP connections on ``listen`` and relays each to ``target`` over an emulated link.

    ``profile.up`` shapes bytes from the accepted (client) side to the target,
    ``profile.down`` the way back. The target is resolved for every new
    connection, so a server that restarts on a new address is found again.
    ``seed`` makes the jitter reproducible.

    Use as ``async with LinkProxy(...) as proxy:``; ``proxy.address`` is the
    bound ``(host, port)`` (pass port 0 to pick a free one).
    """

    def __init__(
        self,
        *,
        listen: tuple[str, int],
        target: tuple[str, int],
        profile: LinkProfile,
        seed: int | None = None,
        buffer_bytes: int = 4 << 20,
    ) -> None:
        if buffer_bytes < _MAX_CHUNK:
            raise NetsimError(f"buffer_bytes must be at least {_MAX_CHUNK}, got {buffer_bytes}")
        self.listen = listen
        self.target = target
        self.profile = profile
        self.buffer_bytes = buffer_bytes
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] = listen
        #: Connections accepted so far (for logs and tests).
        self.accepted = 0

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the bound address."""
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1])
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info(
            "link emulator on %s:%d -> %s:%d (%s)",
            *self.address,
            *self.target,
            self.profile.describe(),
        )
        return self.address

    async def close(self) -> None:
        """Stop accepting and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.create_task(self._relay(reader, writer, self.accepted))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, number: int
    ) -> None:
        peer = client_writer.get_extra_info("peername")
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning(
                "connection %d from %s: cannot reach %s:%d (%s); closing it",
                number,
                peer,
                *self.target,
                exc,
            )
            client_writer.close()
            with contextlib.suppress(OSError):
                await client_writer.wait_closed()
            return
        up = _Direction(
            self.profile.up,
            self._rng,
            client_reader,
            server_writer,
            buffer_bytes=self.buffer_bytes,
            label=f"conn{number}-up",
        )
        down = _Direction(
            self.profile.down,
            self._rng,
            server_reader,
            client_writer,
            buffer_bytes=self.buffer_bytes,
            label=f"conn{number}-down",
        )
        log.debug("connection %d from %s relayed to %s:%d", number, peer, *self.target)
        pumps = [asyncio.create_task(up.run()), asyncio.create_task(down.run())]
        try:
            # Either direction failing (a reset) ends the connection; clean
            # ends of both directions end it too.
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.debug("connection %d: %s", number, error)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            log.debug(
                "connection %d closed: %d bytes up, %d bytes down", number, up.bytes, down.bytes
            )
