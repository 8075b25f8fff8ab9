"""Screenshots of the console's main pages for the README (``make screenshots``).

Starts `conveyor dev` on a fresh schema of the local stack, makes a few orders along the
lifecycle and a dead letter, signs in with an admin key in headless Chromium and saves
``docs/console-*.png`` at 1280 px. Needs the stack (``make stack-up``) and Debian's
``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import text

from engine.auth import create_api_key
from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import upgrade

DOCS = Path(__file__).resolve().parent
CONVEYOR = (sys.executable, "-m", "engine.cli")
BAD_PAYMENT = '{"payment_id": "p-10", "provider": ""}'  # an empty provider: a dead letter


def order(key: str, total: str = "40") -> dict[str, object]:
    return {
        "order_id": key,
        "customer_id": "C-7",
        "currency": "EUR",
        "items": [{"sku": "mug", "quantity": 2, "unit_price": str(int(total) / 2)}],
        "total": total,
    }


async def prepare(settings: Settings) -> str:
    await upgrade(settings)
    db = create_engine(settings, pool_size=1)
    try:
        return (await create_api_key(db, "screenshots", ["admin"])).secret
    finally:
        await db.dispose()


async def drop(settings: Settings) -> None:
    db = create_engine(settings.model_copy(update={"database_schema": None}), pool_size=1)
    try:
        async with db.begin() as conn:
            await conn.execute(text(f'drop schema if exists "{settings.database_schema}" cascade'))
    finally:
        await db.dispose()


def seed(base: str, key: str, env: dict[str, str]) -> str:
    """Twelve orders along the lifecycle, one shipped; a payment event with an empty
    provider sent over Kafka (a dead letter). Returns the shipped order's id."""
    headers = {"Authorization": f"Bearer {key}"}
    steps: list[tuple[str, dict[str, str]]] = [
        ("payment.initiated", {"payment_id": "p-1", "provider": "card"}),
        ("payment.captured", {"payment_id": "p-1", "amount": "40", "currency": "EUR"}),
        ("order.packed", {}),
        ("order.shipped", {"carrier": "DHL", "tracking_number": "JD0140"}),
    ]
    with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
        shipped = ""
        for n in range(1, 13):
            business_key = f"A-10{n:02d}"
            created = api.post(
                "/v1/workflows/order/instances",
                json={"business_key": business_key, "data": order(business_key)},
            ).json()
            for kind, payload in steps[: n % 5]:
                sent = api.post(
                    f"/v1/instances/{created['id']}/events",
                    json={"type": kind, "payload": payload},
                )
                sent.raise_for_status()
            if n % 5 == 4:
                shipped = shipped or str(created["id"])
        subprocess.run(
            [*CONVEYOR, "emit", "payment.initiated", "--key", "A-1010", "--data", BAD_PAYMENT],
            env=env,
            check=True,
        )
        deadline = time.monotonic() + 30
        while not api.get("/v1/dead-letters").json()["items"]:
            if time.monotonic() > deadline:
                raise SystemExit("the worker recorded no dead letter within 30 s")
            time.sleep(0.2)
        return shipped


def main() -> None:
    settings = Settings().model_copy(
        update={
            "database_schema": f"screens_{uuid.uuid4().hex[:8]}",
            "topic_prefix": f"screens{uuid.uuid4().hex[:6]}",
        }
    )
    key = asyncio.run(prepare(settings))
    port = 18765
    env = dict(
        os.environ,
        CONVEYOR_DATABASE_SCHEMA=settings.database_schema or "",
        CONVEYOR_TOPIC_PREFIX=settings.topic_prefix,
        CONVEYOR_HTTP_PORT=str(port),
    )
    proc = subprocess.Popen([*CONVEYOR, "dev"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        instance = seed(base, key, env)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        options.add_argument("--window-size=1280,900")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        wait = WebDriverWait(driver, 20)
        try:
            driver.get(f"{base}/ui/login")
            driver.find_element(By.NAME, "api_key").send_keys(key)
            driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            wait.until(expected_conditions.url_contains("/ui/overview"))
            pages = {
                "overview": "/ui/overview",
                "instances": "/ui/instances?workflow=order",
                "instance": f"/ui/instances/{instance}",
                "dead-letters": "/ui/dead-letters",
                "workflow": "/ui/workflows/order",
            }
            for name, path in pages.items():
                driver.get(base + path)
                wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "h1")))
                for svg in driver.find_elements(By.CSS_SELECTOR, "pre.mermaid"):
                    WebDriverWait(driver, 20).until(
                        lambda _d, s=svg: s.get_attribute("data-rendered")
                    )
                # The instance's current state, not the top of a tall diagram.
                driver.execute_script(
                    "const node = document.querySelector('#diagram svg g.current');"
                    "if (node) node.scrollIntoView({block: 'center'});"
                )
                driver.save_screenshot(str(DOCS / f"console-{name}.png"))
                print(f"docs/console-{name}.png")
        finally:
            driver.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        asyncio.run(drop(settings))


if __name__ == "__main__":
    main()
