"""``gc_paused``: the cyclic collector off inside the block, back as it was after it."""

from __future__ import annotations

import gc

import pytest

from geoscreen.vision.runtime import gc_paused


def test_gc_is_off_inside_and_back_on_after_even_on_error() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        assert not gc.isenabled()
        raise ValueError("inside")
    assert gc.isenabled()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_as_a_decorator_it_pauses_every_call() -> None:
    @gc_paused()
    def collector_on() -> bool:
        return gc.isenabled()

    assert collector_on() is False and collector_on() is False  # the same decorator, twice
    assert gc.isenabled()
