"""The rig's glibc malloc settings: applied before threads start, the user's env wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "from edge import malloc; print(malloc.tune())"


def _tune(env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_two_arenas_and_a_fixed_mmap_threshold_by_default() -> None:
    assert _tune({}) == "malloc: arenas 2, mmap threshold 1024 KiB"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_settings_from_the_environment_are_kept() -> None:
    assert _tune({"MALLOC_ARENA_MAX": "4"}) == "malloc: mmap threshold 1024 KiB"
    assert _tune({"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072"}) == (
        "malloc: environment settings kept")
