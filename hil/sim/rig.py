"""The simulated bench: every device's simulator, wired together, behind the real seams.

``SimBench`` builds what a Pi rig has on its pins and ports, but simulated: ADS1299
emulators (SPI buses, DRDY line, RESET/START pins), the sensor hub's MCU on a real
pseudo-terminal, a camera looking at a rendered face, and the trigger harness (the
host's sync output, the stimulus PC's marker code and strobe). All of them follow one
scenario with known ground truth, each on its own drifting crystal. ``edge.rig`` asks
the bench for seams and puts the same drivers on them as on hardware.

With a ``[replay]`` section (``hil.sim.playback``) the same simulators play recorded
streams instead: the hub MCU serves the recording's samples, the EEG chips convert the
recording's microvolts, the camera hands out the recorded frames, the marker lines carry
the recorded markers, all on one time line that starts at ``t0_ns``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from edge.runtime.report import named_thread_cpu_s, process_cpu_s
from hil.sim.ads1299 import (
    SHORTED_NOISE_UV,
    Ads1299Emulator,
    EegSourceFactory,
    shared_reset_line,
    shared_start_line,
)
from hil.sim.camera import SimCamera
from hil.sim.camera_process import CameraProcess
from hil.sim.cpu import SIM_CPU
from hil.sim.crystal import Crystal
from hil.sim.cyton import CytonEmulator
from hil.sim.eeg_bridge import EegBridgeEmulator
from hil.sim.hub import HubEmulator
from hil.sim.marker_source import schedule_markers
from hil.sim.playback import REPLAY_START_S, PlaybackCamera, ReplayPlan, plan_replay
from hil.sim.scenario import Scenario, generate
from hil.sim.spi_process import SpiDeviceProcess
from hil.sim.wire import (
    EPOCH,
    MARKER,
    MARKER_STROBE,
    SYNC,
    SimEdgeInput,
    SimInputBus,
    SimOutputLine,
    Wire,
)
from sensors.ads1299 import Ads1299, Ads1299Settings
from sensors.blocks import Marker, monotonic_ns
from sensors.camera import buffers_for
from sensors.eeg_bridge import EegBridge, LinkSettings

LEAD_IN_S = 0.5  # scenario t = 0 this long after the bench is built (drivers open first)
# Device clocks at scenario t = 0: each device booted a while before (a real MCU's uptime,
# a sensor's timestamp counter), so a driver that starts early never sees negative time.
HUB_UPTIME_S = 7.0
CAMERA_UPTIME_S = 3.0
BRIDGE_UPTIME_S = 11.0
BRIDGE_MCU_PPM = -35.0  # the bridge MCU's crystal; the chips have eeg_drift_ppm
BRIDGE_HISTORY_S = 10.0  # emulator sample history (the bridge reads within its 1-s FIFO)


def load_scenario(sim: dict[str, Any], duration_s: float) -> Scenario:
    """The config's scenario file, or one generated from its seed for this duration."""
    if sim.get("scenario"):
        return Scenario.load(sim["scenario"])
    length = duration_s if duration_s > 0 else 600.0
    return generate(length, n_events=int(sim["n_events"]), seed=int(sim["seed"]))


def replay_scenario(sim: dict[str, Any], plan: ReplayPlan, duration_s: float) -> Scenario:
    """The scenario beside a replay: the recorded markers; scripted expressions only when
    the camera is still simulated (a replayed face makes its own)."""
    length = max(duration_s, plan.span_s, 1.0)
    base = (load_scenario(sim, length) if plan.camera is None
            else Scenario(duration_s=length, seed=int(sim["seed"])))
    if plan.markers is not None:
        base = dataclasses.replace(base, markers=plan.markers)
    return base


