"""Observability end to end: a real server with its web view, real clients, a real browser.

The server runs as a process with ``web_port`` set; numpy clients train a
logistic regression. The tests scrape ``/metrics`` while rounds run, call
``orchard-server status``, read the JSON logs, and drive the federation page
in headless Chromium (Debian's, through Selenium and /usr/bin/chromedriver):
the chart gains a point when a round completes. With
``ORCHARD_SCREENSHOT_DIR`` set, the browser test saves the pages there
(docs/images holds the ones the docs show).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchard.launch import ClientOptions, Launcher, Process, free_port
from orchard.messages import FederationState
from orchard_server.status import fetch_status, format_status
from tests.server.test_e2e import federation
from tests.server.test_web import samples

pytestmark = pytest.mark.slow

CHROMEDRIVER = Path("/usr/bin/chromedriver")


class Observed:
    """A server with its web view on a free port, and helpers to read it."""

    def __init__(self, launcher: Launcher, tmp: Path, **fed: Any) -> None:
        self.launcher = launcher
        self.web_port = free_port()
        config = {
            "server": {
                "insecure": True,
                "heartbeat_interval": 0.5,
                "heartbeat_timeout": 5.0,
                "max_poll_seconds": 2.0,
                "web_port": self.web_port,
                "tensorboard_dir": str(tmp / "tb"),
            },
            "federations": {
                "blobs": federation(
                    min_fit_clients=2, min_evaluate_clients=2, min_available_clients=2, **fed
                )
            },
        }
        self.server = launcher.start_server(config, linger=3.0, args=["--log-format", "json"])
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.clients: list[Process] = []

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            body: bytes = response.read()
        return body.decode()

    def start_clients(self, n: int = 2) -> None:
        for i in range(n):
            options = ClientOptions(federation="blobs", name=f"client-{i}")
            self.clients.append(self.launcher.start_client("numpy", options))

    def until(self, what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.launcher.tails()}")
            time.sleep(0.1)


@pytest.fixture
def observed(launcher: Launcher, tmp_path: Path) -> Callable[..., Observed]:
    def make(**fed: Any) -> Observed:
        return Observed(launcher, tmp_path, **fed)

    return make


def test_metrics_status_and_json_logs_during_a_run(
    observed: Callable[..., Observed], launcher: Launcher, tmp_path: Path
) -> None:
    cluster = observed(num_rounds=4)
    address = cluster.server.address
    (waiting,) = fetch_status(address, insecure=True)
    assert waiting.state is FederationState.WAITING and waiting.clients == ()
    assert json.loads(cluster.get("/api/federations"))["federations"][0]["state"] == "waiting"
    cluster.start_clients(2)

    def scraped() -> dict[Any, float]:
        return samples(cluster.get("/metrics"))

    fed = (("federation", "blobs"),)
    cluster.until(
        "a round in /metrics",
        lambda: scraped().get(("orchard_rounds_completed_total", fed), 0) >= 1,
    )
    during = scraped()
    assert (
        during[("orchard_connected_clients", (("federation", "blobs"), ("role", "trainer")))] == 2
    )
    assert during[("orchard_sent_bytes_total", fed)] > 0
    assert during[("orchard_received_bytes_total", fed)] > 0
    assert (
        during[
            (
                "orchard_phase_duration_seconds_count",
                (("federation", "blobs"), ("phase", "training")),
            )
        ]
        >= 1
    )
    for stage in ("sending", "waiting_for_training", "receiving"):  # per client, per task
        key = (
            "orchard_client_stage_duration_seconds_count",
            (("federation", "blobs"), ("stage", stage)),
        )
        assert during[key] >= 2, stage  # two clients answered round 1
    assert during[("orchard_last_loss", (("federation", "blobs"), ("kind", "distributed")))] > 0
    (running,) = fetch_status(address, insecure=True)
    assert {c.display_name for c in running.clients} == {"client-0", "client-1"}
    assert "blobs: logreg, fedavg" in format_status([running])
    histories = launcher.wait(120)
    assert len(histories["blobs"]["rounds"]) == 4
    events = [
        json.loads(line)
        for line in (tmp_path / "server.log").read_text().splitlines()
        if line.startswith("{")
    ]
    rounds = [e for e in events if e.get("round") is not None]
    assert rounds and all(e["federation"] == "blobs" for e in rounds)
    assert {e["round"] for e in rounds} == {1, 2, 3, 4}
    joins = [e for e in events if "joined as" in e["message"]]
    assert len(joins) == 2 and all(e["client"].startswith("c-") for e in joins)
    assert list((tmp_path / "tb" / "blobs").glob("events.out.tfevents.*"))


@pytest.mark.skipif(
    not CHROMEDRIVER.exists() or shutil.which("chromium") is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_the_page_shows_the_federation_and_its_chart_grows(
    observed: Callable[..., Observed], launcher: Launcher
) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shows(by: str, selector: str, *words: str) -> Callable[[Any], bool]:
        """A wait condition: the element (found afresh: the pages redraw) shows ``words``."""
        return lambda d: all(w in d.find_element(by, selector).text for w in words)

    # More rounds than the test waits for: the server stays up while the page is read.
    cluster = observed(num_rounds=8)
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    shots = (
        Path(os.environ["ORCHARD_SCREENSHOT_DIR"])
        if os.environ.get("ORCHARD_SCREENSHOT_DIR")
        else None
    )
    try:
        wait = WebDriverWait(
            driver,
            60,
            poll_frequency=0.2,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        driver.get(cluster.base + "/")
        wait.until(shows(By.CSS_SELECTOR, "tr[data-federation='blobs']", "logreg", "waiting"))
        driver.get(cluster.base + "/federations/blobs")
        wait.until(shows(By.ID, "state", "waiting"))
        chart = driver.find_element(By.ID, "loss-chart")
        assert chart.get_attribute("data-points") == "0"
        cluster.start_clients(2)
        wait.until(lambda d: int(chart.get_attribute("data-points") or 0) >= 1)
        wait.until(shows(By.ID, "clients", "client-0", "client-1"))
        wait.until(shows(By.ID, "timeline", "training"))
        wait.until(lambda d: int(chart.get_attribute("data-points") or 0) >= 3)
        if shots is not None:  # the pages while the federation runs
            shots.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(shots / "web-federation.png"))
            driver.get(cluster.base + "/")
            wait.until(shows(By.ID, "federations", "trainer"))
            driver.save_screenshot(str(shots / "web-index.png"))

    except Exception as exc:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{exc!r}\npage:\n{body}\n{cluster.launcher.tails()}") from exc
    finally:
        driver.quit()
