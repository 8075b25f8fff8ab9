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

from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.command import Command
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.dead_letters import DeadLetterRecord
from tests.dead_letter_support import cloud_event, dead_letter, stored
from tests.e2e.http_support import Keys
from tests.live_support import (
    LiveConsole,
    console_keys,
    console_settings,
    serve_dev,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)

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


async def bad_payment_letter(console: LiveConsole, business_key: str) -> DeadLetterRecord:
    """A pending ``invalid_payload`` dead letter (a payment.initiated with an empty
    provider) for ``business_key``, recorded as the worker records one."""
    db = create_engine(console.settings, pool_size=1)
    try:
        return await stored(
            db,
            dead_letter(
                f"{console.settings.topic_prefix}.in",
                cloud_event(
                    f"ev-{business_key}", "payment.initiated", business_key, {"provider": ""}
                ),
                "invalid_payload",
            ),
        )
    finally:
        await db.dispose()


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


@pytest.fixture(scope="module")
def live_console(
    console_settings: Settings, console_keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveConsole]:
    """``conveyor dev`` for the test module, stopped (SIGTERM) afterwards."""
    folder = tmp_path_factory.mktemp("conveyor-dev")
    with serve_dev(console_settings, console_keys, folder, "workflows,tests.browser.flows") as live:
        yield live


__all__ = ["LiveConsole", "console_keys", "console_settings"]  # fixtures and types from there
