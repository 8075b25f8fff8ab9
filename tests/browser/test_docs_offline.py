"""``/docs``: Swagger UI on the API's OpenAPI document, rendered in a real browser that
can reach nothing but this machine."""

from __future__ import annotations

import re

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from api.console.assets import DOCS_CSP
from tests.browser.conftest import LiveConsole, assert_clean_console, browser_log

RENDER_TIMEOUT = 20.0
REFERENCES = re.compile(r'(?:src|href)="([^"]+)"')


def test_docs_render_swagger_ui_offline_with_no_console_errors(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    browser.get(live_console.url("/docs"))
    WebDriverWait(browser, RENDER_TIMEOUT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock"))
    )
    paths = {
        element.get_attribute("data-path")
        for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert "/v1/workflows/{name}/instances" in paths
    assert "/v1/instances/{instance_id}/events" in paths
    assert browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("Conveyor")
    assert_clean_console(browser)


def test_an_operation_opens_and_shows_its_responses(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    browser.get(live_console.url("/docs"))
    wait = WebDriverWait(browser, RENDER_TIMEOUT)
    summary = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-workflows-startInstance"))
    )
    summary.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#operations-workflows-startInstance .responses-table")
        )
    )
    assert_clean_console(browser)


def test_the_docs_page_has_a_strict_csp_and_loads_only_this_origins_files(
    live_console: LiveConsole,
) -> None:
    with httpx.Client(base_url=live_console.base, timeout=10) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == DOCS_CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text  # no inline script: the CSP would refuse it
        references = REFERENCES.findall(page.text)
        assert len(references) >= 4
        for reference in references:
            assert reference.startswith("/ui/static/"), reference
            assert http.get(reference).status_code == 200, reference
        spec = http.get("/docs/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["info"]["title"] == "Conveyor"


def test_the_browser_reaches_nothing_beyond_this_machine(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    """The harness itself: what passes here would pass without internet access."""
    fetch = """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {mode: "no-cors"}).then(() => done("reached"), () => done("failed"));
    """
    browser.get(live_console.url("/health"))  # a page without a CSP: only the harness stops it
    assert browser.execute_async_script(fetch, live_console.url("/ready")) == "reached"
    assert browser.execute_async_script(fetch, "https://cdn.jsdelivr.net/npm/") == "failed"
    browser_log(browser)  # the failed loads are expected here
