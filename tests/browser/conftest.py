"""Browser tests: a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
which ``make test`` installs) driving a real ``conveyor dev`` process (API and worker).

The browser reaches nothing but this machine: every host name other than the loopback
addresses fails to resolve, and every request not to loopback goes to a proxy on the
discard port, where nothing answers. A page that needs a CDN or any outside file fails
here as it would on an operator's network without internet.

Fixtures:

- ``chromium``: the session's WebDriver (1280x900, headless).
- ``browser``: the same driver for one test, with no cookies and an empty console log.
- ``live_console``: a ``conveyor dev`` process on a free port serving a fresh schema for
  the test module, with API keys of each scope (:class:`LiveConsole`); it loads the
  commerce workflows and ``tests.browser.flows`` (a label desk whose action can be made
  to fail).

Helpers: :func:`sign_in` (through the login form), :func:`browser_log` (what the page
printed to its console) and :func:`assert_clean_console` (no JavaScript error, no
Content-Security-Policy violation).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.command import Command
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import text

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import upgrade
from tests.browser.flows import FAULT_DIR_VARIABLE
from tests.conftest import unique
from tests.e2e.http_support import Keys, free_port, make_keys, process_env, wait_until_serving

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

OFFLINE_ARGUMENTS = (
    # No name resolves but the loopback ones...
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    # ...and a request to an address goes to a dead proxy (loopback is never proxied).
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1;localhost;[::1]",
    # Chromium's own calls home (updates, sync, translation, field trials) stay off too.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--no-first-run",
)


def chromium_options() -> webdriver.ChromeOptions:
    """Headless Chromium for tests: fixed window, offline, the page's console recorded."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *OFFLINE_ARGUMENTS,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


@pytest.fixture(scope="session")
def chromium() -> Iterator[WebDriver]:
    """One headless Chromium for the session (starting one costs about a second)."""
    # With both paths given, Selenium looks nothing up and downloads nothing.
    driver = webdriver.Chrome(
        options=chromium_options(), service=Service(executable_path=CHROMEDRIVER)
    )
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[WebDriver]:
    """The session's browser for one test: no cookies (every test's server shares the
    host 127.0.0.1), a blank page and an empty console log to start with."""
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.get("about:blank")
    browser_log(chromium)
    yield chromium
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})


def sign_in(driver: WebDriver, console: LiveConsole, key: str, *, timeout: float = 20.0) -> None:
    """Sign in through the login form and wait for the overview; the page's console log
    is emptied (the sign-in's own entries, such as the browser's favicon request)."""
    driver.get(console.url("/ui/login"))
    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, timeout).until(ec.url_contains("/ui/overview"))
    browser_log(driver)


def browser_log(driver: WebDriver) -> list[dict[str, Any]]:
    """The page console's entries since the last call (``level``, ``message``, ``source``)."""
    # ChromiumDriver.get_log, on any WebDriver type (the command is Chromium's).
    entries: list[dict[str, Any]] = driver.execute(Command.GET_LOG, {"type": "browser"})["value"]
    return entries


def assert_clean_console(driver: WebDriver) -> None:
    """No JavaScript error, failed load or Content-Security-Policy violation was logged
    since the last look at the log."""
    bad = [
        entry
        for entry in browser_log(driver)
        if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]
    ]
    assert not bad, "the browser's console shows errors:\n" + "\n".join(
        f"{entry['level']} {entry['message']}" for entry in bad
    )


@dataclass(frozen=True)
class LiveConsole:
    """A running ``conveyor dev`` (API and worker) on its own schema."""

    base: str
    """The base URL, e.g. ``http://127.0.0.1:40123``."""
    keys: Keys
    settings: Settings
    log: Path
    """The process's output (its JSON logs)."""
    fault_dir: Path
    """Where a marker file named after a ``test.label_desk`` key makes its action fail."""

    @property
    def admin_key(self) -> str:
        return self.keys.admin

    @property
    def read_key(self) -> str:
        return self.keys.read

    @property
    def write_key(self) -> str:
        return self.keys.write

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (e.g. ``/ui/overview``)."""
        return f"{self.base}{path}"


@pytest.fixture(scope="module")
async def console_settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Settings with a fresh, migrated schema and unique topics for the test module."""
    schema = unique("b")
    isolated = base_settings.model_copy(
        update={
            "database_schema": schema,
            "topic_prefix": unique("conveyor"),
            "consumer_group": unique("group"),
        }
    )
    await upgrade(isolated)
    yield isolated
    admin = create_engine(base_settings, pool_size=1)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'drop schema if exists "{schema}" cascade'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="module")
async def console_keys(console_settings: Settings) -> Keys:
    return await make_keys(console_settings)


@pytest.fixture(scope="module")
def live_console(
    console_settings: Settings, console_keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveConsole]:
    """``conveyor dev`` for the test module, stopped (SIGTERM) afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("conveyor-dev")
    log = folder / "output.log"
    fault_dir = folder / "faults"
    fault_dir.mkdir()
    env = process_env(
        console_settings,
        port,
        CONVEYOR_WORKFLOW_MODULES="workflows,tests.browser.flows",
        **{FAULT_DIR_VARIABLE: str(fault_dir)},
    )
    with log.open("wb") as out:
        # The output goes to a file: a pipe nobody reads would block a chatty server.
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "dev"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(proc, base, log, START_TIMEOUT)
        yield LiveConsole(base, console_keys, console_settings, log, fault_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