@dataclass(frozen=True)
class EegSim:
    """Everything the EEG acquisition process needs to build its emulated chips."""

    scenario: Scenario
    t0_ns: int
    ppm: float
    seed: int
    wire: dict[str, tuple[str, int, int, str]]  # shared-memory handles of the wire
    chip_id: int = 0x3E
    source: EegSourceFactory | None = None  # None: simulated EEG; else e.g. a playback
    input_noise_uv: float = SHORTED_NOISE_UV


def build_sim_bridge_bus(sim: EegSim, settings: Ads1299Settings, wire: Wire | None = None
                         ) -> EegBridgeEmulator:
    """The EEG bridge's MCU in front of emulated chips (one crystal), as an SpiBus."""
    wire = wire if wire is not None else Wire.attach(sim.wire)
    crystal = Crystal(ppm=sim.ppm, origin_host_ns=sim.t0_ns)
    names = tuple(settings.channels)
    chips = [
        Ads1299Emulator(crystal, wire, sim.scenario, seed=sim.seed, chip_index=i,
                        t0_ns=sim.t0_ns, channels=names[8 * i: 8 * i + 8],
                        chip_id=sim.chip_id, history_s=BRIDGE_HISTORY_S,
                        source=sim.source, input_noise_uv=sim.input_noise_uv)
        for i in range(settings.n_chips)
    ]
    mcu = Crystal(ppm=BRIDGE_MCU_PPM, origin_host_ns=sim.t0_ns, origin_device_s=BRIDGE_UPTIME_S)
    return EegBridgeEmulator(chips, mcu, seed=sim.seed)


def build_sim_bridge(sim: EegSim, settings: Ads1299Settings, link: LinkSettings) -> EegBridge:
    """The bridge driver on an emulated bridge; runs inside an acquisition process."""
    return EegBridge(build_sim_bridge_bus(sim, settings), settings, link)


def build_sim_eeg(sim: EegSim, settings: Ads1299Settings) -> Ads1299:
    """The real ADS1299 driver on emulated chips; runs inside the acquisition process."""
    wire = Wire.attach(sim.wire)
    crystal = Crystal(ppm=sim.ppm, origin_host_ns=sim.t0_ns)
    names = tuple(settings.channels)
    chips = [
        Ads1299Emulator(crystal, wire, sim.scenario, seed=sim.seed, chip_index=i,
                        t0_ns=sim.t0_ns, channels=names[8 * i: 8 * i + 8], chip_id=sim.chip_id,
                        source=sim.source, input_noise_uv=sim.input_noise_uv)
        for i in range(settings.n_chips)
    ]
    start = shared_start_line(*chips) if settings.n_chips > 1 else None
    return Ads1299(chips, chips[0].drdy_line(), settings, reset=shared_reset_line(*chips),
                   start_pin=start)


def build_sim_camera(scenario: Scenario, wire: dict[str, tuple[str, int, int, str]],
                     **kw: Any) -> SimCamera:
    """The simulated camera on the shared wire; runs inside its own process."""
    return SimCamera(scenario, wire=Wire.attach(wire), **kw)


