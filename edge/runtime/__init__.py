"""The rig at run time, by job.

- :mod:`edge.runtime.engine`: the pumps (one thread per device), the dispatcher that
  feeds every sink (guarded: a failing sink is counted, never stops the others), the tally.
- :mod:`edge.runtime.session`: the one builder of a session's chain of sinks (keeper,
  processing, controls, recording) and ``run()``.
- :mod:`edge.runtime.report`: status lines, the ``health`` body, the run summary.
"""

from edge.runtime.engine import (
    RESET_AFTER,
    SWITCH_INTERVAL_S,
    ResettableSink,
    Runtime,
    Sink,
    SinkFailures,
    StreamTally,
    Tally,
    freeze_startup_objects,
    limit_native_pools,
)
from edge.runtime.report import health_body, summarise
from edge.runtime.session import Session, build_session, run

__all__ = ["RESET_AFTER", "SWITCH_INTERVAL_S", "ResettableSink", "Runtime", "Session", "Sink",
           "SinkFailures", "StreamTally", "Tally", "build_session", "freeze_startup_objects",
           "health_body", "limit_native_pools", "run", "summarise"]
