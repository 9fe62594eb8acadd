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
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
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

from tests.support.read import (
    SEED,
    Run,
    free_port,
    hostile_runs,
    huge_duration,
    seed,
    write_events,
    write_runs,
)

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


BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value: str) -> str:
    """What the page must show for ``value``: each bidi control as ``⟨U+XXXX⟩``."""
    return BIDI.sub(lambda m: f"\u27e8U+{ord(m.group()):04X}\u27e9", value)


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


CLICKED = ("zz/../one-only", "a/b/../c", "..", ".", "%", "?x=1", "#top", "team/daily costs",
           "<script>alert(1)</script>", "café/日本語/😀", "bidi\u202egnp.exe")  # fmt: skip


@needs_chromium
async def test_clicking_a_hostile_id_opens_its_own_page(
    db: AsyncEngine, served: str, browser: WebDriver, tmp_path: Path
) -> None:
    """Click each hostile row of the list: the browser lands on THAT execution's page
    (never a decoy's, never a 404), and its report link on its report."""
    await write_runs(db, hostile_runs(), datetime.now(UTC).replace(microsecond=0))
    driver = browser
    wait = WebDriverWait(driver, 15)
    click_row = """
        const row = Array.from(document.querySelectorAll('#rows tr[data-execution]'))
            .find(r => r.dataset.execution === arguments[0]);
        if (!row) return false;
        row.querySelector(arguments[1]).click();
        return true;"""
    for number, execution_id in enumerate(CLICKED):
        for kind, selector, element in (("execution", "td:first-child a", "execution-id"),
                                        ("report", "td:nth-child(2) a", "report-id")):  # fmt: skip
            driver.get(served + "/?limit=100")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rows tr[data-execution]"))
            assert driver.execute_script(click_row, execution_id, selector), execution_id
            wait.until(ec.presence_of_element_located((By.ID, element)))
            title = driver.find_element(By.ID, element).text
            assert title == visible(execution_id), (kind, execution_id, driver.current_url)
            assert f"/{kind}?id=" in driver.current_url
            if execution_id.startswith(("zz/", "<script>", "bidi")):
                shoot(driver, tmp_path / f"hostile-{kind}-{number}.png")
    # the list itself: a right-to-left override is shown as ⟨U+202E⟩, not obeyed
    driver.get(served + "/?limit=100")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rows tr[data-execution]"))
    assert "bidi\u27e8U+202E\u27e9gnp.exe" in driver.find_element(By.ID, "rows").text
    shoot(driver, tmp_path / "hostile-list.png")


@needs_chromium
async def test_a_huge_duration_fits_its_card_and_the_chart(
    db: AsyncEngine, served: str, browser: WebDriver, tmp_path: Path
) -> None:
    """duration_ms = 2**63 - 1: every card keeps its text inside; the y labels are short."""
    now = datetime.now(UTC).replace(microsecond=0)
    await write_events(db, huge_duration(now))
    driver = browser
    driver.get(served + "/report?id=huge")
    WebDriverWait(driver, 15).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#chart .u-axis")  # uPlot drew
    )
    overflowing = driver.execute_script(
        "return Array.from(document.querySelectorAll('.stat')).filter("
        "s => s.scrollWidth > s.clientWidth + 1).map(s => s.textContent.trim())"
    )
    assert overflowing == []
    cards = {c.text.split("\n")[0]: c.text.split("\n")[1]
             for c in driver.find_elements(By.CSS_SELECTOR, ".stat")}  # fmt: skip
    assert (cards["LONGEST"], cards["RECORDS"]) == ("> 1 year", "\u2013")
    labels = [v.text for v in driver.find_elements(By.CSS_SELECTOR, "#chart .u-axis .u-label")]
    labels += driver.execute_script(
        "return Array.from(document.querySelectorAll('#chart .u-axis')).map(a => a.textContent)"
    )
    assert not any("AM" in x or "PM" in x or "/" in x for x in labels), labels
    shoot(driver, tmp_path / "report-huge.png")
