"""Every page of the console on one blueprint (importing a page module adds its routes)."""

from __future__ import annotations

from api.console import bulk as _bulk  # noqa: F401  (its routes)
from api.console import dead_letters as _dead_letters  # noqa: F401  (its routes)
from api.console import instance as _instance  # noqa: F401  (its routes)
from api.console import instances as _instances  # noqa: F401  (its routes)
from api.console import workflows as _workflows  # noqa: F401  (its routes)
from api.console.views import bp

__all__ = ["bp"]
