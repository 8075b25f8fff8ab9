"""Every page of the console on one blueprint (importing a page module adds its routes)."""

from __future__ import annotations

from api.console import instances as _instances  # noqa: F401  (its routes)
from api.console.views import bp

__all__ = ["bp"]
