"""The console's dead letter, workflow and bulk pages in a real browser against
``conveyor dev``: a dead letter replayed with a corrected payload, a workflow's diagram
drawn, and a filtered set of orders cancelled in bulk with the progress view following the
worker's job runner to the end."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.conftest import (
    LiveConsole,
    assert_clean_console,
    bad_payment_letter,
    browser_log,
    sign_in,
)
from tests.e2e.http_support import order_data

TIMEOUT = 20.0
PAYMENT = '{"payment_id": "p-7", "provider": "card"}'


def api(console: LiveConsole) -> httpx.Client:
    return httpx.Client(
        base_url=console.base,
        headers={"Authorization": f"Bearer {console.admin_key}"},
        timeout=10,
    )


def start_order(console: LiveConsole, business_key: str) -> dict[str, Any]:
    with api(console) as http:
        started = http.post(
            "/v1/workflows/order/instances",
            json={"business_key": business_key, "data": order_data(business_key)},
        )
    assert started.status_code == 201, started.text
    body: dict[str, Any] = started.json()
    return body


async def test_a_dead_letter_is_replayed_with_a_corrected_payload(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    key = f"DLB-{uuid.uuid4().hex[:8]}"
    instance = start_order(live_console, key)
    letter = await bad_payment_letter(live_console, key)

    sign_in(browser, live_console, live_console.admin_key)
    browser.get(live_console.url("/ui/dead-letters?status=pending&reason=invalid_payload"))
    browser.find_element(By.CSS_SELECTOR, f'a[href="/ui/dead-letters/{letter.id}"]').click()
    wait = WebDriverWait(browser, TIMEOUT)
    wait.until(ec.presence_of_element_located((By.ID, "replay-data")))
    assert browser.find_element(By.ID, "letter-status").text == "pending"
    assert '"provider": ""' in browser.find_element(By.ID, "message-value").text

    # Invalid JSON is refused on the page, and the edit is kept.
    editor = browser.find_element(By.ID, "replay-data")
    editor.clear()
    editor.send_keys('{"provider": ')
    browser.find_element(By.CSS_SELECTOR, "#replay-edited button[type=submit]").click()
    wait.until(ec.alert_is_present()).accept()
    error = wait.until(ec.presence_of_element_located((By.ID, "action-error")))
    assert "not valid JSON" in error.text
    assert browser.find_element(By.ID, "letter-status").text == "pending"
    browser_log(browser)  # the refusal's 422 is logged as a failed load: expected here

    editor = browser.find_element(By.ID, "replay-data")
    editor.clear()
    editor.send_keys(PAYMENT)
    browser.find_element(By.CSS_SELECTOR, "#replay-edited button[type=submit]").click()
    wait.until(ec.alert_is_present()).accept()
    outcome = wait.until(ec.presence_of_element_located((By.ID, "replay-outcome")))
    assert browser.find_element(By.ID, "letter-status").text == "replayed"
    assert "applied" in outcome.text
    assert "payment_pending" in outcome.text
    assert not browser.find_elements(By.ID, "actions")
    with api(live_console) as http:
        assert http.get(f"/v1/instances/{instance['id']}").json()["state"] == "payment_pending"
    assert_clean_console(browser)


def test_a_workflow_page_draws_its_diagram(browser: WebDriver, live_console: LiveConsole) -> None:
    sign_in(browser, live_console, live_console.read_key)
    browser.get(live_console.url("/ui/workflows"))
    browser.find_element(By.CSS_SELECTOR, 'a[href="/ui/workflows/warehouse.inbound"]').click()
    wait = WebDriverWait(browser, TIMEOUT)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#diagram svg")))
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("warehouse.inbound")
    assert browser.find_elements(By.CSS_SELECTOR, "#states tbody tr")
    assert_clean_console(browser)


def test_a_filtered_set_is_cancelled_in_bulk_and_the_progress_completes(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    prefix = f"BK{uuid.uuid4().hex[:6]}-"
    targets = [start_order(live_console, f"{prefix}{i}") for i in range(3)]
    other = start_order(live_console, f"X{prefix}0")

    sign_in(browser, live_console, live_console.admin_key)
    browser.get(live_console.url(f"/ui/instances?workflow=order&business_key_prefix={prefix}"))
    browser.find_element(By.LINK_TEXT, "Cancel or retry all matches…").click()
    wait = WebDriverWait(browser, TIMEOUT)
    count = wait.until(ec.presence_of_element_located((By.ID, "match-count")))
    assert count.text == "3"
    form = browser.find_element(By.ID, "bulk-cancel")
    form.find_element(By.NAME, "reason").send_keys("browser test")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    alert = wait.until(ec.alert_is_present())
    assert alert.text == "Cancel all 3 matching instances?"
    alert.accept()

    # The page polls the job's JSON while the worker's job runner applies it.
    wait.until(ec.text_to_be_present_in_element((By.ID, "job-status"), "completed"))
    assert browser.find_element(By.CSS_SELECTOR, "[data-done]").text == "3"
    assert browser.find_element(By.CSS_SELECTOR, "[data-total]").text == "3"
    bar = browser.find_element(By.TAG_NAME, "progress")
    assert bar.get_attribute("value") == bar.get_attribute("max") == "3"
    with api(live_console) as http:
        for made in targets:
            assert http.get(f"/v1/instances/{made['id']}").json()["status"] == "cancelled"
        assert http.get(f"/v1/instances/{other['id']}").json()["status"] == "active"
    assert_clean_console(browser)
