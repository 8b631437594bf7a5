"""Shared fixtures: a private Mosquitto broker per test module; the shared data folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil.broker import Broker


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with Broker() as b:
        yield b


# Real recordings and coding files live beside the checkout, never in it (licences, size).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """``../shared/<parts>`` beside the checkout. Missing: the test is skipped on a
    developer's machine, but fails in CI (``CI=true``), where the data must be present."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        msg = f"shared data {p} not found (expected ../shared beside the checkout)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def shared() -> Callable[..., Path]:
    """:func:`shared_path` as a fixture: ``shared("data", "mmme", "coding_file.xlsx")``."""
    return shared_path
