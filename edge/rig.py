"""The composition root: the one place that turns a config into devices.

Each device's ``backend`` key picks a real backend (spidev, gpiod / RPi.GPIO /
Jetson.GPIO, pyserial, picamera2 / OpenCV) or the simulated bench (``sim``); either
way the same drivers sit on the seams, and nothing downstream knows which it got.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.acquisition import ProcessDriver
from edge.config import CYTON_BACKENDS, RigConfig, eeg_link
from sensors.ads1299 import Ads1299, Ads1299Settings
from sensors.blocks import StreamInfo
from sensors.camera import buffers_for
from sensors.eeg_bridge import EegBridge, LinkSettings
from sensors.hub import Hub, HubSettings
from sensors.seams import FrameDriver, SampleDriver
from sensors.trigger import MarkerReader, SyncPulser

if TYPE_CHECKING:
    from hil.sim.rig import SimBench

EEG_RT_PRIORITY = 50  # SCHED_FIFO for the DRDY reader where allowed
PULSER_RT_PRIORITY = 60


def eeg_settings(cfg: RigConfig) -> Ads1299Settings:
    eeg = cfg.eeg
    return Ads1299Settings(
        fs_hz=int(eeg["fs_hz"]), gains=eeg["gain"], channels=tuple(eeg["channels"]),
        n_chips=len(eeg["channels"]) // 8, inputs=str(eeg["input"]), bias=bool(eeg["bias"]),
        srb1=bool(eeg["srb1"]), lead_off=bool(eeg["lead_off"]),
    )


def build_spidev_eeg(eeg: dict[str, Any], gpio: dict[str, Any],
                     settings: Ads1299Settings) -> Ads1299:
    """The ADS1299 on real SPI and a real DRDY line; runs inside the acquisition process."""
    from sensors.gpio import open_edge_input, open_output
    from sensors.spi import SpidevBus

    buses = [SpidevBus(int(eeg["spi_bus"]), int(d), int(eeg["spi_hz"]))
             for d in eeg["spi_devices"]]
    drdy = open_edge_input(gpio["backend"], gpio["chip"], int(eeg["drdy_line"]),
                           edge="falling", event_buffer_size=1024)
    reset = (open_output(gpio["backend"], gpio["chip"], int(eeg["reset_line"]), initial=1)
             if int(eeg["reset_line"]) >= 0 else None)
    return Ads1299(buses, drdy, settings, reset=reset)


def _eeg(cfg: RigConfig, bench: Any) -> SampleDriver:
    """The EEG driver for the config's front end, on real SPI or on the bench.

    Direct SPI must read every frame within one sample period, so it runs in its own
    process at real-time priority. Behind the bridge the deadline is the FIFO's second,
    so a plain pump thread in this process drains it (no SCHED_FIFO); with
    ``eeg.bridge_process`` it gets its own process like direct mode (normal priority).
    """
    settings = eeg_settings(cfg)
    simulated = cfg.eeg["backend"] == "sim"
    if eeg_link(cfg) == "bridge":
        link = LinkSettings(drain_s=int(cfg.eeg["drain_ms"]) / 1e3)
        if cfg.eeg["bridge_process"]:
            factory = (bench.eeg_bridge_factory(settings, link) if simulated else
                       functools.partial(build_spidev_bridge, cfg.eeg, settings, link))
            return ProcessDriver(factory, "eeg")
        bus = (bench.eeg_bridge_bus(settings) if simulated else
               _bridge_bus(cfg.eeg))
        return EegBridge(bus, settings, link)
    factory = (bench.eeg_factory(settings) if simulated else
               functools.partial(build_spidev_eeg, cfg.eeg, cfg.gpio, settings))
    return ProcessDriver(factory, "eeg", rt_priority=EEG_RT_PRIORITY)


def _bridge_bus(eeg: dict[str, Any]) -> Any:
    from sensors.spi import SpidevBus

    return SpidevBus(int(eeg["spi_bus"]), int(eeg["spi_devices"][0]), int(eeg["spi_hz"]))


def build_spidev_bridge(eeg: dict[str, Any], settings: Ads1299Settings,
                        link: LinkSettings) -> EegBridge:
    """The bridge driver on real SPI; runs inside an acquisition process."""
    return EegBridge(_bridge_bus(eeg), settings, link)


def open_cyton(cfg: RigConfig, bench: Any) -> Any:
    """The OpenBCI Cyton over serial (its emulator's pty for ``sim-cyton``). It runs in
    the rig's process on a pump thread, as the hub: the board buffers, no DRDY deadline."""
    from sensors.cyton import Cyton, CytonSettings

    eeg = cfg.eeg
    port = bench.cyton_port() if eeg["backend"] == "sim-cyton" else str(eeg["port"])
    driver = Cyton(CytonSettings(
        port=port, channels=tuple(eeg["channels"]), fs_hz=int(eeg["fs_hz"]),
        gain=int(eeg["gain"]), inputs=str(eeg["input"]), bias=bool(eeg["bias"]),
        srb1=bool(eeg["srb1"]), baud=int(eeg["baud"])))
    driver.open()
    return driver


@dataclass
class Rig:
    """The devices of one rig, opened, with one lifecycle."""

    eeg: SampleDriver | None = None  # the acquisition process's proxy (ProcessDriver)
    hub: Hub | None = None
    camera: FrameDriver | None = None
    markers: MarkerReader | None = None
    pulser: SyncPulser | None = None
    bench: SimBench | None = None  # the simulated bench, when any device is simulated
    closers: list[Any] = field(default_factory=list)  # GPIO lines, closed with the rig

    def notes(self) -> dict[str, Any]:
        """What the bench adds to the run summary (what it replayed); empty on hardware."""
        return self.bench.notes() if self.bench is not None else {}

    def simulator_cpu_s(self) -> float:
        """CPU seconds the bench's simulators have spent so far (0.0 on hardware): a run's
        summary subtracts them to give the rig's own share."""
        return self.bench.cpu_s() if self.bench is not None else 0.0

    def sample_drivers(self) -> dict[str, SampleDriver]:
        return {name: d for name, d in (("eeg", self.eeg), ("hub", self.hub)) if d is not None}

    def stream_names(self) -> list[str]:
        return [*self.sample_drivers(), *(["camera"] if self.camera is not None else [])]

    def stream_infos(self) -> list[StreamInfo]:
        return [d.info for d in self.sample_drivers().values() if d.info is not None]

    def dropped(self, name: str) -> int:
        dev: Any = {"eeg": self.eeg, "hub": self.hub, "camera": self.camera}.get(name)
        counters = getattr(dev, "counters", None)
        return int(counters.dropped) if counters is not None else 0

    def counter_detail(self, name: str) -> dict[str, int]:
        dev: Any = {"eeg": self.eeg, "hub": self.hub, "camera": self.camera}.get(name)
        c = getattr(dev, "counters", None)
        if c is None:
            return {}
        return {"dropped": c.dropped, "errors": c.errors, "resyncs": c.resyncs,
                **{k: v for k, v in c.extra.items() if v}}

    def start(self) -> None:
        if self.bench is not None:  # the bench sets its time line (a replay starts now)
            self.bench.start()
        if self.pulser is not None:
            self.pulser.start()
        for d in self.sample_drivers().values():
            d.start()
        if self.camera is not None:
            self.camera.start()

    def stop(self) -> None:
        for d in self.sample_drivers().values():
            with contextlib.suppress(Exception):
                d.stop()
        if self.camera is not None:
            with contextlib.suppress(Exception):
                self.camera.stop()
        if self.pulser is not None:
            self.pulser.stop()

    def close(self) -> None:
        for thing in (self.eeg, self.hub, self.camera, *self.closers, self.bench):
            if thing is not None and hasattr(thing, "close"):
                with contextlib.suppress(Exception):
                    thing.close()


def _camera(cfg: RigConfig, bench: Any) -> FrameDriver:
    cam = cfg.camera
    if cam["backend"] == "sim":
        return bench.camera
    buffers = buffers_for(float(cam["fps"]), float(cam["buffer_s"]))
    if cam["backend"] == "picamera2":
        from sensors.camera import Picamera2Source

        return Picamera2Source(int(cam["device"]), int(cam["width"]), int(cam["height"]),
                               float(cam["fps"]), int(cam["exposure_us"]),
                               buffer_count=buffers)
    from sensors.camera import OpenCVSource

    return OpenCVSource(cam["device"], int(cam["width"]), int(cam["height"]), float(cam["fps"]),
                        buffer_count=buffers)


def _gpio_lines(cfg: RigConfig, bench: Any) -> tuple[Any, Any, Any]:
    """(sync output, marker strobe input, marker data bus)."""
    gpio = cfg.gpio
    if gpio["backend"] == "sim":
        return bench.sync_out(), bench.marker_strobe(), bench.marker_bus()
    from sensors.gpio import open_edge_input, open_input_bus, open_output

    backend, chip = gpio["backend"], gpio["chip"]
    return (
        open_output(backend, chip, int(gpio["sync_out_line"])),
        open_edge_input(backend, chip, int(gpio["marker_strobe_line"]), edge="rising"),
        open_input_bus(backend, chip, [int(x) for x in gpio["marker_data_lines"]]),
    )


def open_rig(cfg: RigConfig, duration_s: float = 0.0, bench: SimBench | None = None) -> Rig:
    """Open every enabled device; raises a DeviceError naming the first that fails."""
    uses_sim = any(b == "sim" or b.startswith("sim-") for b in (
        cfg.gpio["backend"], cfg.eeg["backend"], cfg.hub["backend"], cfg.camera["backend"]))
    if uses_sim and bench is None:
        from hil.sim.rig import SimBench

        bench = SimBench.from_config(cfg, duration_s=duration_s)
    rig = Rig(bench=bench)
    try:
        sync_out, strobe, bus = _gpio_lines(cfg, bench)
        rig.closers += [sync_out, strobe, bus]
        rig.pulser = SyncPulser(sync_out, rt_priority=PULSER_RT_PRIORITY)
        rig.markers = MarkerReader(strobe, bus)
        if cfg.eeg["enabled"] and cfg.eeg["backend"] in CYTON_BACKENDS:
            rig.eeg = open_cyton(cfg, bench)
        elif cfg.eeg["enabled"]:
            rig.eeg = _eeg(cfg, bench)
            rig.eeg.open()
        if cfg.hub["enabled"]:
            port = bench.hub_port() if cfg.hub["backend"] == "sim" else cfg.hub["port"]
            rig.hub = Hub(HubSettings(port=port, baud=int(cfg.hub["baud"]),
                                      fs_hz=int(cfg.hub["fs_hz"])))
            rig.hub.open()
        if cfg.camera["enabled"]:
            rig.camera = _camera(cfg, bench)
    except BaseException:
        rig.close()
        raise
    return rig
