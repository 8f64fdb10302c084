"""The link emulator: delay, jitter, rate cap, byte-exact relaying, profiles and CLI.

Everything runs on loopback against a small echo server. Timings are only
checked as lower bounds, which an emulator that works cannot miss: a byte
cannot come back before it has crossed the emulated link twice, and 250 kB
cannot cross a 4 Mbit/s link in less than half a second.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from orchard.netsim import (
    LinkProfile,
    LinkProxy,
    LinkSpec,
    LossRule,
    NetsimError,
    ProfileError,
    load_profiles,
    parse_address,
    profile_from_settings,
)
from orchard.netsim import cli as netsim_cli

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "deploy" / "network-profiles.toml"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=30))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@asynccontextmanager
async def echo_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] = _echo,
) -> AsyncIterator[tuple[str, int]]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def symmetric(**spec: float) -> LinkProfile:
    return LinkProfile(up=LinkSpec(**spec), down=LinkSpec(**spec))


async def round_trips(address: tuple[str, int], count: int) -> list[float]:
    reader, writer = await asyncio.open_connection(*address)
    times = []
    for _ in range(count):
        started = time.monotonic()
        writer.write(b"x")
        await writer.drain()
        assert await reader.readexactly(1) == b"x"
        times.append(time.monotonic() - started)
    writer.close()
    return times


# --- the proxy -----------------------------------------------------------------------


def test_round_trip_grows_by_twice_the_one_way_delay() -> None:
    async def main() -> None:
        async with echo_server() as target:
            direct = await round_trips(target, 5)
            profile = symmetric(delay_ms=40)
            async with LinkProxy(listen=("127.0.0.1", 0), target=target, profile=profile) as proxy:
                delayed = await round_trips(proxy.address, 5)
        assert min(delayed) >= 0.080, delayed
        assert min(delayed) >= max(direct) + 0.070, (direct, delayed)

    run(main())


def test_each_direction_has_its_own_delay() -> None:
    async def main() -> None:
        async with echo_server() as target:
            profile = LinkProfile(up=LinkSpec(delay_ms=60), down=LinkSpec(delay_ms=0))
            async with LinkProxy(listen=("127.0.0.1", 0), target=target, profile=profile) as proxy:
                times = await round_trips(proxy.address, 3)
        assert min(times) >= 0.060, times

    run(main())


def test_rate_cap_bounds_throughput() -> None:
    size = 250_000
    rate_mbit = 4.0

    async def main() -> None:
        async with echo_server() as target:
            profile = LinkProfile(up=LinkSpec(rate_mbit=rate_mbit), down=LinkSpec())
            async with LinkProxy(listen=("127.0.0.1", 0), target=target, profile=profile) as proxy:
                reader, writer = await asyncio.open_connection(*proxy.address)
                payload = random.Random(1).randbytes(size)
                started = time.monotonic()
                writer.write(payload)
                await writer.drain()
                echoed = await reader.readexactly(size)
                elapsed = time.monotonic() - started
                writer.close()
        assert echoed == payload
        assert elapsed >= size * 8 / (rate_mbit * 1e6), elapsed

    run(main())


def test_jitter_never_reorders_or_corrupts_bytes() -> None:
    async def main() -> None:
        async with echo_server() as target:
            profile = symmetric(delay_ms=2, jitter_ms=2)
            async with LinkProxy(
                listen=("127.0.0.1", 0), target=target, profile=profile, seed=3
            ) as proxy:
                reader, writer = await asyncio.open_connection(*proxy.address)
                rng = random.Random(2)
                chunks = [rng.randbytes(rng.randint(1, 5000)) for _ in range(60)]
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.001)
                echoed = await reader.readexactly(sum(map(len, chunks)))
                writer.close()
        assert echoed == b"".join(chunks)

    run(main())


def test_half_close_reaches_the_server_and_the_reply_comes_back() -> None:
    async def reply_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = await reader.read()  # until the client's end of file
        writer.write(b"got %d bytes" % len(received))
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with (
            echo_server(reply_after_eof) as target,
            LinkProxy(
                listen=("127.0.0.1", 0), target=target, profile=symmetric(delay_ms=5)
            ) as proxy,
        ):
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"12345")
            writer.write_eof()
            reply = await reader.read()  # until the server's end of file
            writer.close()
        assert reply == b"got 5 bytes"

    run(main())


def test_unreachable_target_closes_the_client_connection() -> None:
    async def main() -> None:
        async with echo_server() as (host, port):
            pass  # closed again: nothing listens on the port now
        async with LinkProxy(
            listen=("127.0.0.1", 0), target=(host, port), profile=symmetric(delay_ms=1)
        ) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_parse_address() -> None:
    assert parse_address("server:8080", "--target") == ("server", 8080)
    assert parse_address("[::1]:9", "--target") == ("::1", 9)
    for bad in ("server", ":8080", "server:http", "server:70000"):
        with pytest.raises(NetsimError, match="--target"):
            parse_address(bad, "--target")


def test_proxy_refuses_a_buffer_smaller_than_one_chunk() -> None:
    with pytest.raises(NetsimError, match="buffer_bytes"):
        LinkProxy(
            listen=("127.0.0.1", 0), target=("127.0.0.1", 1), profile=LinkProfile(), buffer_bytes=10
        )


# --- profiles ------------------------------------------------------------------------


def test_shipped_profiles_file_defines_the_documented_profiles() -> None:
    profiles = load_profiles(PROFILES)
    assert {"lan", "wan", "3g", "lossy"} <= set(profiles)
    three_g = profiles["3g"]
    assert three_g.up.delay_ms == three_g.down.delay_ms == 150
    assert (three_g.up.rate_mbit, three_g.down.rate_mbit) == (0.5, 2.0)
    assert profiles["lossy"].loss == pytest.approx(0.02)
    assert profiles["wan"].loss == 0.0
    assert all(p.needs_proxy for p in profiles.values())


def test_unknown_key_names_file_profile_and_key(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[slow]\ndelay_ms = 10\nlatency = 5\n")
    with pytest.raises(ProfileError, match=r"p\.toml \[slow\].*latency"):
        load_profiles(path)


def test_invalid_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    for body, fragment in (
        ('[a]\ndelay_ms = "x"\n', "delay_ms must be a number"),
        ("[a]\ndelay_ms = -1\n", "delay_ms must be"),
        ("[a]\nrate_mbit = 0\n", "rate_mbit must be > 0"),
        ("[a]\nloss = 1.0\n", "loss must be in"),
        ("a = 3\n", "must be a table"),
    ):
        path.write_text(body)
        with pytest.raises(ProfileError, match=fragment):
            load_profiles(path)


def test_unknown_profile_lists_the_defined_ones() -> None:
    with pytest.raises(ProfileError, match="defined: 3g, lan, lossy, wan"):
        profile_from_settings("5g", profiles_file=PROFILES)


def test_profile_name_without_file_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHARD_NET_PROFILES", raising=False)
    with pytest.raises(ProfileError, match="ORCHARD_NET_PROFILES"):
        profile_from_settings("wan")


def test_overrides_apply_over_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHARD_NET_PROFILES", str(PROFILES))
    profile = profile_from_settings(
        "3g", overrides={"delay_ms": 10.0, "up_rate_mbit": 0.0, "loss": None}
    )
    assert profile.up.delay_ms == profile.down.delay_ms == 10.0
    assert profile.up.jitter_ms == 40.0  # kept from the profile
    assert profile.up.rate_mbit is None  # 0 lifts the cap
    assert profile.down.rate_mbit == 2.0
    custom = profile_from_settings(None, overrides={"rate_mbit": 5.0})
    assert (custom.up.rate_mbit, custom.down.rate_mbit, custom.up.delay_ms) == (5.0, 5.0, 0.0)
    assert profile_from_settings(None).is_ideal


def test_describe_reads_like_a_link() -> None:
    text = load_profiles(PROFILES)["3g"].describe()
    assert text == "3g: 150±40 ms one way, 0.5/2 Mbit/s up/down, loss 0.0%"


# --- loss ----------------------------------------------------------------------------


def test_loss_rule_drops_only_packets_from_the_server_port() -> None:
    rule = LossRule(probability=0.02, source_port=8080)
    assert rule.command("-I") == [
        "iptables", "-w", "-I", "INPUT", "-p", "tcp", "--sport", "8080", "!", "-i", "lo",
        "-m", "statistic", "--mode", "random", "--probability", "0.020000", "-j", "DROP",
    ]  # fmt: skip
    with pytest.raises(NetsimError, match="loss must be in"):
        LossRule(probability=1.5, source_port=8080)


def test_loss_without_root_explains_what_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetsimError, match="NET_ADMIN"):
        LossRule(probability=0.1, source_port=8080).install()


# --- command line --------------------------------------------------------------------


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchard.netsim",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


_PRINT_SERVER = (
    "import os; print(os.environ['ORCHARD_SERVER'], os.environ.get('ORCHARD_TLS_SERVER_NAME'))"
)
_NET_VARS = {
    k: "" for k in os.environ if k.startswith("ORCHARD_NET_") or k == "ORCHARD_TLS_SERVER_NAME"
}


def test_cli_without_link_settings_runs_the_command_unchanged() -> None:
    async def main() -> None:
        code, out, _ = await _cli(
            "--", sys.executable, "-c", _PRINT_SERVER + "; raise SystemExit(3)",
            env={**_NET_VARS, "ORCHARD_SERVER": "server:8080"},
        )  # fmt: skip
        assert code == 3
        assert out.split() == ["server:8080", "None"]

    run(main())


def test_cli_wraps_the_command_through_a_delayed_link() -> None:
    """The command is pointed at the proxy, and its round trips carry the delay."""
    probe = (
        "import os, socket, time\n"
        "host, port = os.environ['ORCHARD_SERVER'].rsplit(':', 1)\n"
        "s = socket.create_connection((host, int(port)))\n"
        "best = 9.0\n"
        "for _ in range(3):\n"
        "    t = time.monotonic(); s.sendall(b'x'); s.recv(1)\n"
        "    best = min(best, time.monotonic() - t)\n"
        "print(os.environ['ORCHARD_SERVER'], os.environ['ORCHARD_TLS_SERVER_NAME'], best)\n"
    )

    async def main() -> None:
        async with echo_server() as (_, port):
            code, out, err = await _cli(
                "--profiles", str(PROFILES), "--profile", "wan", "--jitter-ms", "0",
                "--", sys.executable, "-c", probe,
                env={**_NET_VARS, "ORCHARD_SERVER": f"localhost:{port}"},
            )  # fmt: skip
        assert code == 0, err
        address, server_name, best = out.split()
        assert address.startswith("127.0.0.1:") and address != f"127.0.0.1:{port}"
        assert server_name == "localhost"  # TLS still checks the real server's name
        assert float(best) >= 2 * 0.040, out
        assert "wan+overrides: 40±0 ms one way, 50/50 Mbit/s up/down" in err

    run(main())


def test_cli_reports_a_missing_target() -> None:
    async def main() -> None:
        code, _, err = await _cli(
            "--delay-ms", "5", "--", "true", env={**_NET_VARS, "ORCHARD_SERVER": ""}
        )
        assert code == 2
        assert "--target HOST:PORT is needed" in err

    run(main())


def test_drop_privileges_is_a_no_op_for_other_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    calls: list[object] = []
    monkeypatch.setattr(os, "setuid", calls.append)
    netsim_cli.drop_privileges("nobody")
    assert calls == []
