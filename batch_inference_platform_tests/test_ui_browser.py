"""The Dagster UI in a real browser (headless Chromium from Debian's packages, driven by
Selenium through Debian's chromedriver) after ONE run over a range of two days.

The two days have different row counts; the predictions asset's partitions view must show each
day's own ``dagster/row_count`` (not the range's total), and the ``row_count_matches_validated``
check must show an evaluation for each day with that day's figures. The expected counts are
read from the prediction table itself, so the test asserts what the lake holds.

Chromium and chromedriver come from ``.ci/chromium`` (``make test`` runs it); where they are
missing the test runs that script, and skips only if they cannot be installed here (never under
CI, where it fails instead).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions

from .conftest import (
    CREDIT,
    DAY_A,
    DAY_B,
    ENV,
    Platform,
    failure_messages,
    read_day,
    write_deployment,
)
from .servers import REPO, answers_http, free_port, process_serving

ROWS = {DAY_A: 1000, DAY_B: 1700}
"""Generated rows per day: different, so a range total or the other day's count is wrong."""
CHECK = "row_count_matches_validated"
WAIT = 60
"""Seconds the browser waits for an element (the webserver loads the code location lazily)."""
VIEWPORT = (1400, 900)

pytestmark = pytest.mark.timeout(300)


@dataclass
class UI:
    """The webserver on the platform's instance, and what the lake says each day holds."""

    url: str
    predicted_rows: dict[dt.date, int]


