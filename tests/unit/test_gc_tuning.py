"""The worker and the API raise the collector's thresholds once, and only once."""

from __future__ import annotations

import gc

import pytest

from engine import gc_tuning


def test_tune_gc_raises_the_thresholds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    monkeypatch.setattr(gc_tuning, "_tuned", False)
    try:
        gc_tuning.tune_gc()
        assert gc.get_threshold() == (
            gc_tuning.YOUNG_THRESHOLD,
            *gc_tuning.OLDER_THRESHOLDS,
        )
        gc.set_threshold(*before)
        gc_tuning.tune_gc()  # a second call changes nothing
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
