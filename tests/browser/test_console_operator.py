"""The operator's first minutes in a real browser against ``conveyor dev``: signing in
(a wrong key refused, the page asked for reached after), finding an order by its business
key from the search box, retrying an instance that failed in the worker, and what a
read-only key is shown (no action anywhere)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
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
WIDE_ELEMENTS = """
const width = document.documentElement.clientWidth;
return [...document.querySelectorAll("main *")]
  .filter((el) => el.getBoundingClientRect().right > width
    && el.parentElement.getBoundingClientRect().right <= width)
  .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className}`);
"""
"""The outermost elements that stick out to the right (to say what overflows)."""
ACTION_FORMS = ("form[data-event]", "#cancel-form", "#move-form", "#retry-form")


def api(console: LiveConsole, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=console.base,
        headers={"Authorization": f"Bearer {key or console.admin_key}"},
        timeout=10,
    )


def start(console: LiveConsole, workflow: str, business_key: str, data: Any) -> str:
    with api(console) as http:
        started = http.post(
            f"/v1/workflows/{workflow}/instances", json={"business_key": business_key, "data": data}
        )
    assert started.status_code == 201, started.text
    instance_id: str = started.json()["id"]
    return instance_id


def instance(console: LiveConsole, instance_id: str) -> dict[str, Any]:
    with api(console) as http:
        got = http.get(f"/v1/instances/{instance_id}")
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


def test_sign_in_refuses_a_wrong_key_then_finds_an_order_by_its_key(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    key = f"FIND-{uuid.uuid4().hex[:8]}"
    wanted = start(live_console, "order", key, order_data(key))
    start(live_console, "order", f"OTHER-{uuid.uuid4().hex[:8]}", order_data("other"))
    wait = WebDriverWait(browser, TIMEOUT)

    # A page asked for without a session leads to the sign-in, and back to it after.
    browser.get(live_console.url("/ui/workflows"))
    wait.until(ec.url_contains("/ui/login"))
    browser.find_element(By.ID, "api-key").send_keys("cv_not-a-key")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    refusal = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.error[role=alert]")))
    assert refusal.text == "That API key is not valid."
    assert not browser.get_cookies()
    browser_log(browser)  # the refusal's 401 is logged as a failed load: expected here
    browser.find_element(By.ID, "api-key").send_keys(live_console.read_key)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(ec.url_contains("/ui/workflows"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Workflows"
    cookie = browser.get_cookie("conveyor_console")
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert live_console.read_key not in browser.current_url

    # The search box in the header: type the key, press Enter, open the one match.
    search = browser.find_element(By.ID, "find-key")
    search.send_keys(key, Keys.ENTER)
    wait.until(ec.url_contains("business_key_prefix="))
    rows = browser.find_elements(By.CSS_SELECTOR, "#instances tbody tr a")
    assert [row.text for row in rows] == [key]
    rows[0].click()
    wait.until(ec.url_contains(f"/ui/instances/{wanted}"))
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith(key)
    assert browser.find_element(By.ID, "state").text == "placed"
    # Times read in the browser's zone; the UTC time stays on hover.
    times = browser.find_elements(By.CSS_SELECTOR, "time[datetime]")
    assert times
    for shown in times:
        utc = shown.get_attribute("datetime") or ""
        assert shown.get_attribute("title") == utc
        assert shown.text
        assert shown.text != utc
    assert_clean_console(browser)


def test_a_failed_instance_is_retried_from_its_page(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    key = f"DESK-{uuid.uuid4().hex[:8]}"
    marker = live_console.fault_dir / key
    marker.touch()  # the label printer is offline for this parcel
    instance_id = start(live_console, "test.label_desk", key, {"key": key})
    with api(live_console) as http:
        sent = http.post(
            f"/v1/instances/{instance_id}/events",
            json={"type": "label.print", "payload": {"label": "TRACK-1"}},
        )
    assert sent.status_code == 202, sent.text  # accepted, and its action failed
    assert sent.json()["outcome"]["status"] == "failed"
    assert instance(live_console, instance_id)["status"] == "failed"

    sign_in(browser, live_console, live_console.admin_key)
    browser.get(live_console.url(f"/ui/instances/{instance_id}"))
    assert browser.find_element(By.ID, "status").text == "failed"
    assert "label printer offline" in browser.find_element(By.ID, "error").text

    marker.unlink()  # the printer is back
    form = browser.find_element(By.ID, "retry-form")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait = WebDriverWait(browser, TIMEOUT)
    alert = wait.until(ec.alert_is_present())
    assert alert.text == f"Retry the failed step of {key}?"
    alert.accept()

    done = wait.until(ec.presence_of_element_located((By.ID, "done")))
    assert "Retried: the step that failed was applied." in done.text
    assert browser.find_element(By.ID, "status").text == "active"
    assert browser.find_element(By.ID, "state").text == "printed"
    assert browser.find_elements(By.CSS_SELECTOR, "#history .outcome-retried")
    assert not browser.find_elements(By.ID, "retry-form")
    got = instance(live_console, instance_id)
    assert (got["state"], got["status"], got["data"]["label"]) == ("printed", "active", "TRACK-1")
    assert_clean_console(browser)


async def test_a_read_only_key_is_shown_no_action(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    key = f"RO-{uuid.uuid4().hex[:8]}"
    instance_id = start(live_console, "order", key, order_data(key))
    letter = await bad_payment_letter(live_console, key)

    sign_in(browser, live_console, live_console.read_key)
    assert browser.find_element(By.CSS_SELECTOR, ".who .scopes").text == "read"

    browser.get(live_console.url(f"/ui/instances/{instance_id}"))
    assert browser.find_element(By.ID, "state").text == "placed"
    for css in ACTION_FORMS:
        assert not browser.find_elements(By.CSS_SELECTOR, css), css
    browser.get(live_console.url(f"/ui/instances?workflow=order&business_key_prefix={key}"))
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#instances tbody a")] == [key]
    assert not browser.find_elements(By.PARTIAL_LINK_TEXT, "Cancel or retry all")
    browser.get(live_console.url(f"/ui/dead-letters/{letter.id}"))
    assert browser.find_element(By.ID, "letter-status").text == "pending"
    assert not browser.find_elements(By.ID, "actions")
    assert not browser.find_elements(By.CSS_SELECTOR, "main form")
    assert_clean_console(browser)

    # A key with the write scope may send events, and still not cancel, retry or move.
    sign_in(browser, live_console, live_console.write_key)
    browser.get(live_console.url(f"/ui/instances/{instance_id}"))
    assert browser.find_elements(By.CSS_SELECTOR, "form[data-event]")
    for css in ACTION_FORMS[1:]:
        assert not browser.find_elements(By.CSS_SELECTOR, css), css
    assert instance(live_console, instance_id)["revision"] == 1


def test_pages_fit_1280_pixels_and_the_keyboard_reaches_every_action(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    key = f"KB-{uuid.uuid4().hex[:8]}"
    instance_id = start(live_console, "order", key, order_data(key))
    sign_in(browser, live_console, live_console.admin_key)
    assert browser.get_window_size()["width"] == 1280
    for path in (
        "/ui/overview",
        "/ui/instances",
        f"/ui/instances/{instance_id}",
        "/ui/dead-letters",
        "/ui/workflows",
        "/ui/workflows/order",
    ):
        browser.get(live_console.url(path))
        WebDriverWait(browser, TIMEOUT).until(
            lambda d: all(
                block.get_attribute("data-rendered")
                for block in d.find_elements(By.CSS_SELECTOR, "pre.mermaid")
            )
        )
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (
            f"{path} scrolls sideways by {overflow} px at 1280 px: "
            f"{browser.execute_script(WIDE_ELEMENTS)}"
        )

    # From the top of the instance page, Tab first reaches the skip link, then every
    # control in order: the event forms' toggles and the operator actions among them.
    browser.get(live_console.url(f"/ui/instances/{instance_id}"))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    first = browser.switch_to.active_element
    assert "skip" in (first.get_attribute("class") or "")
    assert first.is_displayed()
    reached: set[str] = set()
    for _ in range(300):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        element = browser.switch_to.active_element
        form = browser.execute_script("return arguments[0].closest('form, details')", element)
        if form is not None:
            reached.add(form.get_attribute("id") or form.get_attribute("data-event") or "")
        if {"cancel-form", "move-form"} <= reached:
            break
    assert {"cancel-form", "move-form"} <= reached, reached
    summaries = browser.find_elements(By.CSS_SELECTOR, "details > summary")
    assert summaries
    summaries[0].send_keys(Keys.ENTER)  # a keyboard user opens an event's form
    assert browser.execute_script("return arguments[0].parentElement.open", summaries[0])
    assert_clean_console(browser)
