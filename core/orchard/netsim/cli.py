"""``python -m orchard.netsim``: run the link emulator, alone or around a client command.

Standalone, it is a proxy::

    python -m orchard.netsim --listen 127.0.0.1:9000 --target server:8080 --profile wan

Followed by ``-- COMMAND``, it wraps a client (the client images' entrypoint)::

    python -m orchard.netsim --profile 3g -- python -m orchard_pytorch client

It then listens on a free loopback port, points the command at it through
``ORCHARD_SERVER`` (whose original value is the proxy's target), keeps
``ORCHARD_TLS_SERVER_NAME`` at the real server's name so TLS still verifies
it, forwards SIGTERM/SIGINT to the command and exits with its status. With no
link settings at all it simply runs the command, so the wrapper costs nothing
when no profile is asked for.

Every option has an ``ORCHARD_NET_*`` environment variable, so a compose file
chooses a client's link with one line (``ORCHARD_NET_PROFILE: wan``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import pwd
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from orchard.env import env_default, env_float, env_int
from orchard.netsim.loss import LossRule
from orchard.netsim.profiles import ENV_PROFILES_FILE, LinkProfile, profile_from_settings
from orchard.netsim.proxy import LinkProxy, NetsimError, parse_address

__all__ = ["build_parser", "drop_privileges", "main"]

log = logging.getLogger("orchard.netsim")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every link option defaults to its ``ORCHARD_NET_*`` variable."""
    parser = argparse.ArgumentParser(
        prog="python -m orchard.netsim",
        description="Emulate a network link (delay, jitter, bandwidth, loss) in front of a "
        "TCP server, alone or around a client command given after '--'.",
    )
    parser.add_argument(
        "--listen",
        help="address to accept connections on (default with a command: 127.0.0.1:0, a free port)",
    )
    parser.add_argument(
        "--target",
        help="server address HOST:PORT (default with a command: $ORCHARD_SERVER)",
    )
    link = parser.add_argument_group("link (values given here override the profile's)")
    link.add_argument(
        "--profile",
        default=env_default("NET_PROFILE") or None,
        help="profile name from the profiles file, e.g. lan, wan, 3g, lossy (ORCHARD_NET_PROFILE)",
    )
    link.add_argument(
        "--profiles",
        type=Path,
        default=Path(p) if (p := os.environ.get(ENV_PROFILES_FILE)) else None,
        help=f"TOML file of profiles ({ENV_PROFILES_FILE})",
    )
    link.add_argument(
        "--delay-ms",
        type=float,
        default=env_float("NET_DELAY_MS"),
        help="one-way delay, each direction (ORCHARD_NET_DELAY_MS)",
    )
    link.add_argument(
        "--jitter-ms",
        type=float,
        default=env_float("NET_JITTER_MS"),
        help="uniform jitter around the delay (ORCHARD_NET_JITTER_MS)",
    )
    link.add_argument(
        "--rate-mbit",
        type=float,
        default=env_float("NET_RATE_MBIT"),
        help="bandwidth cap in Mbit/s, each direction; 0: none (ORCHARD_NET_RATE_MBIT)",
    )
    link.add_argument(
        "--up-rate-mbit",
        type=float,
        default=env_float("NET_UP_RATE_MBIT"),
        help="cap from client to server (ORCHARD_NET_UP_RATE_MBIT)",
    )
    link.add_argument(
        "--down-rate-mbit",
        type=float,
        default=env_float("NET_DOWN_RATE_MBIT"),
        help="cap from server to client (ORCHARD_NET_DOWN_RATE_MBIT)",
    )
    link.add_argument(
        "--loss",
        type=float,
        default=env_float("NET_LOSS"),
        help="probability of dropping a packet from the server, via iptables; needs root "
        "and NET_ADMIN (ORCHARD_NET_LOSS)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=env_int("NET_SEED"),
        help="seed of the jitter (ORCHARD_NET_SEED; default random)",
    )
    parser.add_argument(
        "--user",
        help="when started as root: run as this user once the loss rule is in place",
    )
    parser.add_argument(
        "--server-env",
        default="ORCHARD_SERVER",
        help="environment variable that carries the server address to the command",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("ORCHARD_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (ORCHARD_LOG_LEVEL)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def drop_privileges(user: str) -> None:
    """Become ``user`` (groups, gid, uid) if running as root; otherwise do nothing."""
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise NetsimError(f"--user {user!r}: no such user") from None
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)


def _profile(args: argparse.Namespace) -> LinkProfile:
    return profile_from_settings(
        args.profile,
        profiles_file=args.profiles,
        overrides={
            "delay_ms": args.delay_ms,
            "jitter_ms": args.jitter_ms,
            "rate_mbit": args.rate_mbit,
            "up_rate_mbit": args.up_rate_mbit,
            "down_rate_mbit": args.down_rate_mbit,
            "loss": args.loss,
        },
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _serve(proxy: LinkProxy) -> int:
    """Standalone: relay until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with proxy:
        await stop.wait()
    log.info("link emulator stopped (%d connections relayed)", proxy.accepted)
    return 0


async def _wrap(proxy: LinkProxy, command: Sequence[str], server_env: str) -> int:
    """Run ``command`` against the proxy; return its exit status."""
    async with proxy:
        host, port = proxy.address
        env = dict(os.environ)
        env[server_env] = f"{host}:{port}"
        target_host = proxy.target[0]
        if not _is_ip(target_host) and not env.get("ORCHARD_TLS_SERVER_NAME"):
            env["ORCHARD_TLS_SERVER_NAME"] = target_host
        child = await asyncio.create_subprocess_exec(*command, env=env)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, child.send_signal, sig)
        status = await child.wait()
    return status if status >= 0 else 128 - status


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; returns the exit status (the command's, when wrapping)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    try:
        profile = _profile(args)
        target_text = args.target or (os.environ.get(args.server_env) if command else None)
        if command and profile.is_ideal:
            if args.user:
                drop_privileges(args.user)
            os.execvp(command[0], command)
        if not target_text:
            raise NetsimError(
                "--target HOST:PORT is needed (or, around a command, "
                f"${args.server_env} set to the server's address)"
            )
        target = parse_address(target_text, "--target")
        listen_text = args.listen or ("127.0.0.1:0" if command else None)
        if not listen_text:
            raise NetsimError("--listen HOST:PORT is needed without a command")
        listen = parse_address(listen_text, "--listen")
        rule = LossRule(probability=profile.loss, source_port=target[1]) if profile.loss else None
        if rule is not None:
            rule.install()
        if args.user:
            drop_privileges(args.user)
        proxy = LinkProxy(listen=listen, target=target, profile=profile, seed=args.seed)
        try:
            if command:
                return asyncio.run(_wrap(proxy, command, args.server_env))
            return asyncio.run(_serve(proxy))
        finally:
            if rule is not None and os.geteuid() == 0:
                rule.remove()
    except (NetsimError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    except FileNotFoundError as exc:
        log.error("cannot run %s: %s", command[0] if command else "the proxy", exc)
        return 127


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
