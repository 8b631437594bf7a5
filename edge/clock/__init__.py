"""One clock for every stream.

- ``model``: device time -> host ns, fitted online from sync-pulse pairs (``ClockModel``).
- ``keeper``: the runtime's side of it: pulses in, models, clock states to the recording
  (``ClockKeeper``).
- ``align``: every stream's blocks on host time, in bounded rings (``Aligner``).
"""
