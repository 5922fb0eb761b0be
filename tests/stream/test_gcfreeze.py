"""The consumer's GC regime (stream.gcfreeze): the start-up heap frozen once, without garbage."""

from __future__ import annotations

import gc

import pytest

from stream import gcfreeze


def test_the_startup_heap_is_frozen_once_and_without_garbage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dead cycles are collected before the freeze (a frozen one would live forever), full
    collections become rarer, and a second consumer in the process does neither again."""
    monkeypatch.setattr(gcfreeze, "_frozen", False)
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(f"threshold {t}"))
    young, middle, _ = gc.get_threshold()
    gcfreeze.freeze_startup_heap()
    gcfreeze.freeze_startup_heap()
    full = gcfreeze.FULL_GC_EVERY
    assert calls == ["collect", "freeze", f"threshold {(young, middle, full)}"]
