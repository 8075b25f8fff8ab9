"""Reading a Prometheus ``/metrics`` page in tests (prometheus_client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    """Every sample of the page; raises if the page is not valid exposition text."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def matching(page: list[Sample], name: str, **labels: str) -> list[Sample]:
    """The samples called ``name`` whose labels include ``labels``."""
    return [
        s for s in page if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(page: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` with these labels (0 when there are none)."""
    return sum(s.value for s in matching(page, name, **labels))


def one(page: list[Sample], name: str, **labels: str) -> float:
    """The value of the one sample called ``name`` with these labels (fails if absent)."""
    found = matching(page, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0].value


__all__ = ["matching", "one", "samples", "value"]
