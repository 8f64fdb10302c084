"""Drive a compose project (or a swarm stack) of Orchard's images from tests.

Every stack gets its own project name and an explicit environment: compose
reads its settings (``ORCHARD_*``) from the environment, so the tests pass
exactly the variables they mean and nothing from the developer's shell leaks
in. Setup and teardown go through pytest-docker (``get_docker_services``),
with ``up -d`` as the setup command: ``up --wait`` would fail as soon as a
one-shot client exits, even with status 0.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_docker.plugin import Services, get_docker_services

REPO = Path(__file__).resolve().parents[2]
SERVER_IMAGE = "orchard/server:latest"

#: Engine-level settings every test stack shares: free host ports for the
#: server and its web view (published on loopback only, and only by
#: compose.publish.yml), one CPU thread per client (the machines running the
#: tests are small), and the engine's own builder.
BASE_ENV: dict[str, str] = {
    "COMPOSE_BAKE": "false",
    "ORCHARD_TAG": "latest",
    "ORCHARD_PORT": "",
    "ORCHARD_WEB_PORT": "",
    "ORCHARD_PUBLISH_HOST": "127.0.0.1",
    "ORCHARD_CLIENT_THREADS": "1",
}

SETUP = ["up -d --no-build"]
CLEANUP = ["down -v --remove-orphans --timeout 10"]
#: :meth:`Stack.up_attached`'s status when the test stopped ``compose up`` (as ``timeout(1)``).
UP_TIMED_OUT = 124


class StackError(AssertionError):
    """A container or compose command did not do what the test needed; logs attached."""


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run ``docker ARGS``; its stdout."""
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise StackError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def container_logs(container: str) -> str:
    """Everything a container wrote (Python logs to stderr, so both streams)."""
    done = subprocess.run(
        ["docker", "logs", container],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


def clean_environ() -> dict[str, str]:
    """The process environment without any ORCHARD_* or COMPOSE_* setting."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("ORCHARD_", "COMPOSE_", "DOCKER_"))
    }


@dataclass
class Stack:
    """One compose project: its files, profiles and environment."""

    project: str
    files: Sequence[Path] = (REPO / "docker-compose.yml",)
    env: Mapping[str, str] = field(default_factory=dict)
    profiles: Sequence[str] = ()

    @property
    def environ(self) -> dict[str, str]:
        return {**clean_environ(), **BASE_ENV, **self.env}

    @property
    def compose_command(self) -> str:
        """The ``docker compose`` prefix for pytest-docker, settings included."""
        settings = " ".join(shlex.quote(f"{k}={v}") for k, v in {**BASE_ENV, **self.env}.items())
        unset = " ".join(f"-u {k}" for k in os.environ if k.startswith(("ORCHARD_", "COMPOSE_")))
        profiles = " ".join(f"--profile {shlex.quote(p)}" for p in self.profiles)
        return f"env {unset} {settings} docker compose {profiles}".replace("  ", " ")

    @contextmanager
    def running(
        self, setup: Sequence[str] = SETUP, cleanup: Sequence[str] = CLEANUP
    ) -> Iterator[Services]:
        """Up on entry, down (with volumes) on exit, through pytest-docker."""
        with get_docker_services(
            self.compose_command,
            [str(f) for f in self.files],
            self.project,
            list(setup),
            list(cleanup),
        ) as services:
            yield services

    def compose(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """``docker compose -p PROJECT -f ... ARGS``; its stdout."""
        command = ["docker", "compose", "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        for profile in self.profiles:
            command += ["--profile", profile]
        done = subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            env=self.environ,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
        if check and done.returncode != 0:
            raise StackError(
                f"docker compose {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
            )
        return done.stdout

    def up_attached(self, *args: str, timeout: float) -> tuple[int, str, float]:
        """``docker compose up ARGS`` in the foreground, as a user runs it.

        Returns its exit status, its output (compose's and the containers')
        and the seconds it took. After ``timeout`` seconds the test stops it
        and gets :data:`UP_TIMED_OUT`, the output so far and each container's
        state, so the test's own assertion says what did not end. Keep
        ``timeout`` below pytest's per-test limit (``pyproject.toml``): a test
        that pytest-timeout cuts reports nothing of the containers (a CI run at
        f5bcf87 lost the cause of such a hang that way).
        """
        command = ["docker", "compose", "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        for profile in self.profiles:
            command += ["--profile", profile]
        started = time.monotonic()
        try:
            done = subprocess.run(
                [*command, "up", "--no-build", "--no-color", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=self.environ,
                timeout=timeout,
                check=False,
                cwd=REPO,
            )
        except subprocess.TimeoutExpired as exc:
            seconds = time.monotonic() - started
            so_far = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
            return UP_TIMED_OUT, f"{so_far}\n{self._stopped_report(seconds)}", seconds
        return done.returncode, done.stdout, time.monotonic() - started

    def _stopped_report(self, seconds: float) -> str:
        """What :meth:`up_attached` adds to the output of an ``up`` it stopped."""
        try:
            states = "\n".join(
                f"  {row.get('Service')}: {row.get('State')} ({row.get('Status')})"
                for row in self.containers()
            )
        except (StackError, subprocess.TimeoutExpired) as exc:
            states = f"  (compose ps failed: {exc})"
        return f"[compose up stopped by the test after {seconds:.0f} s; containers:\n{states}]"

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """``compose ps -a`` as dicts (Name, Service, State, ExitCode, ID, ...)."""
        args = ["ps", "-a", "--format", "json"] + ([service] if service else [])
        out = self.compose(*args).strip()
        if not out:
            return []
        if out.startswith("["):  # older compose versions print one JSON array
            rows: list[dict[str, Any]] = json.loads(out)
            return rows
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def logs(self, *services: str) -> str:
        """Logs of the given services (all when none), without colours or prefixes lost."""
        return self.compose("logs", "--no-color", "--timestamps", *services, check=False)

    def wait_exit(self, service: str, timeout: float) -> int:
        """Wait until every container of ``service`` has exited; the highest exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.containers(service)
            if rows and all(r["State"] == "exited" for r in rows):
                return max(int(r["ExitCode"]) for r in rows)
            time.sleep(1.0)
        raise StackError(f"{service} still running after {timeout:.0f} s\n{self.logs()[-6000:]}")

    def wait_log(self, service: str, text: str, timeout: float) -> str:
        """Wait until ``text`` appears in the logs of ``service``; the logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = self.logs(service)
            if text in logs:
                return logs
            time.sleep(0.5)
        raise StackError(f"{text!r} not in {service}'s logs after {timeout:.0f} s\n{self.logs()}")

    def read_state(self, relative: str) -> str:
        """A file from the server's state volume, read from the volume itself."""
        return read_volume_file(f"{self.project}_state", relative)

    def history(self, federation: str) -> dict[str, Any]:
        """The history.json the server wrote for ``federation``."""
        data: dict[str, Any] = json.loads(self.read_state(f"{federation}/history.json"))
        return data

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes still labelled with this project."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": docker("ps", "-a", "-q", "--filter", label).split(),
            "networks": docker("network", "ls", "-q", "--filter", label).split(),
            "volumes": docker("volume", "ls", "-q", "--filter", label).split(),
        }


def read_volume_file(volume: str, relative: str) -> str:
    """Read one file of a named volume with a throwaway container of the server image."""
    return docker(
        "run", "--rm", "--network", "none", "--entrypoint", "cat",
        "-v", f"{volume}:/state:ro", SERVER_IMAGE, f"/state/{relative}",
    )  # fmt: skip


def rounds_of(history: Mapping[str, Any]) -> list[int]:
    """The round numbers recorded in a history document, in file order."""
    return [int(r["round"]) for r in history["rounds"]]
