"""Shared fixtures: a private Mosquitto broker per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hil.broker import Broker


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with Broker() as b:
        yield b