def chromium_binaries() -> tuple[str, str]:
    """Debian's chromium and chromedriver; installed by ``.ci/chromium`` when missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    installed = subprocess.run(
        ["bash", str(REPO / ".ci" / "chromium")], capture_output=True, text=True, check=False
    )
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    reason = f"chromium/chromedriver missing and .ci/chromium failed: {installed.stderr[-500:]}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def prepare_instance(home: Path) -> dg.DagsterInstance:
    """A persistent (sqlite) instance the webserver shares: telemetry off, and the UI's
    first-visit dialog marked as seen (Dagster keeps that in ``$DAGSTER_HOME/.nux``) so it
    covers nothing."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    return dg.DagsterInstance.local_temp(str(home))


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """Features for two days (1,000 and 1,700 rows), the demo model, ONE scoring run over
    both days; then ``dagster-webserver`` on the same instance and deployments."""
    chromium_binaries()  # before the minute of setup: skip or fail early
    root = tmp_path_factory.mktemp("ui_browser")
    data = root / "data"
    data.mkdir()
    folder = root / "deployments"
    write_deployment(folder, CREDIT, {})
    env = {
        ENV + "DATA_DIR": str(data),
        ENV + "LAKE__ROOT": str(data / "lake"),
        ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow.db",
        ENV + "MLFLOW__REGISTRY_URI": "",
        ENV + "MLFLOW__ARTIFACT_ROOT": str(data / "artifacts"),
        ENV + "DEPLOYMENTS_DIR": str(folder),
        ENV + "API__INBOX_URL": f"sqlite:///{data}/inbox.db",
        ENV + "API__JOBS_URL": f"sqlite:///{data}/jobs.db",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = load_settings()
    home = root / "dagster_home"
    instance = prepare_instance(home)
    try:
        platform = Platform(root, settings, build_definitions(settings), instance)
        for day, rows in ROWS.items():
            assert platform.generate(day, rows=rows).success
        assert platform.train().success
        scored = platform.score_range(DAY_A, DAY_B)
        assert scored.success, failure_messages(scored)
        predicted = {day: read_day(platform.predictions, day).num_rows for day in ROWS}
        assert predicted[DAY_A] != predicted[DAY_B] and all(predicted.values()), predicted

        port = free_port()
        command = [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-m",
            "batch_inference_platform.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        url = f"http://127.0.0.1:{port}"
        with process_serving(
            command,
            answers_http(url + "/server_info"),
            log=root / "webserver.log",
            env={**env, "DAGSTER_HOME": str(home)},
            cwd=REPO,
            timeout=120,
        ):
            yield UI(url, predicted)
    finally:
        instance.dispose()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fixed 1400x900 viewport."""
    binary, driver_path = chromium_binaries()
    yield from open_browser(binary, driver_path)


def open_browser(binary: str, driver_path: str) -> Iterator[webdriver.Chrome]:
    """A headless Chromium session (ended afterwards); the driver is Debian's, never a
    download (Selenium Manager is not consulted when the driver's path is given)."""
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        width, height = VIEWPORT
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, xpath: str, what: str) -> WebElement:
    """The element at ``xpath`` once it is visible; fails naming ``what`` and the page text."""
    try:
        return WebDriverWait(driver, WAIT).until(
            ec.visibility_of_element_located((By.XPATH, xpath))
        )
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text[-3000:]
        raise AssertionError(f"{what} did not appear at {driver.current_url}:\n{text}") from None


def number(text: str) -> int | None:
    """An integer as the UI prints it ("1,695" or "1695"); None for anything else."""
    cleaned = text.strip().replace(",", "")
    return int(cleaned) if cleaned.isdigit() else None


def mentions(text: str, count: int) -> bool:
    """``text`` shows ``count`` as a whole number, with or without thousands separators."""
    return any(number(token) == count for token in re.findall(r"\d[\d,]*", text))


def open_partition(driver: webdriver.Chrome, url: str, day: dt.date) -> None:
    """The predictions asset's Partitions tab, the list filtered by ``day``'s name, the day
    clicked (again while the list re-renders) until the page says it is selected."""
    driver.get(f"{url}/assets/{CREDIT}/predictions?view=partitions")
    name_filter = "//input[contains(@placeholder, 'Filter by name')]"
    wait_for(driver, name_filter, "the partition filter").send_keys(day.isoformat())
    day_xpath = f"//*[@title='{day.isoformat()}']/span"  # in the list, not the range's ends
    wait_for(driver, day_xpath, f"partition {day} in the list")

    def selected(driver: webdriver.Chrome) -> bool:
        if f"partition={day.isoformat()}" in driver.current_url:
            return True
        with suppress(StaleElementReferenceException, ElementClickInterceptedException):
            driver.find_element(By.XPATH, day_xpath).click()
        return False

    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.5).until(selected)
    except TimeoutException:
        raise AssertionError(f"could not select {day} at {driver.current_url}") from None


def shown_row_count(driver: webdriver.Chrome, day: dt.date) -> str:
    """The ``dagster/row_count`` value in the selected partition's metadata table (none is
    shown before a partition is selected: the page was opened afresh)."""
    cell = wait_for(
        driver,
        "//tr[td[1][normalize-space()='dagster/row_count']]/td[2]",
        f"dagster/row_count of partition {day}",
    )
    return cell.text


def test_each_partition_shows_its_own_row_count(ui: UI, browser: webdriver.Chrome) -> None:
    total = sum(ui.predicted_rows.values())
    for day, rows in ui.predicted_rows.items():
        open_partition(browser, ui.url, day)
        assert f"partition={day.isoformat()}" in browser.current_url
        shown = shown_row_count(browser, day)
        assert number(shown) == rows, (
            f"{day}: the UI shows dagster/row_count {shown!r}; that day holds {rows:,} "
            f"predictions (the range's total is {total:,})"
        )


def test_the_row_count_check_shows_each_days_figures(ui: UI, browser: webdriver.Chrome) -> None:
    browser.get(f"{ui.url}/assets/{CREDIT}/predictions?view=checks&checkDetail={CHECK}")
    wait_for(browser, f"//*[normalize-space()='{CHECK}']", "the check's name")
    wait_for(browser, "//*[normalize-space(text())='Execution history']", "history tab").click()
    first = wait_for(browser, "//table/tbody/tr[td]", "the check's execution history")
    assert first.is_displayed()
    rows = [row.text for row in browser.find_elements(By.XPATH, "//table/tbody/tr[td]")]
    for day, count in ui.predicted_rows.items():
        own = [text for text in rows if day.isoformat() in text]
        assert own, f"no evaluation of {CHECK} for {day} in its execution history: {rows}"
        assert mentions(own[0], count), (  # the newest first
            f"the evaluation of {CHECK} for {day} does not show the day's {count:,} rows: {own}"
        )
