"""The console's page of one instance over real HTTP: what it shows (state, diagram text,
history, timers, messages), sending an event through the form generated from its schema,
the operator's cancel, retry and move, and who may do what (scopes, CSRF)."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from engine.settings import Settings
from tests import flows
from tests.e2e.console_support import csrf_of, sign_in
from tests.e2e.http_support import (
    Keys,
    make_keys,
    order_data,
    serve_in_process,
    serve_process,
)


def text_of(response: httpx.Response) -> str:
    """The page's HTML with entities decoded (the diagram's arrows are escaped)."""
    return html.unescape(response.text)


async def api_call(base: str, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        return await api.request(method, path, **kwargs)


async def start_order(base: str, keys: Keys, business_key: str) -> str:
    started = await api_call(
        base,
        keys.write,
        "POST",
        "/v1/workflows/order/instances",
        json={"business_key": business_key, "data": order_data(business_key)},
    )
    assert started.status_code == 201, started.text
    instance_id: str = started.json()["id"]
    return instance_id


async def send(base: str, keys: Keys, instance_id: str, kind: str, payload: Any) -> None:
    sent = await api_call(
        base,
        keys.write,
        "POST",
        f"/v1/instances/{instance_id}/events",
        json={"type": kind, "payload": payload},
    )
    assert sent.status_code == 200, sent.text


async def state_of(base: str, keys: Keys, instance_id: str) -> dict[str, Any]:
    got = await api_call(base, keys.read, "GET", f"/v1/instances/{instance_id}")
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


@pytest.fixture
def api_process(settings: Settings) -> Iterator[str]:
    """A `conveyor api` process serving the test's schema; its base URL."""
    with serve_process(settings) as (base, _proc):
        yield base


@pytest.fixture
async def with_flows(settings: Settings) -> AsyncIterator[str]:
    """The API in this process (so a test can make the counter's action fail), serving
    the order workflow and the test workflows."""
    loaded = settings.model_copy(update={"workflow_modules": ["workflows", "tests.flows"]})
    async with serve_in_process(loaded) as url:
        yield url


