"""The console's instance page in a real browser: the state diagram drawn as SVG with the
current state highlighted, and an event sent through the form generated from its schema
(the browser refusing invalid input first)."""

from __future__ import annotations

import uuid

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.conftest import LiveConsole, assert_clean_console, sign_in
from tests.e2e.http_support import order_data

TIMEOUT = 20.0


def start_paying_order(console: LiveConsole) -> str:
    """An order in ``payment_pending`` (started, then payment.initiated); its id."""
    business_key = f"B-{uuid.uuid4().hex[:8]}"
    with httpx.Client(
        base_url=console.base,
        headers={"Authorization": f"Bearer {console.write_key}"},
        timeout=10,
    ) as api:
        started = api.post(
            "/v1/workflows/order/instances",
            json={"business_key": business_key, "data": order_data(business_key)},
        )
        assert started.status_code == 201, started.text
        instance_id: str = started.json()["id"]
        sent = api.post(
            f"/v1/instances/{instance_id}/events",
            json={"type": "payment.initiated", "payload": {"payment_id": "p-1", "provider": "x"}},
        )
        assert sent.status_code == 200, sent.text
    return instance_id


def diagram_node(browser: WebDriver, css_class: str) -> WebElement:
    """The diagram's one node styled with ``css_class`` (mermaid puts the class on it)."""
    nodes = browser.find_elements(By.CSS_SELECTOR, f"#diagram svg g.{css_class}")
    assert len(nodes) == 1, [n.get_attribute("id") for n in nodes]
    return nodes[0]


def test_the_diagram_highlights_the_current_state_and_an_event_sent_by_form_applies(
    browser: WebDriver, live_console: LiveConsole
) -> None:
    instance_id = start_paying_order(live_console)
    sign_in(browser, live_console, live_console.admin_key)
    browser.get(live_console.url(f"/ui/instances/{instance_id}"))
    wait = WebDriverWait(browser, TIMEOUT)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#diagram svg")))
    current = diagram_node(browser, "current")
    assert "payment_pending" in (current.get_attribute("id") or "")
    visited = browser.find_elements(By.CSS_SELECTOR, "#diagram svg g.visited")
    assert ["placed" in (v.get_attribute("id") or "") for v in visited] == [True]
    assert browser.find_element(By.ID, "state").text == "payment_pending"

    # payment.captured: its generated form; the browser refuses a lower-case currency.
    form = browser.find_element(By.CSS_SELECTOR, 'form[data-event="payment.captured"]')
    form.find_element(By.XPATH, "./ancestor::details/summary").click()
    form.find_element(By.NAME, "p.payment_id").send_keys("p-1")
    form.find_element(By.NAME, "p.amount").send_keys("10")
    currency = form.find_element(By.NAME, "p.currency")
    currency.send_keys("eur")
    assert browser.execute_script("return arguments[0].checkValidity()", form) is False
    currency.clear()
    currency.send_keys("EUR")
    assert browser.execute_script("return arguments[0].checkValidity()", form) is True
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.alert_is_present()).accept()  # the form's confirmation

    done = wait.until(ec.presence_of_element_located((By.ID, "done")))
    assert "The event was applied." in done.text
    assert browser.find_element(By.ID, "state").text == "paid"
    history = browser.find_element(By.ID, "history").text
    assert "payment.captured" in history
    assert "payment_pending → paid" in history
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#diagram svg")))
    assert "paid" in (diagram_node(browser, "current").get_attribute("id") or "")
    assert_clean_console(browser)
