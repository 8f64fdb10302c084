"""One child process with its log file, and the launcher's error type.

Every process the launcher starts writes stdout and stderr to one log file,
so a failure can show what the process saw (:meth:`Process.tail`). Each runs
in its own session (process group): stopping it also stops whatever it
started (data-loader workers, a shell's children), and a Ctrl-C in the
launcher's terminal reaches the launcher, which then stops its children in
order instead of every process dying at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["LaunchError", "Process", "SetupError", "tails"]

#: How many log lines an error message shows per process.
TAIL_LINES = 40


class LaunchError(RuntimeError):
    """Something the launcher started failed, or did not happen in time.

    ``process`` names the process at fault (None when none is); the message
    ends with the log tails of the processes involved.
    """

    def __init__(self, message: str, *, process: str | None = None, logs: str = "") -> None:
        super().__init__(f"{message}\n{logs}" if logs else message)
        self.process = process


class SetupError(LaunchError):
    """Nothing could start: a kind that is not installed, a bad option or config.

    The command line exits 2 for these (1 for failures of a started run).
    """


class Process:
    """A running (or finished) child process and its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Start ``argv`` now, appending its output to ``log``.

        ``env`` adds to (and overrides) this process's environment;
        ``PYTHONUNBUFFERED=1`` makes Python children's logs current.
        """
        self.name = name
        self.argv = tuple(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        try:
            # The child keeps its own copy of the descriptor; ours closes at once.
            with log.open("ab") as fh:
                self.popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=full_env,
                    cwd=cwd,
                    start_new_session=True,
                )
        except OSError as exc:
            raise LaunchError(f"cannot start {name} ({argv[0]}): {exc}", process=name) from None

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.pid}, returncode={self.popen.returncode})"

    @property
    def pid(self) -> int:
        """The process id (also its process-group id)."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited (negative: killed by that signal), else None."""
        return self.popen.poll()

    @property
    def running(self) -> bool:
        """Whether it has not exited yet."""
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """The exit status, waiting at most ``timeout`` seconds.

        Raises :class:`LaunchError` (with the log tail) when it is still
        running then; it keeps running, for :meth:`stop` to end.
        """
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LaunchError(
                f"{self.name} still running after {timeout:g} s",
                process=self.name,
                logs=self.tail(),
            ) from None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process itself (not its group), if it is still running.

        For tests of crash handling: ``send_signal(signal.SIGKILL)`` is a crash.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM its process group (if it is still running); returns at once."""
        self._signal_group(signal.SIGTERM)

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL its process group (if it is still running) and reap it."""
        self._signal_group(signal.SIGKILL)
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM its process group, SIGKILL it after ``timeout`` s; returns the exit status."""
        self.terminate()
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill(timeout)

    def _signal_group(self, sig: int) -> None:
        # Only while the process is not yet reaped: until then its id (which
        # is also its group's) cannot belong to anyone else.
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def read_log(self) -> str:
        """The whole log so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        """A header naming the process and its exit status, then its last ``lines`` log lines."""
        code = self.popen.poll()
        status = "running" if code is None else f"exit status {code}"
        text = self.read_log().splitlines()
        return f"--- {self.name} ({status}; {self.log}) ---\n" + "\n".join(text[-lines:])


def tails(processes: Iterable[Process], lines: int = TAIL_LINES) -> str:
    """The log tails of ``processes``, one after the other."""
    return "\n".join(p.tail(lines) for p in processes)