async def test_page_shows_state_diagram_history_timers_and_messages_and_sends_events(
    api_process: str, settings: Settings
) -> None:
    base = api_process
    keys = await make_keys(settings)
    instance_id = await start_order(base, keys, "P-1")
    await send(
        base, keys, instance_id, "payment.initiated", {"payment_id": "pay-1", "provider": "x"}
    )
    await send(
        base,
        keys,
        instance_id,
        "payment.captured",
        {"payment_id": "pay-1", "amount": "10", "currency": "EUR"},
    )
    async with sign_in(base, keys.write) as console:
        shown = await console.get(f"/ui/instances/{instance_id}")
        assert shown.status_code == 200, shown.text
        page = text_of(shown)
        assert '<td id="state">paid</td>' in page
        assert "order v1" in page
        assert '"order_id": "P-1"' in page  # the data, pretty
        # The diagram: the current state highlighted, the path it took in another style.
        assert re.search(r'<pre class="mermaid" id="diagram"[^>]*>stateDiagram-v2', page)
        assert "    class placed,payment_pending visited" in page
        assert "    class paid current" in page
        assert "placed --> payment_pending : payment.initiated" in page
        assert '<script src="/ui/static/vendor/mermaid.min.js" defer>' in page
        # History, oldest first: start, then the two events, each with its outcome.
        rows = re.findall(r'<tr class="outcome-(\w+)" data-history-id="\d+">', page)
        assert rows == ["started", "applied", "applied"]
        assert page.index("payment.initiated") < page.index("payment.captured")
        assert "placed → payment_pending" in page
        # The packing timer of `paid`, and the message its hook published (not yet relayed).
        assert "<code>packing_overdue</code>" in page
        assert "<code>order.paid</code>" in page
        assert "waiting" in page
        # A write key may send events (one form per event the state accepts), not operate.
        assert 'data-event="order.packed"' in page
        assert 'data-event="order.cancellation_requested"' in page
        assert 'data-event="payment.initiated"' not in page
        assert 'id="cancel-form"' not in page
        assert 'id="move-form"' not in page

        # order.packed has no payload schema: a JSON box. Sent through the form: applied.
        csrf = csrf_of(shown.text)
        packed = await console.post(
            f"/ui/instances/{instance_id}/events",
            data={"csrf": csrf, "type": "order.packed", "p.": '{"station": "7"}'},
        )
        assert packed.status_code == 303, packed.text
        assert packed.headers["location"] == f"/ui/instances/{instance_id}?done=applied"
        after = text_of(await console.get(packed.headers["location"]))
        assert "The event was applied. Now in state <strong>packed</strong>" in after
        assert '<td id="state">packed</td>' in after
        assert re.findall(r'<tr class="outcome-(\w+)"', after) == [
            "started",
            "applied",
            "applied",
            "applied",
        ]
        assert "<td>operator</td>" in after  # the event's source
        assert "    class packed current" in after

        # The shipped form carries the schema's constraints for the browser to check.
        shipped_form = after[after.index('data-event="order.shipped"') :]
        shipped_form = shipped_form[: shipped_form.index("</form>")]
        assert 'name="p.carrier" type="text"' in shipped_form
        assert re.search(r'name="p.carrier"[^>]* required[^>]* minlength="1"', shipped_form)
        # The server checks again: an empty carrier is refused naming the field, and what
        # was typed stays in the form.
        refused = await console.post(
            f"/ui/instances/{instance_id}/events",
            data={
                "csrf": csrf,
                "type": "order.shipped",
                "p.carrier": "",
                "p.tracking_number": "TRK-42",
            },
        )
        assert refused.status_code == 422, refused.text
        body = text_of(refused)
        assert "<code>carrier</code>: Field required" in body
        assert 'value="TRK-42"' in body
        assert (await state_of(base, keys, instance_id))["state"] == "packed"
        # An event the state does not accept: 409, said on the page.
        not_now = await console.post(
            f"/ui/instances/{instance_id}/events",
            data={"csrf": csrf, "type": "payment.failed", "p.reason": "x"},
        )
        assert not_now.status_code == 409
        assert "Refused:" in not_now.text
        assert "payment.failed" in not_now.text

        # Shipped through the form: the history shows it, with the request id.
        shipped = await console.post(
            f"/ui/instances/{instance_id}/events",
            data={
                "csrf": csrf,
                "type": "order.shipped",
                "p.carrier": "DHL",
                "p.tracking_number": "TRK-42",
            },
        )
        assert shipped.status_code == 303
        final = text_of(await console.get(shipped.headers["location"]))
        assert '<td id="state">shipped</td>' in final
        assert "packed → shipped" in final
        assert '"tracking_number": "TRK-42"' in final

        # An unknown or malformed id is a 404 page; an unknown query parameter a 400.
        assert (await console.get(f"/ui/instances/{uuid.uuid4()}")).status_code == 404
        assert (await console.get("/ui/instances/not-a-uuid")).status_code == 404
        bad = await console.get(f"/ui/instances/{instance_id}", params={"colour": "red"})
        assert bad.status_code == 400
        assert "colour" in bad.text
        forged_done = await console.get(
            f"/ui/instances/{instance_id}", params={"done": "you have been hacked"}
        )
        assert forged_done.status_code == 400


async def test_payment_form_fields_follow_the_schema(base: str, keys: Keys) -> None:
    instance_id = await start_order(base, keys, "F-1")
    await send(
        base, keys, instance_id, "payment.initiated", {"payment_id": "pay-1", "provider": "x"}
    )
    async with sign_in(base, keys.admin) as console:
        page = (await console.get(f"/ui/instances/{instance_id}")).text
        form = page[page.index('data-event="payment.captured"') :]
        form = form[: form.index("</form>")]
        # A decimal amount (given as a string) and a currency pattern, both required.
        assert re.search(r'name="p.amount" type="text"[^>]* required[^>]* pattern="', form)
        assert 'inputmode="decimal"' in form
        assert re.search(r'name="p.currency"[^>]* required[^>]* pattern="\[A-Z\]\{3\}"', form)
        csrf = csrf_of(page)
        # A decimal amount that does not match the total goes to review (the guard).
        captured = await console.post(
            f"/ui/instances/{instance_id}/events",
            data={
                "csrf": csrf,
                "type": "payment.captured",
                "p.payment_id": "pay-1",
                "p.amount": "9.50",
                "p.currency": "EUR",
            },
        )
        assert captured.status_code == 303, captured.text
        assert (await state_of(base, keys, instance_id))["state"] == "payment_review"
        # The review form's optional note has its default; the reviewer is required.
        review = (await console.get(f"/ui/instances/{instance_id}")).text
        form = review[review.index('data-event="payment.review_approved"') :]
        assert re.search(r'name="p.reviewer"[^>]* required', form[: form.index("</form>")])
        invalid = await console.post(
            f"/ui/instances/{instance_id}/events",
            data={"csrf": csrf, "type": "payment.review_approved", "p.note": "looks fine"},
        )
        assert invalid.status_code == 422
        assert "<code>reviewer</code>" in invalid.text
        assert 'value="looks fine"' in invalid.text


