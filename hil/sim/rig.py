"""The simulated bench: every device's simulator, wired together, behind the real seams.

``SimBench`` builds what a Pi rig has on its pins and ports, but simulated: ADS1299
emulators (SPI buses, DRDY line, RESET/START pins), the sensor hub's MCU on a real
pseudo-terminal, a camera looking at a rendered face, and the trigger harness (the
host's sync output, the stimulus PC's marker code and strobe). All of them follow one
scenario with known ground truth, each on its own drifting crystal. ``edge.rig`` asks
the bench for seams and puts the same drivers on them as on hardware.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.sim.ads1299 import Ads1299Emulator, shared_reset_line, shared_start_line
from hil.sim.camera import SimCamera
from hil.sim.crystal import Crystal
from hil.sim.cyton import CytonEmulator
from hil.sim.hub import HubEmulator
from hil.sim.marker_source import schedule_markers
from hil.sim.scenario import Scenario, generate
from hil.sim.wire import MARKER, MARKER_STROBE, SYNC, SimEdgeInput, SimInputBus, SimOutputLine, Wire
from sensors.ads1299 import Ads1299, Ads1299Settings
from sensors.blocks import Marker, monotonic_ns
from sensors.camera import buffers_for

LEAD_IN_S = 0.5  # scenario t = 0 this long after the bench is built (drivers open first)
# Device clocks at scenario t = 0: each device booted a while before (a real MCU's uptime,
# a sensor's timestamp counter), so a driver that starts early never sees negative time.
HUB_UPTIME_S = 7.0
CAMERA_UPTIME_S = 3.0


def load_scenario(sim: dict[str, Any], duration_s: float) -> Scenario:
    """The config's scenario file, or one generated from its seed for this duration."""
    if sim.get("scenario"):
        return Scenario.load(sim["scenario"])
    length = duration_s if duration_s > 0 else 600.0
    return generate(length, n_events=int(sim["n_events"]), seed=int(sim["seed"]))


@dataclass(frozen=True)
class EegSim:
    """Everything the EEG acquisition process needs to build its emulated chips."""

    scenario: Scenario
    t0_ns: int
    ppm: float
    seed: int
    wire: dict[str, tuple[str, int, int, str]]  # shared-memory handles of the wire
    chip_id: int = 0x3E


def build_sim_eeg(sim: EegSim, settings: Ads1299Settings) -> Ads1299:
    """The real ADS1299 driver on emulated chips; runs inside the acquisition process."""
    wire = Wire.attach(sim.wire)
    crystal = Crystal(ppm=sim.ppm, origin_host_ns=sim.t0_ns)
    names = tuple(settings.channels)
    chips = [
        Ads1299Emulator(crystal, wire, sim.scenario, seed=sim.seed, chip_index=i,
                        t0_ns=sim.t0_ns, channels=names[8 * i: 8 * i + 8], chip_id=sim.chip_id)
        for i in range(settings.n_chips)
    ]
    start = shared_start_line(*chips) if settings.n_chips > 1 else None
    return Ads1299(chips, chips[0].drdy_line(), settings, reset=shared_reset_line(*chips),
                   start_pin=start)


@dataclass
class SimBench:
    """Simulators for one rig config; build with :meth:`from_config`."""

    scenario: Scenario
    t0_ns: int
    wire: Wire
    eeg: EegSim | None = None
    cyton: CytonEmulator | None = None  # eeg.backend "sim-cyton": the board on a pty
    hub: HubEmulator | None = None
    camera: SimCamera | None = None
    expected_markers: list[Marker] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: Any, duration_s: float = 0.0,
                    scenario: Scenario | None = None) -> SimBench:
        sim = cfg.sim
        scenario = scenario or load_scenario(sim, duration_s)
        t0 = monotonic_ns() + int(LEAD_IN_S * 1e9)
        wire = Wire(shared=True)  # the EEG emulators sample it from their own process
        bench = cls(scenario=scenario, t0_ns=t0, wire=wire)
        seed = int(sim["seed"])
        if cfg.eeg["enabled"] and cfg.eeg["backend"] == "sim-cyton":
            crystal = Crystal(ppm=float(sim["eeg_drift_ppm"]), origin_host_ns=t0)
            names = tuple(cfg.eeg["channels"])
            bench.cyton = CytonEmulator(crystal, wire, scenario, seed=seed,
                                        daisy=len(names) == 16, channels=names, t0_ns=t0)
        elif cfg.eeg["enabled"]:
            bench.eeg = EegSim(scenario, t0, float(sim["eeg_drift_ppm"]), seed, wire.handles(),
                               chip_id=int(sim["eeg_chip_id"]))
        if cfg.hub["enabled"]:
            crystal = Crystal(ppm=float(sim["hub_drift_ppm"]), origin_host_ns=t0,
                              origin_device_s=HUB_UPTIME_S)
            bench.hub = HubEmulator(scenario, crystal, wire, seed=seed,
                                    fs_hz=int(cfg.hub["fs_hz"]), t0_ns=t0)
        if cfg.camera["enabled"]:
            crystal = Crystal(ppm=float(sim["camera_drift_ppm"]), origin_host_ns=t0,
                              origin_device_s=CAMERA_UPTIME_S)
            bench.camera = SimCamera(scenario, fps=float(cfg.camera["fps"]),
                                     width=int(cfg.camera["width"]),
                                     height=int(cfg.camera["height"]),
                                     seed=seed, crystal=crystal, wire=wire, t0_ns=t0,
                                     buffer_frames=buffers_for(float(cfg.camera["fps"]),
                                                               float(cfg.camera["buffer_s"])))
        bench.expected_markers = schedule_markers(wire, scenario.markers, t0)
        return bench

    # -- the seams, as edge.rig asks for them ----------------------------------------
    def eeg_factory(self, settings: Ads1299Settings) -> Callable[[], Ads1299]:
        """A picklable recipe for the EEG driver on emulated chips."""
        if self.eeg is None:
            raise RuntimeError("the bench has no EEG")
        return functools.partial(build_sim_eeg, self.eeg, settings)

    def cyton_port(self) -> str:
        if self.cyton is None:
            raise RuntimeError("the bench has no Cyton")
        return self.cyton.port

    def hub_port(self) -> str:
        if self.hub is None:
            raise RuntimeError("the bench has no hub")
        return self.hub.port

    def sync_out(self) -> SimOutputLine:
        return SimOutputLine(self.wire[SYNC])

    def marker_strobe(self) -> SimEdgeInput:
        return SimEdgeInput(self.wire[MARKER_STROBE])

    def marker_bus(self) -> SimInputBus:
        return SimInputBus(self.wire[MARKER])

    def write_ground_truth(self, path: str | Path) -> None:
        """The scenario's truth, anchored on the host clock: scenario t = 0 is ``t0_ns``."""
        doc = self.scenario.ground_truth()
        doc["t0_ns"] = self.t0_ns
        doc["marker_edges"] = [{"code": m.code, "t_ns": m.t_ns} for m in self.expected_markers]
        Path(path).write_text(json.dumps(doc, indent=1))

    def close(self) -> None:
        if self.cyton is not None:
            self.cyton.close()
        if self.hub is not None:
            self.hub.close()
        self.wire.close()
