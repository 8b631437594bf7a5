"""A broken stage cannot take the others down (issue 13, part 5).

The simulated rig runs for 10 s through the session ``mmme-edge run`` builds, publishing to
a real Mosquitto, with a probe sink that raises on every item it is given. The recording
must hold every sample and frame the dispatcher drained (read back from the file), the
rig must keep publishing, and ``health`` must carry the probe's failures and last error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edge.mqtt import messages
from edge.recording.format import open_recording
from edge.runtime import RESET_AFTER
from hil.broker import Broker
from hil.faults import run_with_faults, sim_config
from hil.subscriber import Collector

RUN_S = 10.0


class Broken:
    """Raises on every block, frame and marker; counts the resets the runtime asks for."""

    name = "broken_probe"

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    def _fail(self, _item: Any) -> None:
        self.calls += 1
        raise RuntimeError(f"probe failure {self.calls}")

    on_block = on_frame = on_marker = _fail

    def reset(self) -> None:
        self.resets += 1


class Witness:
    """Notes every sample index and frame seq the dispatcher handed out (after Broken)."""

    def __init__(self) -> None:
        self.index: dict[str, list[np.ndarray]] = {}
        self.frames: list[int] = []

    def on_block(self, block: Any) -> None:
        self.index.setdefault(block.stream, []).append(np.array(block.index, copy=True))

    def on_frame(self, frame: Any) -> None:
        self.frames.append(frame.seq)

    def on_marker(self, _marker: Any) -> None:
        pass


def test_a_sink_that_always_raises_loses_nothing_and_stops_nothing(
        broker: Broker, tmp_path: Path) -> None:
    base = sim_config(record=True, camera_store="jpeg")
    cfg = dataclasses.replace(base, mqtt={
        **base.mqtt, "enabled": True, "host": "127.0.0.1", "port": broker.port,
        "outbox": str(tmp_path / "outbox.sqlite")})
    broken, witness = Broken(), Witness()
    collector = Collector(broker.port, client_id="sink-isolation").start()
    try:
        run = run_with_faults(RUN_S, cfg=cfg, record_dir=tmp_path, sinks=[broken, witness])
        healths = collector.wait_for("health", 2, timeout_s=10.0)
        vitals = collector.of("vitals")
    finally:
        collector.stop()

    # The probe failed on every item it saw, was reset, and the rig went on.
    assert broken.calls > 1000
    failures = run.extra["sinks"]["broken_probe"]
    assert failures["failures"] == broken.calls
    assert failures["resets"] == broken.resets == broken.calls // RESET_AFTER
    assert failures["last_error"] == f"RuntimeError: probe failure {broken.calls}"
    assert run.summary["sinks"]["broken_probe"]["failures"] > 0
    assert run.errors == []

    # Every sample and frame drained reached the recording.
    assert len(run.extra["recordings"]) == 1
    rec = open_recording(run.extra["recordings"][0], frames=False)
    assert rec.complete
    for stream in ("eeg", "hub"):
        drained = np.concatenate(witness.index[stream])
        assert drained.size == run.extra["tallies"][stream]["received"] > 0
        np.testing.assert_array_equal(rec.streams[stream].index, drained)
    assert len(witness.frames) == run.extra["tallies"]["camera"]["received"] > 0
    np.testing.assert_array_equal(rec.frame_seq, witness.frames)
    assert run.recorder is not None and run.recorder["dropped_queue"] == 0

    # Still publishing, and health says which sink fails and why.
    assert len(vitals) >= RUN_S - 3, len(vitals)
    failing = [h for h in healths if "broken_probe" in h.get("sinks", {})]
    assert failing, healths
    last = failing[-1]["sinks"]["broken_probe"]
    assert last["failures"] > 0
    assert last["last_error"].startswith("RuntimeError: probe failure")
    assert messages.validate("health", failing[-1]) == []


class MarkerWitness(Witness):
    def __init__(self) -> None:
        super().__init__()
        self.markers: list[int] = []

    def on_marker(self, marker: Any) -> None:
        self.markers.append(marker.code)


def test_a_software_marker_passes_a_broken_sink_and_the_command_succeeds() -> None:
    from edge.processing import LocalOutlet
    from edge.rig import open_rig
    from edge.runtime import build_session

    cfg = sim_config(camera=False)
    rig = open_rig(cfg, duration_s=5.0)
    broken, witness = Broken(), MarkerWitness()
    try:
        session = build_session(cfg, rig, record=False, outlet=LocalOutlet(),
                                processing=False, probes=[broken, witness])
        ack = session.controls.handle_now("insert_marker", {"code": 7})
        assert ack["code"] == 7
        assert witness.markers == [7]
        assert [m.code for m in session.tally.markers] == [7]
        assert session.runtime.sink_report()["broken_probe"]["failures"] == 1
    finally:
        rig.close()


def test_the_session_hands_the_configured_ppg_polarity_to_the_features() -> None:
    from edge.processing import LocalOutlet
    from edge.rig import open_rig
    from edge.runtime import build_session

    cfg = sim_config(eeg=False, camera=False)
    cfg = dataclasses.replace(cfg, features={**cfg.features, "ppg_inverted": True})
    rig = open_rig(cfg, duration_s=5)
    session = build_session(cfg, rig, record=False, outlet=LocalOutlet())
    try:
        assert session.processing is not None
        assert session.processing.features.cfg.ppg_inverted is True
    finally:
        session.close()