async def test_operator_cancel_retry_and_move(with_flows: str, settings: Settings) -> None:
    base = with_flows
    keys = await make_keys(settings)
    started = await api_call(
        base,
        keys.write,
        "POST",
        "/v1/workflows/test.counter/instances",
        json={"business_key": "R-1", "data": {"key": "R-1"}, "version": 1},
    )
    assert started.status_code == 201, started.text
    instance_id = started.json()["id"]
    url = f"/ui/instances/{instance_id}"
    async with sign_in(base, keys.admin) as console:
        page = text_of(await console.get(url))
        csrf = csrf_of(page)
        # The tick's integer field is a number input with its default.
        assert re.search(r'name="p.by" type="number" value="1"[^>]* step="1"', page)
        assert 'id="retry-form"' not in page  # nothing to retry while active
        assert "<code>idle</code>" in page  # the idle timer

        # The label's action fails on every attempt: the instance fails.
        flows.FAILURES["R-1"] = 3
        failed = await console.post(
            f"{url}/events", data={"csrf": csrf, "type": "counter.label", "p.label": "blue"}
        )
        assert failed.status_code == 303
        assert failed.headers["location"].endswith("?done=failed")
        page = text_of(await console.get(failed.headers["location"]))
        assert '<span class="status status-failed" id="status">failed</span>' in page
        assert '<pre id="error">' in page
        assert "label service exploded" in page
        assert 'id="retry-form"' in page

        # Retry: the label applies now.
        retried = await console.post(f"{url}/retry", data={"csrf": csrf})
        assert retried.status_code == 303, retried.text
        assert retried.headers["location"].endswith("?done=retry_applied")
        instance = await state_of(base, keys, instance_id)
        assert (instance["state"], instance["status"]) == ("labelled", "active")
        page = text_of(await console.get(retried.headers["location"]))
        assert "Retried: the step that failed was applied." in page
        assert "outcome-retried" in page

        # Retrying an active instance is refused on the page (409), nothing changes.
        again = await console.post(f"{url}/retry", data={"csrf": csrf})
        assert again.status_code == 409
        assert "only failed or retrying instances can be retried" in again.text

        # Move back to `open`, with a reason.
        page = text_of(await console.get(url))
        assert "<option>open</option>" in page
        assert "<option>labelled</option>" not in page
        moved = await console.post(
            f"{url}/move", data={"csrf": csrf, "state": "open", "reason": "label was wrong"}
        )
        assert moved.status_code == 303, moved.text
        assert (await state_of(base, keys, instance_id))["state"] == "open"
        page = text_of(await console.get(moved.headers["location"]))
        assert "outcome-moved" in page
        assert "label was wrong" in page
        assert "labelled → open" in page
        # Moving to a state the version does not declare: refused (422) on the page.
        ghost = await console.post(f"{url}/move", data={"csrf": csrf, "state": "ghost"})
        assert ghost.status_code == 422, ghost.text
        assert "ghost" in ghost.text

        # Cancel, status only: the counter has no cancel route anyway.
        cancelled = await console.post(
            f"{url}/cancel", data={"csrf": csrf, "reason": "test over", "status_only": "true"}
        )
        assert cancelled.status_code == 303, cancelled.text
        assert cancelled.headers["location"].endswith("?done=cancelled_status")
        page = text_of(await console.get(cancelled.headers["location"]))
        assert '<span class="status status-cancelled" id="status">cancelled</span>' in page
        assert "outcome-cancelled" in page
        assert "test over" in page
        # An ended instance offers no actions.
        for form in ('id="cancel-form"', 'id="move-form"', 'id="retry-form"', "data-event="):
            assert form not in page
        already = await console.post(f"{url}/cancel", data={"csrf": csrf})
        assert already.headers["location"].endswith("?done=cancel_already")


async def test_cancel_runs_the_workflows_cancel_route(base: str, keys: Keys) -> None:
    instance_id = await start_order(base, keys, "C-1")
    async with sign_in(base, keys.admin) as console:
        page = (await console.get(f"/ui/instances/{instance_id}")).text
        assert 'data-confirm="Cancel C-1? This cannot be undone."' in page
        cancelled = await console.post(
            f"/ui/instances/{instance_id}/cancel",
            data={"csrf": csrf_of(page), "reason": "customer called"},
        )
        assert cancelled.status_code == 303, cancelled.text
        assert cancelled.headers["location"].endswith("?done=cancelled")
        instance = await state_of(base, keys, instance_id)
        assert (instance["state"], instance["status"]) == ("cancelled", "cancelled")
        assert instance["data"]["cancellation_reason"] == "customer called"
        page = text_of(await console.get(cancelled.headers["location"]))
        assert "<code>order.cancelled</code>" in page  # the route's hook published it


