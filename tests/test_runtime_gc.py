"""The runtime keeps the cyclic GC off what was built before the run."""

from __future__ import annotations

import gc

from edge.runtime import freeze_startup_objects


def test_objects_built_before_the_run_are_frozen_out_of_collections() -> None:
    built_at_startup = [{"ring": i} for i in range(1000)]
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= len(built_at_startup)
        # A full collection now walks only what was allocated after the freeze.
        assert sum(map(len, (gc.get_objects(g) for g in range(3)))) < gc.get_freeze_count()
    finally:
        gc.unfreeze()
