"""Form fields generated from payload JSON Schemas, and payloads read back from forms."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, Field

from api.console.schema_form import FormField, form_fields, payload_from_form
from engine.declarations import EmptyPayload
from workflows.order import PaymentCaptured


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Everything(BaseModel):
    name: str = Field(min_length=2, max_length=20, pattern=r"^[a-z]+$")
    loose: str = Field("", pattern=r"[0-9]")  # unanchored: not a full-match HTML pattern
    count: int = Field(1, ge=0, lt=10)
    ratio: float | None = None
    price: Decimal = Field(ge=0)
    urgent: bool = False
    colour: Colour = Colour.RED
    size: int | None = Field(None, json_schema_extra={"enum": [1, 2]})
    tags: list[str] = []


def by_name(model: type[BaseModel]) -> dict[str, FormField]:
    return {f.name: f for f in form_fields(model.model_json_schema())}


def test_constraints_become_html_attributes() -> None:
    fields = by_name(Everything)
    name = fields["name"]
    assert (name.kind, name.required) == ("text", True)
    assert name.attrs == {
        "pattern": "[a-z]+",
        "minlength": "2",
        "maxlength": "20",
        "title": "must match ^[a-z]+$",
    }
    assert "pattern" not in fields["loose"].attrs
    count = fields["count"]
    assert (count.kind, count.required, count.default) == ("number", False, "1")
    assert count.attrs == {"step": "1", "min": "0", "max": "9"}
    assert fields["ratio"].attrs == {"step": "any"}
    price = fields["price"]
    assert (price.kind, price.decimal, price.required) == ("text", True, True)
    assert price.attrs["pattern"] == r"[0-9]+(\.[0-9]+)?"
    assert fields["urgent"].kind == "checkbox"
    colour = fields["colour"]
    assert (colour.kind, colour.options, colour.default) == ("select", ("red", "blue"), "red")
    size = fields["size"]
    assert (size.kind, size.options, size.required) == ("select", ("1", "2"), False)
    assert fields["tags"].kind == "json"


def test_a_schema_without_properties_is_one_json_box() -> None:
    (only,) = form_fields(EmptyPayload.model_json_schema())
    assert (only.kind, only.name, only.input_name, only.required) == ("json", "", "p.", False)
    assert payload_from_form([only], {"p.": '{"a": 1}'}) == ({"a": 1}, [])
    assert payload_from_form([only], {"p.": ""}) == ({}, [])
    _, errors = payload_from_form([only], {"p.": "[1]"})
    assert [e.message for e in errors] == ["must be a JSON object"]


def test_payload_read_back_converts_by_the_schema() -> None:
    fields = form_fields(Everything.model_json_schema())
    payload, errors = payload_from_form(
        fields,
        {
            "p.name": "abc",
            "p.loose": "",
            "p.count": "3",
            "p.ratio": "0.5",
            "p.price": "12.50",
            "p.urgent": "true",
            "p.colour": "blue",
            "p.size": "2",
            "p.tags": '["x", "y"]',
        },
    )
    assert errors == []
    assert payload == {
        "name": "abc",
        "count": 3,
        "ratio": 0.5,
        "price": "12.50",
        "urgent": True,
        "colour": "blue",
        "size": 2,
        "tags": ["x", "y"],
    }
    assert Everything.model_validate(payload).price == Decimal("12.50")


def test_what_does_not_convert_is_sent_as_typed_for_the_schema_to_refuse() -> None:
    fields = form_fields(Everything.model_json_schema())
    payload, errors = payload_from_form(fields, {"p.count": "many", "p.tags": "[oops"})
    assert payload == {"count": "many", "urgent": False}
    assert [e.path for e in errors] == ["tags"]
    assert errors[0].message.startswith("not valid JSON")


def test_the_order_payment_form() -> None:
    fields = {f.name: f for f in form_fields(PaymentCaptured.model_json_schema())}
    assert list(fields) == ["payment_id", "amount", "currency"]
    assert all(f.required for f in fields.values())
    assert fields["currency"].attrs["pattern"] == "[A-Z]{3}"
    assert fields["amount"].decimal