async def test_a_read_only_key_sees_no_actions_and_forged_posts_are_refused(
    base: str, keys: Keys
) -> None:
    instance_id = await start_order(base, keys, "RO-1")
    url = f"/ui/instances/{instance_id}"
    async with sign_in(base, keys.read) as reader:
        page = (await reader.get(url)).text
        assert '<td id="state">placed</td>' in page
        for form in ("data-event=", 'id="cancel-form"', 'id="move-form"', 'id="retry-form"'):
            assert form not in page
        csrf = csrf_of(page)  # the sign-out form's: a valid token for this session
        for action, data in (
            ("events", {"type": "payment.initiated", "p.payment_id": "p", "p.provider": "x"}),
            ("cancel", {}),
            ("move", {"state": "paid"}),
            ("retry", {}),
        ):
            forged = await reader.post(f"{url}/{action}", data={"csrf": csrf, **data})
            assert forged.status_code == 403, (action, forged.text)
            assert "needs the" in forged.text
    async with sign_in(base, keys.write) as writer:
        page = (await writer.get(url)).text
        assert "data-event=" in page
        assert 'id="cancel-form"' not in page
        forged = await writer.post(f"{url}/cancel", data={"csrf": csrf_of(page)})
        assert forged.status_code == 403
    instance = await state_of(base, keys, instance_id)
    assert (instance["state"], instance["revision"]) == ("placed", 1)


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(base: str, keys: Keys) -> None:
    instance_id = await start_order(base, keys, "X-1")
    url = f"/ui/instances/{instance_id}"
    async with sign_in(base, keys.admin) as admin:
        page = (await admin.get(url)).text
        for data in ({}, {"csrf": "forged"}):
            for action, fields in (
                ("cancel", {}),
                ("events", {"type": "order.cancellation_requested", "p.reason": "x"}),
            ):
                refused = await admin.post(f"{url}/{action}", data={**data, **fields})
                assert refused.status_code == 403, refused.text
        # The right token from another origin is refused too.
        other = await admin.post(
            f"{url}/cancel", data={"csrf": csrf_of(page)}, headers={"Origin": "http://evil.test"}
        )
        assert other.status_code == 403
    instance = await state_of(base, keys, instance_id)
    assert (instance["state"], instance["status"]) == ("placed", "active")


async def test_an_orphaned_instance_shows_a_note_instead_of_the_diagram(
    with_flows: str, settings: Settings
) -> None:
    keys = await make_keys(settings)
    started = await api_call(
        with_flows,
        keys.write,
        "POST",
        "/v1/workflows/test.counter/instances",
        json={"business_key": "O-1", "data": {"key": "O-1"}, "version": 1},
    )
    assert started.status_code == 201, started.text
    # Served by an API that no longer loads the test workflows (allowed to start).
    without = settings.model_copy(update={"workflow_modules": ["workflows"], "allow_orphans": True})
    async with serve_in_process(without) as base, sign_in(base, keys.admin) as console:
        page = (await console.get(f"/ui/instances/{started.json()['id']}")).text
    assert 'id="diagram"' not in page
    assert "workflow &#39;test.counter&#39; is not deployed" in page
    assert "data-event=" not in page
    assert 'id="move-form"' not in page


async def test_a_long_history_is_paged_oldest_first(with_flows: str, settings: Settings) -> None:
    keys = await make_keys(settings)
    started = await api_call(
        with_flows,
        keys.write,
        "POST",
        "/v1/workflows/test.counter/instances",
        json={"business_key": "H-1", "data": {"key": "H-1"}, "version": 1},
    )
    assert started.status_code == 201, started.text
    instance_id = started.json()["id"]
    for _ in range(55):
        await send(with_flows, keys, instance_id, "counter.tick", {"by": 1})
    async with sign_in(with_flows, keys.read) as console:
        first = (await console.get(f"/ui/instances/{instance_id}")).text
        revisions = [int(r) for r in re.findall(r'<td class="num">(\d+)</td>', first)]
        assert revisions == list(range(1, 51))
        more = re.search(r'<a href="([^"]+)" rel="next" id="history-more">', first)
        assert more is not None
        second = (await console.get(html.unescape(more.group(1)))).text
        revisions = [int(r) for r in re.findall(r'<td class="num">(\d+)</td>', second)]
        assert revisions == list(range(51, 57))
        assert 'id="history-more"' not in second
        assert '"count": 55' in html.unescape(second)  # the data, on every page
