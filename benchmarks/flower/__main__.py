"""Run the null-training workload through Flower and Orchard, and print their ratio per case.

For each case (workload, clients) it starts, through :class:`orchard.launch.Launcher`
(every process stopped by its process group when the case ends, also on
errors): a SuperLink (``--insecure --disable-runtime-dependency-installation``,
loopback), N SuperNodes and ``flwr run`` of the app in ``benchmarks/flower/app``,
waits with bounds, reads the round times the ServerApp wrote, then runs the
same case with Orchard (:func:`benchmarks.rounds.run_case`). One JSON line per
case; docs/performance.md shows the table.

    make bench-flower            # or: python -m benchmarks.flower --cases mnist-cnn:2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import rounds
from orchard.launch import Launcher, free_port
from orchard.launch.process import LaunchError

APP = Path(__file__).resolve().parent / "app"
#: Flower's CLIs in its own environment.
FLOWER_BIN = Path(".venv-flower/bin")


def _wait_port(port: int, timeout: float, what: str, launcher: Launcher) -> None:
    """Wait (bounded) until something accepts connections on loopback ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in launcher.processes:
            if proc.returncode is not None:
                raise LaunchError(f"{proc.name} exited early", logs=launcher.tails())
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise LaunchError(
        f"{what} not listening on port {port} after {timeout:g} s", logs=launcher.tails()
    )


def run_flower_case(
    workload: rounds.Workload, clients: int, num_rounds: int, workdir: Path, timeout: float
) -> dict[str, Any]:
    """One case through Flower's deployment runtime; round times from the ServerApp."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()  # the processes run in it: every path must be absolute
    home = workdir / "flwr-home"
    home.mkdir(exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    bin_dir = FLOWER_BIN.resolve()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        # The SuperLink and SuperNodes start flower-superexec from PATH.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out = workdir / "times.json"
    size = "mnist-cnn" if workload.model == "mnist-cnn" else str(workload.parameters)
    started = time.monotonic()
    with Launcher(workdir) as launcher:
        launcher.start_process(
            "superlink",
            [
                str(bin_dir / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                # Flower's default state, in memory: with a file database its
                # SQLite answered concurrent replies with "database is locked"
                # (HTTP 500) and a reply was lost, measured with 8 SuperNodes.
            ],
            env=env,
            cwd=workdir,
        )
        _wait_port(port, 120.0, "SuperLink", launcher)
        for i in range(clients):
            launcher.start_process(
                f"supernode-{i}",
                [
                    str(bin_dir / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"partition-id={i} num-partitions={clients}",
                ],
                env=env,
                cwd=workdir,
            )
        config = (
            f'num-server-rounds={num_rounds} num-clients={clients} workload="{size}" out="{out}"'
        )
        run = launcher.start_process(
            "flwr-run",
            [str(bin_dir / "flwr"), "run", str(APP), "bench", "--stream", "--run-config", config],
            env=env,
            cwd=workdir,
        )
        deadline = time.monotonic() + timeout
        while not out.exists():
            if time.monotonic() > deadline:
                raise LaunchError(f"Flower did not finish in {timeout:g} s", logs=launcher.tails())
            if run.returncode is not None and not out.exists():
                # flwr run --stream ends when the run does, also when the ServerApp failed.
                raise LaunchError(
                    f"flwr run ended (status {run.returncode}) without round times",
                    logs=launcher.tails(),
                )
            time.sleep(0.5)
        time.sleep(0.5)  # the file is written in one call; let it close
        times = json.loads(out.read_text())
    measured = times["round_s"][1:]
    ends = times["finished_at"]
    cadence = [b - a for a, b in itertools.pairwise(ends)]
    return {
        "round_s": round(statistics.median(measured), 3),
        "cadence_s": round(statistics.median(cadence), 3),
        "wall_s": round(time.monotonic() - started, 1),
    }


def flower_version() -> str:
    """The flwr version in the Flower environment, read from its metadata."""
    site = next((FLOWER_BIN.resolve().parent / "lib").glob("python3*/site-packages"), None)
    if site is not None:
        for meta in site.glob("flwr-*.dist-info"):
            return meta.name.removeprefix("flwr-").removesuffix(".dist-info")
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Each case with Flower, then with Orchard; one JSON line per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="mnist-cnn:2,mnist-cnn:8,11.2m:8")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per case, first a warm-up")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound per Flower case (s)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-flower"))
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every Launcher stops the processes it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not (FLOWER_BIN / "flwr").exists():
        print(
            "Flower is not installed: run `make bench-flower` (it makes .venv-flower)",
            file=sys.stderr,
        )
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    version = flower_version()
    for workload, clients in rounds.parse_cases(args.cases):
        name = f"{workload.name}-{clients}"
        line: dict[str, Any] = {"workload": workload.name, "clients": clients}
        try:
            flower = run_flower_case(
                workload, clients, args.rounds, workdir / f"flower-{name}", args.timeout
            )
        except LaunchError as exc:
            flower = {"error": str(exc).splitlines()[0]}
        orchard = rounds.run_case(workload, clients, args.rounds, workdir / f"orchard-{name}")
        line["flower"] = {"version": version, **flower}
        line["orchard"] = {k: orchard[k] for k in ("round_s", "cadence_s", "server_peak_rss_mb")}
        if "round_s" in flower:
            line["flower_over_orchard_round"] = round(flower["round_s"] / orchard["round_s"], 1)
            if orchard["cadence_s"]:
                line["flower_over_orchard_cadence"] = round(
                    flower["cadence_s"] / orchard["cadence_s"], 1
                )
        line["load_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