@dataclass
class SimBench:
    """Simulators for one rig config; build with :meth:`from_config`."""

    scenario: Scenario
    t0_ns: int
    wire: Wire
    eeg: EegSim | None = None
    eeg_bridge: EegBridgeEmulator | None = None  # built by eeg_bridge_bus (fault hooks)
    bridge_mcu_process: bool = False  # sim.bridge_mcu_process: the MCU in its own process
    bridge_process: SpiDeviceProcess | None = None
    cyton: CytonEmulator | None = None  # eeg.backend "sim-cyton": the board on a pty
    hub: HubEmulator | None = None
    camera: SimCamera | PlaybackCamera | CameraProcess | None = None
    expected_markers: list[Marker] = field(default_factory=list)
    replay: ReplayPlan | None = None
    truth_path: Path | None = None  # where write_ground_truth put it (rewritten at start)

    @classmethod
    def from_config(cls, cfg: Any, duration_s: float = 0.0,
                    scenario: Scenario | None = None) -> SimBench:
        sim = cfg.sim
        plan = plan_replay(cfg)
        if plan is not None:  # t0 is set again by start(), when the rig starts
            scenario = scenario or replay_scenario(sim, plan, duration_s)
        else:
            scenario = scenario or load_scenario(sim, duration_s)
        t0 = monotonic_ns() + int(LEAD_IN_S * 1e9)
        wire = Wire(shared=True)  # the EEG emulators sample it from their own process
        bench = cls(scenario=scenario, t0_ns=t0, wire=wire, replay=plan,
                    bridge_mcu_process=bool(sim["bridge_mcu_process"]))
        seed = int(sim["seed"])
        play = plan or ReplayPlan()
        if cfg.eeg["enabled"] and cfg.eeg["backend"] == "sim-cyton":
            crystal = Crystal(ppm=float(sim["eeg_drift_ppm"]), origin_host_ns=t0)
            names = tuple(cfg.eeg["channels"])
            bench.cyton = CytonEmulator(crystal, wire, scenario, seed=seed,
                                        daisy=len(names) == 16, channels=names, t0_ns=t0,
                                        source=play.eeg)
        elif cfg.eeg["enabled"]:
            bench.eeg = EegSim(scenario, t0, float(sim["eeg_drift_ppm"]), seed, wire.handles(),
                               chip_id=int(sim["eeg_chip_id"]), source=play.eeg,
                               input_noise_uv=SHORTED_NOISE_UV if play.eeg is None else 0.0)
        if cfg.hub["enabled"]:
            crystal = Crystal(ppm=float(sim["hub_drift_ppm"]), origin_host_ns=t0,
                              origin_device_s=HUB_UPTIME_S)
            bench.hub = HubEmulator(scenario, crystal, wire, seed=seed,
                                    fs_hz=int(cfg.hub["fs_hz"]), t0_ns=t0, signal=play.hub)
        if cfg.camera["enabled"]:
            fps, width, height = (float(cfg.camera["fps"]), int(cfg.camera["width"]),
                                  int(cfg.camera["height"]))
            buffers = buffers_for(fps, float(cfg.camera["buffer_s"]))
            if play.camera is not None:
                bench.camera = PlaybackCamera(play.camera, width=width, height=height, fps=fps,
                                              t0_ns=t0, wire=wire, buffer_frames=buffers)
            else:
                crystal = Crystal(ppm=float(sim["camera_drift_ppm"]), origin_host_ns=t0,
                                  origin_device_s=CAMERA_UPTIME_S)
                kw = dict(fps=fps, width=width, height=height, seed=seed, crystal=crystal,
                          t0_ns=t0, buffer_frames=buffers)
                if sim["camera_process"]:
                    bench.camera = CameraProcess(
                        functools.partial(build_sim_camera, scenario, wire.handles(), **kw),
                        t0_ns=t0)
                else:
                    bench.camera = SimCamera(scenario, wire=wire, **kw)
        if plan is None:  # a replay's markers go on the wire when its time line is set
            bench.expected_markers = schedule_markers(wire, scenario.markers, t0)
        return bench

    def start(self) -> None:
        """The rig is about to start its devices. A replay's time line begins now (plus
        REPLAY_START_S), however long the rig took to open: nothing of it is lost. The
        simulated devices beside it follow the same t0, so the scenario stays one."""
        if self.replay is None:
            return
        t0 = monotonic_ns() + int(REPLAY_START_S * 1e9)
        self.t0_ns = t0
        self.wire[EPOCH].drive(monotonic_ns(), t0)  # the EEG process reads it at START
        for dev in (self.hub, self.camera, self.cyton):
            if dev is not None:
                dev.t0_ns = t0
        self.expected_markers = schedule_markers(self.wire, self.scenario.markers, t0)
        if self.truth_path is not None:  # written before the start: now with the real t0
            self.write_ground_truth(self.truth_path)

    # -- the seams, as edge.rig asks for them ----------------------------------------
    def eeg_factory(self, settings: Ads1299Settings) -> Callable[[], Ads1299]:
        """A picklable recipe for the EEG driver on emulated chips."""
        if self.eeg is None:
            raise RuntimeError("the bench has no EEG")
        return functools.partial(build_sim_eeg, self.eeg, settings)

    def eeg_bridge_bus(self, settings: Ads1299Settings) -> EegBridgeEmulator | SpiDeviceProcess:
        """The EEG bridge's MCU in front of emulated chips, as the bridge's SpiBus.

        It runs in this process (the driver drains it from a pump thread; its fault hooks
        are ``eeg_bridge``), or with ``sim.bridge_mcu_process`` in a process of its own.
        The chips share one crystal, the MCU has its own."""
        if self.eeg is None:
            raise RuntimeError("the bench has no EEG")
        if self.bridge_mcu_process:
            self.bridge_process = SpiDeviceProcess(
                functools.partial(build_sim_bridge_bus, self.eeg, settings), name="sim-bridge")
            return self.bridge_process
        self.eeg_bridge = build_sim_bridge_bus(self.eeg, settings, self.wire)
        return self.eeg_bridge

    def eeg_bridge_factory(self, settings: Ads1299Settings, link: LinkSettings
                           ) -> Callable[[], EegBridge]:
        """A picklable recipe for the bridge driver on an emulated bridge (for an
        acquisition process; the fault hooks then live in that process)."""
        if self.eeg is None:
            raise RuntimeError("the bench has no EEG")
        return functools.partial(build_sim_bridge, self.eeg, settings, link)
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
        """The scenario's truth, anchored on the host clock: scenario t = 0 is ``t0_ns``
        (a replay sets it when the rig starts, and the file is written again then)."""
        self.truth_path = Path(path)
        doc = self.scenario.ground_truth()
        doc["t0_ns"] = self.t0_ns
        if self.replay is not None:
            doc["replay"] = self.replay.summary()
            if self.replay.truth is not None:  # the recording's coded intervals, to score
                doc["expressions"] = self.replay.truth
        doc["marker_edges"] = [{"code": m.code, "t_ns": m.t_ns} for m in self.expected_markers]
        Path(path).write_text(json.dumps(doc, indent=1))

    def notes(self) -> dict[str, Any]:
        """What the run summary should say about the bench: what it replayed, and what it
        could not (what was due before the devices started: none unless one was slow)."""
        if self.replay is None:
            return {}
        doc = self.replay.summary()
        late: dict[str, Any] = {}
        if self.replay.hub is not None and self.hub is not None and self.hub.start_row is not None:
            skipped = max(self.hub.start_row - self.replay.hub.row0, 0)
            late["hub_s"] = round(skipped / self.hub.fs_hz, 3)
        if isinstance(self.camera, PlaybackCamera):
            late["camera_frames"] = self.camera.not_played
        doc["not_played_at_start"] = late
        return {"replay": doc}

    def cpu_s(self) -> float:
        """CPU seconds the simulators have spent so far: their own threads (``sim-*``),
        what they charged in the rig's threads, and the processes of their own (the
        bridge MCU's, the camera's)."""
        per_thread = named_thread_cpu_s(psutil.Process())
        total = SIM_CPU.seconds + sum(v for k, v in per_thread.items() if k.startswith("sim-"))
        for dev in (self.bridge_process, self.camera):
            pid = dev.pid if isinstance(dev, (SpiDeviceProcess, CameraProcess)) else None
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    total += process_cpu_s(psutil.Process(pid))
        return total

    def close(self) -> None:
        if self.cyton is not None:
            self.cyton.close()
        if self.hub is not None:
            self.hub.close()
        if self.camera is not None and hasattr(self.camera, "close"):
            self.camera.close()
        self.wire.close()
