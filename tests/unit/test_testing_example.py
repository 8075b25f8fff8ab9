"""The README's test-kit example runs (its tests are collected here), so the docs cannot rot."""

from __future__ import annotations

from pathlib import Path

from docs.testing_example import (
    test_an_order_left_unpacked_is_escalated,
    test_cancelling_a_paid_order_asks_for_a_refund,
)

__all__ = [
    "test_an_order_left_unpacked_is_escalated",
    "test_cancelling_a_paid_order_asks_for_a_refund",
]


def test_readme_shows_the_test_kit_example_word_for_word() -> None:
    root = Path(__file__).resolve().parents[2]
    example = (root / "docs" / "testing_example.py").read_text()
    readme = (root / "README.md").read_text()
    assert f"```python\n{example}```" in readme
