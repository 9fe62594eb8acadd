"""The web page in a real browser: headless Chromium (Debian's) driven by selenium.

``exectrack-consumer serve`` runs as a real process on a database with known rows
(tests/support/read.py). The test loads the list, filters by status through the
form (the URL changes), opens an execution, then writes a new execution through
the consumer's writer and sees it appear in the list without a reload. Screenshots
go to the test's temporary folder (their paths are printed).

Chromium and chromedriver come from Debian (``apt-get install chromium
chromium-driver``, .ci/run does it); selenium is given both paths and runs
offline (``SE_OFFLINE``), so nothing is downloaded. Without them the test skips,
saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.read import SEED, Run, free_port, seed, write_runs

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
needs_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="no Debian chromium/chromium-driver: apt-get install -y chromium chromium-driver",
)
CONSUMER = Path(sys.executable).with_name("exectrack-consumer")


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[str]:
    """``exectrack-consumer serve`` on a free loopback port; its base URL. Stopped after."""
    port = free_port()
    env = {**os.environ, "EXECTRACK_DATABASE__URL": database_url, "EXECTRACK_LOG_FORMAT": "json"}
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [str(CONSUMER), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not answer /healthz within 30 s"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must fetch nothing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1440,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: WebDriver, path: Path) -> None:
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


@needs_chromium
async def test_list_filter_detail_and_live_rows(
    db: AsyncEngine, served: str, browser: WebDriver, tmp_path: Path
) -> None:
    now: datetime = await seed(db)
    driver = browser
    wait = WebDriverWait(driver, 15)

    def rows() -> list[str]:
        found = driver.find_elements(By.CSS_SELECTOR, "#rows tr[data-execution]")
        return [str(row.get_attribute("data-execution")) for row in found]

    driver.get(served + "/")
    wait.until(lambda _: len(rows()) == len(SEED))
    assert set(rows()) == {run.execution_id for run in SEED}
    shoot(driver, tmp_path / "executions.png")

    # filter by status through the form: the URL carries the filter
    driver.find_element(By.CSS_SELECTOR, "input[name=status][value=failed]").click()
    driver.find_element(By.ID, "apply").click()
    wait.until(ec.url_contains("status=failed"))
    wait.until(lambda _: set(rows()) == {r.execution_id for r in SEED if r.status == "failed"})
    badges = driver.find_elements(By.CSS_SELECTOR, "#rows .badge")
    assert {b.text for b in badges} == {"failed"}

    # open an execution: its fields, provenance and error
    driver.find_element(By.LINK_TEXT, "exe-a3").click()
    wait.until(ec.url_contains("/execution?id=exe-a3"))
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "quota exceeded on the billing API" in body
    assert "exe-a3-9" in body  # the terminal event supplied the error
    shoot(driver, tmp_path / "execution.png")

    # the unfiltered list again; a new execution appears without a reload
    driver.get(served + "/")
    wait.until(lambda _: len(rows()) == len(SEED))
    driver.execute_script("window.stillTheSamePage = true")
    fresh = Run("exe-fresh", "daily-costs", "running", 0.1, records=5)
    await write_runs(db, (fresh,), now)
    WebDriverWait(driver, 20).until(lambda _: "exe-fresh" in rows())
    assert driver.execute_script("return window.stillTheSamePage === true")
    shoot(driver, tmp_path / "executions-live.png")

    for path, name in (("/report?id=daily-costs&window=24h", "report.png"),
                       ("/reports", "reports.png"), ("/attention", "attention.png")):  # fmt: skip
        driver.get(served + path)
        wait.until(ec.presence_of_element_located((By.TAG_NAME, "main")))
        shoot(driver, tmp_path / name)
    # the API's Swagger UI renders from the vendored bundle (no CDN)
    driver.get(served + "/docs")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .opblock")))
    shoot(driver, tmp_path / "docs.png")
